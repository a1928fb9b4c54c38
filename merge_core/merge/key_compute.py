"""One key's merged weight from tensors: the arithmetic shared by the live engine's weight adapter
(nodes/engine/merge_adapter.py, on the device when ComfyUI loads the model) and the file-to-file merge
(merge_core/file_merge). Sharing it is what makes a file merge's tensors equal a live save's bit for bit.

`weight` is A's weight as float32 (the narrow a patch with an offset applies to); `load(source, index)`
returns a source's tensor as float32 on `weight`'s device: index 0 is the key itself, other indices are the
other keys of a fused layout unit (`work.unit.keys`). Linear modes update `weight` in place with fused ops
(`lerp_`, `add_(alpha=)`); calc modes and task methods compute out of place and copy the result in.

A key whose merged elements each depend only on the sources' elements at the same position
(`computes_by_element`) can also be computed piece by piece (`piece_merger`), with the same bits as the whole
key: the file merge does that in pieces that stay in the CPU's cache.
"""
from __future__ import annotations

from typing import Callable

import torch

from .calc_layout import PLAIN, part_of, to_checkpoint
from .calc_modes import CalcArgs, calc_merge, get_calc_mode
from .key_work import CALC, LINEAR, TASK, KeyWork
from .task_vectors import task_merge

Load = Callable[[str, int], torch.Tensor]


def run_steps(weight: torch.Tensor, steps, sources: dict) -> torch.Tensor:
    """merge_core PatchSteps (``w = w * strength_model + strength * source``) as fused in-place ops."""
    for step in steps:
        src = sources[step.source]
        if step.strength_model == 1.0:
            weight.add_(src, alpha=step.strength)
        elif step.strength_model == 1.0 - step.strength:
            weight.lerp_(src, step.strength)
        else:
            weight.mul_(step.strength_model).add_(src, alpha=step.strength)
    return weight


def calc_weight(work: KeyWork, weight: torch.Tensor, load: Load, b_dtype: torch.dtype | None) -> torch.Tensor:
    """A calc-mode key's merged float32 tensor (a new tensor), in checkpoint layout where the unit needs it.
    `b_dtype`: B's storage dtype (smoothAdd rounds its filtered difference to it, as SuperMerger does)."""
    mode = get_calc_mode(work.calc)
    names = _calc_sources(mode)
    args = _calc_args(work, b_dtype) if "b" in names else work.calc_args
    unit = work.unit
    if unit is None or unit.kind == PLAIN:
        tensors = {n: load(n, 0) for n in names}
        return calc_merge(mode, weight, tensors.get("b"), tensors.get("c"), work.a, work.b, args)
    own = unit.keys.index(work.plan.key)
    parts_a = [weight if i == own else load("a", i) for i in range(len(unit.keys))]
    full = {n: to_checkpoint(unit, [load(n, i) for i in range(len(unit.keys))]) for n in names}
    merged = calc_merge(mode, to_checkpoint(unit, parts_a), full.get("b"), full.get("c"), work.a, work.b, args)
    return part_of(unit, work.plan.key, merged, [q.shape for q in parts_a])


def computes_by_element(work: KeyWork) -> bool:
    """Whether each merged element of the key depends only on the sources' elements at its position, once
    `b_equals_c_keeps_a` has been checked on the whole key: linear steps, and calc modes that declare an
    elementwise formula, on a plain key (a fused layout unit is rebuilt in checkpoint layout first)."""
    if work.kind == LINEAR:
        return True
    if work.kind == CALC:
        return get_calc_mode(work.calc).elementwise is not None and (work.unit is None or work.unit.kind == PLAIN)
    return False


def b_equals_c_keeps_a(work: KeyWork) -> bool:
    """Whether the key keeps A's weight where B equals C on the whole key (trainDifference): a piecewise merge
    must check that on every piece before it computes any."""
    return work.kind == CALC and get_calc_mode(work.calc).keeps_a_if_b_equals_c


def _calc_sources(mode) -> list:
    return (["b"] if mode.reads_b else []) + (["c"] if mode.needs_c else [])


def _calc_args(work: KeyWork, b_dtype: torch.dtype | None) -> CalcArgs:
    """The key's calc arguments with B's storage dtype (smoothAdd rounds its filtered difference to it)."""
    args = work.calc_args
    return CalcArgs(args.key, args.gamma, args.stat, b_dtype)


PieceMerge = Callable[[torch.Tensor, Load], torch.Tensor]


def piece_merger(work: KeyWork, b_dtype: torch.dtype | None = None) -> PieceMerge:
    """The merge of one piece of a key that `computes_by_element` (and whose `b_equals_c_keeps_a` check the
    caller has made), as merge(weight, load): `weight` is A's piece and `load(source, 0)` the sources' pieces
    at the same positions. What does not depend on the piece is worked out once; call it under
    torch.no_grad() (a file merge makes tens of thousands of pieces; per-piece setup and grad-mode switches
    were a fifth of its compute). It returns the merged piece: `weight` itself (updated in place) or, for a
    calc mode, a new tensor (`weight` then unchanged)."""
    if work.kind == CALC:
        mode = get_calc_mode(work.calc)
        names, args = _calc_sources(mode), _calc_args(work, b_dtype)

        def calc_piece(weight: torch.Tensor, load: Load) -> torch.Tensor:
            tensors = {n: load(n, 0) for n in names}
            return mode.elementwise(weight, tensors.get("b"), tensors.get("c"), work.a, work.b, args)
        return calc_piece
    if work.kind == LINEAR:
        steps = work.plan.steps
        names = sorted({s.source for s in steps})
        return lambda weight, load: run_steps(weight, steps, {n: load(n, 0) for n in names})
    return lambda weight, load: merged_weight(work, weight, load, b_dtype)


@torch.no_grad()
def merged_weight(work: KeyWork, weight: torch.Tensor, load: Load,
                  b_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Writes the key's merged weight into `weight` (float32, in place) and returns it."""
    if work.kind == TASK:
        task = work.task
        loaders = [lambda n=n: load(n, 0) for n in task.sources]
        return task_merge(task.method, weight, loaders, dict(task.values), task.seed, task.key, task.weights,
                          out=weight)
    if work.kind == CALC:
        return weight.copy_(calc_weight(work, weight, load, b_dtype))
    steps = work.plan.steps
    return run_steps(weight, steps, {n: load(n, 0) for n in sorted({s.source for s in steps})})

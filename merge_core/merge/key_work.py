"""What one key of a merge computes, as data: the one per-key decision shared by the live engine (ComfyUI
patches, nodes/engine/merge_patches.py) and the file-to-file merge (merge_core/file_merge).

A `KeyWork` says whether the key keeps A's weight (and why, when a source lacks it or has another shape), on
which narrow of A's weight it merges, which sources it reads, and how: the method's patch steps, a calc mode
(merge_core.calc_modes) or a task-vector method (merge_core.task_vectors). `key_compute.merged_weight` then
computes it from tensors. Both callers hand in the sources' shapes through `shape_of(source, key)`, so the
rules cannot differ between a live merge and a file merge.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..arch.keys import canonical_key
from .calc_layout import PLAIN, LayoutUnit
from .calc_modes import NORMAL, CalcArgs, CosineStat, calc_applies, check_ratios, get_calc_mode, keeps_a
from .params import GAMMA
from .plan import REASON_MISSING, REASON_SHAPE, KeyPlan, ShapeStep, effective_steps, plan_key
from .task_params import TaskArgs, TaskValues, key_args, keeps_a as task_keeps_a, values_problem

ShapeOf = Callable[[str, str], "tuple | None"]  # (source name, key) -> the source's shape, None: no such key

LINEAR, CALC, TASK = "linear", "calc", "task"


@dataclass(frozen=True)
class CalcSettings:
    """A merge's calc mode and what it needs besides the ratios: gamma (extract's calc_option), the cosine
    statistic (cosineA/B), the architecture (blocks, checkpoint names, layout). Frozen and comparable: an XY
    cell that changes any of it re-merges every key."""
    mode: str = NORMAL
    gamma: float = GAMMA.default
    stat: CosineStat | None = None
    arch: object = None

    @property
    def info(self):
        return get_calc_mode(self.mode)


NORMAL_CALC = CalcSettings()


@dataclass(frozen=True, eq=False)
class TaskSettings:
    """A task-vector merge's settings besides alpha: every key's parameters (`TaskValues`), the sources read
    in order ("b", "c", "d", "e": the connected ones), and the architecture (checkpoint names for the seeds)."""
    values: TaskValues
    sources: tuple
    arch: object


@dataclass(frozen=True)
class KeyWork:
    """One key's merge: `plan` (offset, or `kept` with the reason; `plan.steps` empty: A's weight, unchanged),
    `kind` (LINEAR, CALC or TASK), the sources read (`used`; a fused unit also reads "a", A's other parts),
    and the kind's arguments."""
    plan: KeyPlan
    kind: str = LINEAR
    used: tuple = ()
    calc: str = NORMAL
    a: float = 0.0
    b: float = 0.0
    calc_args: CalcArgs = CalcArgs()
    unit: LayoutUnit | None = None
    task: TaskArgs | None = None

    @property
    def changes(self) -> bool:
        """Whether the key gets a merged weight (False: A's, unchanged or kept)."""
        return self.plan.kept is None and bool(self.plan.steps)


def _shapes(shape_of: ShapeOf, key: str, names) -> dict:
    return {n: shape_of(n, key) for n in names}


def linear_work(key, shape_a, shape_of: ShapeOf, method, a, b) -> KeyWork:
    """A SuperMerger mode's key: its patch steps, no-ops removed."""
    plan = plan_key(key, shape_a, _shapes(shape_of, key, ("b", "c")), method.steps(a, b))
    used = tuple(sorted({s.source for s in plan.steps})) if plan.kept is None else ()
    return KeyWork(plan, LINEAR, used)


def _unit_problem(unit, shapes_a: dict, shape_of: ShapeOf, used) -> str | None:
    """Why a fused/transposed text-encoder unit cannot be computed (a part missing or shaped otherwise)."""
    for k in unit.keys:
        for n in used:
            shape = shape_of(n, k)
            if shape is None:
                return REASON_MISSING.format(src=f"model {n.upper()}") + f" ({k})"
            if tuple(shape) != tuple(shapes_a[k]):
                return REASON_SHAPE.format(a=tuple(shapes_a[k]), s=tuple(shape), src=f"model {n.upper()}")
    return None


def calc_work(key, shapes_a: dict, shape_of: ShapeOf, calc: CalcSettings, a, b, unit=None) -> KeyWork:
    """A calc-mode key; ratio bounds are checked here (ValueError naming the key's block), so ratios from
    block weights and specs are checked when the merge runs. `unit`: the key's checkpoint tensor when the mode
    is layout-dependent and the key is part of a fused q/k/v or a transposed projection."""
    info = calc.info
    canon, block = canonical_key(key, calc.arch), calc.arch.block_of(key)
    if not calc_applies(info, canon, block):
        return KeyWork(KeyPlan(key, None, ()), CALC)
    check_ratios(calc.mode, a, b, f"block {block} (key {key})")
    if keeps_a(info, canon, block, a, b):
        return KeyWork(KeyPlan(key, None, ()), CALC)
    used = tuple(n for n, on in (("b", info.reads_b), ("c", info.needs_c)) if on)
    args = CalcArgs(canon, calc.gamma, calc.stat)
    marker = ("calc",)  # a non-empty `steps`: the key is patched
    if unit is not None and unit.kind != PLAIN:
        why = _unit_problem(unit, shapes_a, shape_of, used + ("a",))
        if why:
            return KeyWork(KeyPlan(key, None, (), why), CALC)
        return KeyWork(KeyPlan(key, None, marker), CALC, used + ("a",), calc.mode, a, b, args, unit)
    if not used:  # self: A alone
        return KeyWork(KeyPlan(key, None, marker), CALC, (), calc.mode, a, b, args)
    plan = plan_key(key, shapes_a[key], _shapes(shape_of, key, used), tuple(ShapeStep(n) for n in used))
    if plan.kept is not None:
        return KeyWork(plan, CALC)
    return KeyWork(KeyPlan(key, plan.offset, marker), CALC, used, calc.mode, a, b, args)


def task_work(key, shape_a, shape_of: ShapeOf, method, task: TaskSettings, a) -> KeyWork:
    """A task-vector key: every source must hold the key in one shape (A's, or a leading slice of it: then A's
    extra channels are kept). A parameter out of range here (set by a block's weights or spec) stops the merge."""
    if task_keeps_a(method, a):
        return KeyWork(KeyPlan(key, None, ()), TASK)
    values = task.values.at(key)
    problem = values_problem(values, key, task.arch.block_of(key))
    if problem:
        raise ValueError(problem)
    plan = plan_key(key, shape_a, _shapes(shape_of, key, task.sources), tuple(ShapeStep(n) for n in task.sources))
    if plan.kept is not None:
        return KeyWork(plan, TASK)
    args = key_args(method, task.values, values, canonical_key(key, task.arch), a, task.sources)
    return KeyWork(KeyPlan(key, plan.offset, ("task",)), TASK, tuple(task.sources), task=args)


def key_work(key, shapes_a: dict, shape_of: ShapeOf, method, a, b, calc: CalcSettings = NORMAL_CALC,
             task: TaskSettings | None = None, unit: LayoutUnit | None = None) -> KeyWork:
    """The KeyWork of `key` under the merge's method, calc mode or task-vector settings."""
    if task is not None:
        return task_work(key, shapes_a[key], shape_of, method, task, a)
    if calc.mode == NORMAL:
        return linear_work(key, shapes_a[key], shape_of, method, a, b)
    return calc_work(key, shapes_a, shape_of, calc, a, b, unit)


def key_effect(method, calc: CalcSettings, key: str, a: float, b: float):
    """What decides a key's merged weight under these ratios, comparable between two settings of one merge
    (None: A's weight): the effective steps for normal, (a, b) for a calc mode that changes the key. The diff
    checker counts a target's changed keys with it, per calc mode."""
    if getattr(method, "task", False):  # the key's other parameters are the same in both settings compared
        return None if task_keeps_a(method, a) else ("task", a)
    if calc.mode == NORMAL:
        return effective_steps(method.steps(a, b)) or None
    info = calc.info
    canon, block = canonical_key(key, calc.arch), calc.arch.block_of(key)
    if not calc_applies(info, canon, block) or keeps_a(info, canon, block, a, b):
        return None
    return (a, b if info.uses_beta else None)

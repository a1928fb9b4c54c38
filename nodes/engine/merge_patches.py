"""The merge engine: an elemental merge written as per-key ModelPatcher patches on a clone of model A.

Why patches and not tensors: ComfyUI computes a patched weight on the device, key by key, only when a
sampler (or a save) loads the model, so a merge costs no extra RAM up front, the source models are never
written, and lowvram/offloading keep working. This is how ComfyUI's own merge nodes work; the difference here
is that every key gets its own ratios and that a merge mode may take several patch steps.

One fused patch per key: every merged key gets a single `merge_adapter.MergePatch`, a ComfyUI weight adapter
that `comfy.lora.calculate_weight` calls with A's weight. For the linear modes it runs merge_core's
`MergeMethod.steps(a, b)` (each `w = w * strength_model + strength * source`) as fused in-place ops; for a
calc mode (merge_core.calc_modes) it computes the key's calc-mode formula, in checkpoint layout where the
mode needs it. The sources are the other models' `get_key_patches()` entries, i.e. their own (possibly
patched) weights computed lazily: a merged model can be the input of a further merge.

Which keys change and how shapes are handled is decided per key in merge_core/merge/plan.py; a calc mode
follows its own rule (`merge_core.calc_modes.keeps_a`: keys outside every block or not a weight/bias keep A;
ratio 0 keeps A only where the mode says so). `plan_merge` returns the patches as data; `apply_to` adds them.
A key that keeps A gets no patch and is never recomputed by the XY re-merge.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...merge_core.merge.calc_layout import PLAIN, layout_units
from ...merge_core.merge.calc_modes import (NORMAL, CalcArgs, CosineStat, calc_applies, check_ratios,
                                     get_calc_mode, keeps_a)
from ...merge_core.arch.keys import canonical_key
from ...merge_core.merge.params import GAMMA
from ...merge_core.merge.task_params import TaskValues, key_args, keeps_a as task_keeps_a
from ...merge_core.merge.plan import (REASON_MISSING, REASON_SHAPE, KeyPlan, MergeNotes, ShapeStep, effective_steps,
                                       plan_key)
from .comfy_internals import Patch
from .load_contract import require_load_paths
from .merge_adapter import make_patch


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


def _task_plan(key, shape_a, sources, method, task: TaskSettings, a):
    """(KeyPlan, MergePatch or None) of a key under a task-vector method: every source must hold the key in
    one shape (A's, or a leading slice of it: then A's extra channels are kept)."""
    if task_keeps_a(method, a):
        return KeyPlan(key, None, ()), None
    problem = task.values.problem_at(key, task.arch.block_of(key))
    if problem:
        raise ValueError(problem)
    plan = plan_key(key, shape_a, _shapes_of(sources, key, task.sources), tuple(ShapeStep(n) for n in task.sources))
    if plan.kept is not None:
        return plan, None
    args = key_args(method, task.values, key, canonical_key(key, task.arch), a, task.sources)
    srcs = {n: (sources[n][key],) for n in task.sources}
    return KeyPlan(key, plan.offset, ("task",)), make_patch(key, sources=srcs, task=args)


def _shapes_of(sources: dict, key: str, names) -> dict:
    return {n: (tuple(sources[n][key][0][0].shape) if key in sources.get(n, {}) else None) for n in names}


def _linear_plan(key, shape_a, sources, method, a, b):
    """(KeyPlan, MergePatch or None) of a normal-mode key."""
    plan = plan_key(key, shape_a, _shapes_of(sources, key, ("b", "c")), method.steps(a, b))
    if plan.kept is not None or not plan.steps:
        return plan, None
    used = sorted({s.source for s in plan.steps})
    return plan, make_patch(key, plan.steps, sources={n: (sources[n][key],) for n in used})


def _unit_problem(unit, shapes_a: dict, sources: dict, used) -> str | None:
    """Why a fused/transposed text-encoder unit cannot be computed (a part missing or shaped otherwise)."""
    for k in unit.keys:
        for n in used:
            entry = sources[n].get(k)
            if entry is None:
                return REASON_MISSING.format(src=f"model {n.upper()}") + f" ({k})"
            if tuple(entry[0][0].shape) != tuple(shapes_a[k]):
                return REASON_SHAPE.format(a=tuple(shapes_a[k]), s=tuple(entry[0][0].shape), src=f"model {n.upper()}")
    return None


def _calc_plan(key, shapes_a, sources, calc: CalcSettings, a, b, unit):
    """(KeyPlan, MergePatch or None) of a calc-mode key; ratio bounds are checked here (ValueError naming
    the key's block), so ratios from block weights and specs are checked when the merge runs."""
    info = calc.info
    canon, block = canonical_key(key, calc.arch), calc.arch.block_of(key)
    if not calc_applies(info, canon, block):
        return KeyPlan(key, None, ()), None
    check_ratios(calc.mode, a, b, f"block {block} (key {key})")
    if keeps_a(info, canon, block, a, b):
        return KeyPlan(key, None, ()), None
    used = [n for n, on in (("b", info.reads_b), ("c", info.needs_c)) if on]
    args = CalcArgs(canon, calc.gamma, calc.stat)
    marker = ("calc",)  # a non-empty `steps`: the key is patched
    if unit is not None and unit.kind != PLAIN:
        why = _unit_problem(unit, shapes_a, sources, used + ["a"])
        if why:
            return KeyPlan(key, None, (), why), None
        srcs = {n: tuple(sources[n][k] for k in unit.keys) for n in used + ["a"]}
        return KeyPlan(key, None, marker), make_patch(key, (), calc.mode, a, b, srcs, unit, args)
    if not used:  # self: A alone
        return KeyPlan(key, None, marker), make_patch(key, (), calc.mode, a, b, {}, None, args)
    plan = plan_key(key, shapes_a[key], _shapes_of(sources, key, used),
                    tuple(ShapeStep(n) for n in used))
    if plan.kept is not None:
        return plan, None
    srcs = {n: (sources[n][key],) for n in used}
    return KeyPlan(key, plan.offset, marker), make_patch(key, (), calc.mode, a, b, srcs, None, args)


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


@dataclass
class MergePlan:
    """The patches of one merge target, as data: nothing is applied until `apply_to`.

    `patches` maps a key (or `(key, offset)` for a merge on A's common channels) to its one MergePatch."""
    patches: dict = field(default_factory=dict)
    notes: MergeNotes = field(default_factory=MergeNotes)

    def patch_lists(self) -> dict:
        """key -> the patch list ComfyUI's `add_patches(patches, 1.0, 1.0)` would store for it."""
        out: dict = {}
        for k, patch in self.patches.items():
            key, offset = (k, None) if isinstance(k, str) else (k[0], k[1])
            out.setdefault(key, []).append(Patch(1.0, patch, 1.0, offset))
        return out

    def apply_to(self, target) -> MergeNotes:
        """Adds the patches to `target` (a clone of A: a ModelPatcher) in one `add_patches` call (each call
        walks the whole model's state dict: one call per key cost ~2 s of bookkeeping on SD1, one call ~10 ms)."""
        if self.patches:
            target.add_patches(self.patches, 1.0, 1.0)
        return self.notes


def plan_merge(shapes_a: dict, sources: dict, method, ratio_a, ratio_b, calc: CalcSettings = NORMAL_CALC,
               task: TaskSettings | None = None) -> MergePlan:
    """The MergePlan of one target: one patch per merged key.

    shapes_a: key -> shape of A's weight, for every key to merge.
    sources:  "b"/"c" -> that model's `get_key_patches()` dict; "a" -> A's (needed by layout-dependent calc
              modes for the other parts of a fused q/k/v).
    ratio_a, ratio_b: key -> a / b (callables: merge_core's `Resolution.ratio`).
    calc:     the calc mode (normal: the method's own formula).
    task:     a task-vector method's settings (`method.task`); sources then holds "b".."e" as connected.
    """
    require_load_paths()
    if getattr(method, "task", False) and task is None:
        raise ValueError(f"mode '{method.name}' is a task-vector method: this node does not take it; merge with "
                         "Elemental Merge, which has its parameters and model_d/model_e")
    plan = MergePlan()
    notes = plan.notes
    units = {}
    if calc.mode != NORMAL and calc.info.layout_dependent:
        units = {k: u for u in layout_units(shapes_a, calc.arch) for k in u.keys}
    for key, shape_a in shapes_a.items():
        a, b = ratio_a(key), ratio_b(key)
        if task is not None:
            key_plan, patch = _task_plan(key, shape_a, sources, method, task, a)
        elif calc.mode == NORMAL:
            key_plan, patch = _linear_plan(key, shape_a, sources, method, a, b)
        else:
            key_plan, patch = _calc_plan(key, shapes_a, sources, calc, a, b, units.get(key))
        if key_plan.kept is not None:
            notes.kept.append((key, key_plan.kept))
            continue
        if patch is None:
            notes.unchanged += 1
            continue
        plan.patches[key if key_plan.offset is None else (key, tuple(key_plan.offset))] = patch
        if key_plan.offset is not None:
            d, _, n = key_plan.offset
            notes.narrowed.append((key, f"dim {d}: {n} of {shape_a[d]}"))
        notes.patched += 1
    return plan


def apply_merge(target, shapes_a: dict, sources: dict, method, ratio_a, ratio_b,
                calc: CalcSettings = NORMAL_CALC, task: TaskSettings | None = None) -> MergeNotes:
    """`plan_merge(...)` applied to `target` (a clone of A); the notes for the change report."""
    return plan_merge(shapes_a, sources, method, ratio_a, ratio_b, calc, task).apply_to(target)

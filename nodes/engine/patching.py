"""The merge engine: an elemental merge written as per-key ModelPatcher patches on a clone of model A.

Why patches and not tensors: ComfyUI computes a patched weight on the device, key by key, only when a
sampler (or a save) loads the model, so a merge costs no extra RAM up front, the source models are never
written, and lowvram/offloading keep working. This is how ComfyUI's own merge nodes work; the difference here
is that every key gets its own ratios and that a merge mode may take several patch steps.

One fused patch per key: every merged key gets a single `merge_patch.MergePatch`, a ComfyUI weight adapter
that `comfy.lora.calculate_weight` calls with A's weight. For the linear modes it runs merge_core's
`MergeMethod.steps(a, b)` (each `w = w * strength_model + strength * source`) as fused in-place ops; for a
calc mode (merge_core.calc_modes) it computes the key's calc-mode formula, in checkpoint layout where the
mode needs it. The sources are the other models' `get_key_patches()` entries, i.e. their own (possibly
patched) weights computed lazily: a merged model can be the input of a further merge.

Which keys change: normal drops steps that change nothing (`effective_steps`); a calc mode follows its own
rule (`merge_core.calc_modes.keeps_a`: keys outside every block or not a weight/bias keep A; ratio 0 keeps A
only where the mode says so). A key that keeps A gets no patch, is counted "unchanged", and is never
recomputed by the XY re-merge.

Shapes: a key whose source weight is smaller than A's along one dimension (a 9-channel inpainting or an
8-channel pix2pix `input_blocks.0.0.weight` against a 4-channel one) merges the common leading channels
and keeps A's extra ones, as SuperMerger does; it is expressed with the patch `offset` (a narrow of A's
weight). Every other mismatch, and a key missing from a source, keeps A's weight and is reported: ComfyUI
itself would scale A and then skip the source on a shape mismatch, silently giving a wrong weight.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from ...merge_core.merge.calc_layout import PLAIN, layout_units
from ...merge_core.merge.calc_modes import (NORMAL, CalcArgs, CosineStat, calc_applies, check_ratios,
                                     get_calc_mode, keeps_a)
from ...merge_core.arch.keys import canonical_key
from ...merge_core.merge.params import GAMMA
from .load_contract import require_load_paths
from .merge_patch import make_patch

# What a kept key's reason says, by cause.
REASON_MISSING = "missing in {src}"
REASON_SHAPE = "shape {a} in A, {s} in {src}: not a narrowing of A"
REASON_SOURCES_DISAGREE = "sources disagree on shape: {shapes}"


class Offset(NamedTuple):
    """ComfyUI's patch `offset`: the narrow `(dim, start, length)` of A's weight a patch applies to."""
    dim: int
    start: int
    length: int


class NotANarrowing(ValueError):
    """The source's shape is not a leading slice of A's along a single dimension."""


@dataclass(frozen=True)
class KeyPlan:
    """The patches of one key, or why A's weight is kept (`kept`, then `steps` is empty)."""
    key: str
    offset: Offset | None  # None: the whole weight
    steps: tuple           # merge_core PatchStep(source, strength, strength_model), no-ops removed
    kept: str | None = None


@dataclass
class MergeNotes:
    """What the engine did besides the plain merge; goes into the change report."""
    patched: int = 0
    unchanged: int = 0          # keys left at A's weight by their ratios (or by the calc mode's key rule)
    narrowed: list = field(default_factory=list)   # (key, "dim 1: 4 of 9")
    kept: list = field(default_factory=list)       # (key, reason): A's weight kept

    def merge(self, other: "MergeNotes") -> "MergeNotes":
        return MergeNotes(self.patched + other.patched, self.unchanged + other.unchanged,
                          self.narrowed + other.narrowed, self.kept + other.kept)

    def summary(self, label: str) -> str:
        lines = [f"{label}: {self.patched} keys patched, {self.unchanged} unchanged (A's weight), "
                 f"{len(self.narrowed)} merged on common channels, {len(self.kept)} kept from A"]
        lines += [f"  common channels only: {k} ({how})" for k, how in self.narrowed]
        lines += [f"  kept from A: {k} ({why})" for k, why in self.kept]
        return "\n".join(lines)


def narrowing(shape_a: tuple, shape_src: tuple) -> Offset | None:
    """The `Offset` that narrows A's weight to the source's shape, or None when the shapes are equal;
    NotANarrowing when the source is not a leading slice of A along a single dimension."""
    if tuple(shape_a) == tuple(shape_src):
        return None
    differing = [d for d, (x, y) in enumerate(zip(shape_a, shape_src)) if x != y]
    if len(shape_a) != len(shape_src) or len(differing) != 1 or shape_src[differing[0]] > shape_a[differing[0]]:
        raise NotANarrowing(f"{tuple(shape_src)} is not a leading slice of {tuple(shape_a)}")
    d = differing[0]
    return Offset(d, 0, shape_src[d])


def effective_steps(steps) -> tuple:
    """Drops steps that change nothing (strength 0 with strength_model 1): the weight stays A's bit for bit
    and the source is never even computed."""
    return tuple(s for s in steps if not (s.strength == 0.0 and s.strength_model == 1.0))


def plan_key(key: str, shape_a: tuple, source_shapes: dict, steps) -> KeyPlan:
    """The KeyPlan of one key; its `kept` says why when A's weight must be kept.

    `source_shapes` maps "b"/"c" to the source's shape for this key (None when the source lacks the key).
    """
    steps = effective_steps(steps)
    if not steps:
        return KeyPlan(key, None, ())
    used = sorted({s.source for s in steps})
    for src in used:
        if source_shapes.get(src) is None:
            return KeyPlan(key, None, (), REASON_MISSING.format(src=f"model {src.upper()}"))
    shapes = {src: tuple(source_shapes[src]) for src in used}
    if len(set(shapes.values())) > 1:
        why = REASON_SOURCES_DISAGREE.format(shapes=", ".join(f"{s.upper()} {v}" for s, v in shapes.items()))
        return KeyPlan(key, None, (), why)
    src, shape = next(iter(shapes.items()))
    try:
        offset = narrowing(shape_a, shape)
    except NotANarrowing:
        return KeyPlan(key, None, (), REASON_SHAPE.format(a=tuple(shape_a), s=shape, src=f"model {src.upper()}"))
    return KeyPlan(key, offset, steps)


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
                    tuple(_ShapeStep(n) for n in used))
    if plan.kept is not None:
        return plan, None
    srcs = {n: (sources[n][key],) for n in used}
    return KeyPlan(key, plan.offset, marker), make_patch(key, (), calc.mode, a, b, srcs, None, args)


@dataclass(frozen=True)
class _ShapeStep:
    """A stand-in step so that `plan_key` checks a calc mode's sources' presence and shapes."""
    source: str
    strength: float = 1.0
    strength_model: float = 1.0


def key_effect(method, calc: CalcSettings, key: str, a: float, b: float):
    """What decides a key's merged weight under these ratios, comparable between two settings of one merge
    (None: A's weight): the effective steps for normal, (a, b) for a calc mode that changes the key. The diff
    checker counts a target's changed keys with it, per calc mode."""
    if calc.mode == NORMAL:
        return effective_steps(method.steps(a, b)) or None
    info = calc.info
    canon, block = canonical_key(key, calc.arch), calc.arch.block_of(key)
    if not calc_applies(info, canon, block) or keeps_a(info, canon, block, a, b):
        return None
    return (a, b if info.uses_beta else None)


def apply_merge(target, shapes_a: dict, sources: dict, method, ratio_a, ratio_b,
                calc: CalcSettings = NORMAL_CALC) -> MergeNotes:
    """Adds the patches of a merge to `target` (a clone of A: a ModelPatcher or a CLIP).

    shapes_a: key -> shape of A's weight, for every key to merge.
    sources:  "b"/"c" -> that model's `get_key_patches()` dict; "a" -> A's (needed by layout-dependent calc
              modes for the other parts of a fused q/k/v).
    ratio_a, ratio_b: key -> a / b (callables, so a default can apply to keys outside every block).
    calc:     the calc mode (normal: the method's own formula).

    One patch per key, all handed to ComfyUI in one `add_patches` call (each call walks the whole model's
    state dict, so one call per key cost ~2 s of bookkeeping on SD1; one call costs ~10 ms).
    """
    require_load_paths()
    notes = MergeNotes()
    patches: dict = {}
    units = {}
    if calc.mode != NORMAL and calc.info.layout_dependent:
        units = {k: u for u in layout_units(shapes_a, calc.arch) for k in u.keys}
    for key, shape_a in shapes_a.items():
        a, b = ratio_a(key), ratio_b(key)
        if calc.mode == NORMAL:
            plan, patch = _linear_plan(key, shape_a, sources, method, a, b)
        else:
            plan, patch = _calc_plan(key, shapes_a, sources, calc, a, b, units.get(key))
        if plan.kept is not None:
            notes.kept.append((key, plan.kept))
            continue
        if patch is None:
            notes.unchanged += 1
            continue
        patches[key if plan.offset is None else (key, tuple(plan.offset))] = patch
        if plan.offset is not None:
            d, _, n = plan.offset
            notes.narrowed.append((key, f"dim {d}: {n} of {shape_a[d]}"))
        notes.patched += 1
    if patches:
        target.add_patches(patches, 1.0, 1.0)
    return notes

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

Which keys change and how shapes are handled is decided per key in merge_core/merge/key_work.py (shared with
the file-to-file merge; shape rules in plan.py); a calc mode
follows its own rule (`merge_core.calc_modes.keeps_a`: keys outside every block or not a weight/bias keep A;
ratio 0 keeps A only where the mode says so). `plan_merge` returns the patches as data; `apply_to` adds them.
A key that keeps A gets no patch and is never recomputed by the XY re-merge. A merged key that ComfyUI's load
path never patches (a buffer, or a parameter of a module with parameter-holding sub-modules) also gets its merged
tensor as an object patch (`unpatchable`), so the live model holds what the save writes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...merge_core.merge.calc_layout import PLAIN, layout_units
from ...merge_core.merge.calc_modes import NORMAL
from ...merge_core.merge.key_work import (LINEAR, NORMAL_CALC, CalcSettings, KeyWork, TaskSettings, key_effect,
                                          key_work)
from ...merge_core.merge.plan import MergeNotes
from .comfy_internals import Patch
from .load_contract import require_load_paths
from .merge_adapter import make_patch
from .unpatchable import refresh_object_patches


def _shape_reader(sources: dict):
    """`shape_of(source, key)` over `get_key_patches()` dicts: the unpatched weight's shape, None if absent."""
    def shape_of(name: str, key: str):
        entry = sources.get(name, {}).get(key)
        return tuple(entry[0][0].shape) if entry is not None else None
    return shape_of


def _patch(work: KeyWork, sources: dict):
    """The interned MergePatch of a key that changes: its sources' entries (every key of a fused unit)."""
    unit = work.unit if work.unit is not None and work.unit.kind != PLAIN else None
    keys = unit.keys if unit is not None else (work.plan.key,)
    entries = {n: tuple(sources[n][k] for k in keys) for n in work.used}
    steps = work.plan.steps if work.kind == LINEAR else ()
    return make_patch(work.plan.key, steps, work.calc, work.a, work.b, entries, unit, work.calc_args, work.task)


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
            refresh_object_patches(target, {k if isinstance(k, str) else k[0] for k in self.patches})
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
    shape_of = _shape_reader(sources)
    for key in shapes_a:
        work = key_work(key, shapes_a, shape_of, method, ratio_a(key), ratio_b(key), calc, task, units.get(key))
        key_plan, shape_a = work.plan, shapes_a[key]
        patch = _patch(work, sources) if work.changes else None
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

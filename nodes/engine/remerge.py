"""Incremental re-merge: one merged ModelPatcher whose per-key patches change between XY cells, recomputing on
the device only the keys whose patch steps change.

Why not a fresh ElementalMerge per cell: every merge is a new clone with a new `patches_uuid`, and ComfyUI's
`load_models_gpu` -> `ModelPatcher.partially_load` re-patches the *whole* model whenever the weights in the
model were made under another uuid (`model.current_weight_patches_uuid != patcher.patches_uuid`). A cell that
moves one element would pay a full re-patch (every key of the UNet through `calculate_weight`).

What this module does instead: for the keys whose patch lists change, when the model is loaded with this
patcher's own patches, `comfy_internals.recompute_in_place` restores each key from ComfyUI's backup, swaps
its patch list and recomputes it with ComfyUI's own code, so the bits are those of a full load; otherwise
only the patch lists change and ComfyUI's next load patches everything: slower, never wrong. A key ComfyUI's
load path never patches (`unpatchable`) gets its new patch list without a new `patches_uuid` (the loaded
weights do not depend on it) and its object patch recomputed at once, set on the model too where it is applied. Every access to
ModelPatcher internals is in `comfy_internals`.

The patch lists come from `merge_patches.plan_merge` (the ElementalMerge engine's plan), so a cell's patches are
exactly those an ElementalMerge with the same ratios adds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import comfy.model_management
import comfy.utils

from . import comfy_internals
from ..sockets.merge_inputs import MergeInputs, MergeTarget
from .merge_patches import CalcSettings, TaskSettings, plan_merge
from .unpatchable import refresh_object_patches
from ...merge_core.merge.calc_modes import NORMAL
from ...merge_core.merge.params import GAMMA


@dataclass
class _Target:
    """One patcher being re-merged, with A's own patches and the merge part now in it."""
    target: MergeTarget
    base: dict = field(default_factory=dict)     # key -> A's own patches (a LoRA on A, a merged A, ...)
    current: dict = field(default_factory=dict)  # key -> patch list now in the patcher (merge part only)

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def shapes(self) -> dict:
        return self.target.shapes


@dataclass
class ApplyStats:
    """What one `apply` did: for the benchmark and the plot's table."""
    changed: set
    in_place: dict      # target name -> number of keys recomputed on the device now
    deferred: dict      # target name -> keys changed but left to ComfyUI's next load (model not loaded)
    seconds: float


class IncrementalMerge:
    """A merge of A with B (and C) whose per-key ratios can be changed cheaply.

    Built from the merge's models, text encoders and method (checked by MergeInputs, as every merging node
    does), or `from_inputs(inputs)`. Neither source is ever modified: the merge lives on clones of A. `apply(ratio_a, ratio_b)` takes callables or dicts key -> ratio (a dict falls
    back to `default_a/b`) for every key of `keys`, and returns the set of keys whose patches changed;
    `.model` / `.clip` are the merged ModelPatcher / CLIP to sample with. `last` holds the ApplyStats of the
    latest apply.
    """

    def __init__(self, model_a, model_b, model_c=None, method="Weight sum", clip_a=None, clip_b=None,
                 clip_c=None, calc_mode: str = NORMAL, calc_option: float = GAMMA.default):
        self._start(MergeInputs(method, model_a, model_b, model_c, clip_a, clip_b, clip_c, calc_mode, calc_option))

    @classmethod
    def from_inputs(cls, inputs: MergeInputs) -> "IncrementalMerge":
        merge = cls.__new__(cls)
        merge._start(inputs)
        return merge

    def _start(self, inputs: MergeInputs) -> None:
        self.inputs = inputs
        self.method = inputs.method
        self.model, self.clip, targets = inputs.targets()
        self.targets = [_Target(t, comfy_internals.patch_lists(t.patcher)) for t in targets]
        self.keys = inputs.keys
        self.last: ApplyStats | None = None
        self._applied = False
        self._calc = CalcSettings()
        self._task = None

    @property
    def clip_merged(self) -> bool:
        return self.inputs.clip_merged

    def calc_for(self, calc_mode: str | None = None, calc_option: float | None = None) -> CalcSettings:
        """The engine's CalcSettings for a calc mode/option (default: the merge's own), the cosine statistic
        from the cache after its first computation."""
        return self.inputs.calc([t.target for t in self.targets], calc_mode, calc_option)

    def _plan(self, target: _Target, ratio_a, ratio_b):
        """key -> merge-part patch list for every key of the target (empty list: A's weight), under the calc
        settings of the `apply` in progress (`self._calc`; subclasses extend this signature-stable hook)."""
        t = target.target
        lists = plan_merge(t.shapes, t.sources, self.method, ratio_a, ratio_b, self._calc, self._task).patch_lists()
        return {k: lists.get(k, []) for k in t.shapes}

    def _apply_target(self, target: _Target, ra, rb, in_place: dict, deferred: dict) -> list:
        plans = self._plan(target, ra, rb)
        changed = [k for k, p in plans.items()
                   if not self._applied or not comfy_internals.same_patches(p, target.current.get(k, []))]
        if not changed:
            return changed
        new_lists = {}
        for k in changed:
            target.current[k] = plans[k]
            new_lists[k] = target.base.get(k, []) + plans[k]
        patcher = target.target.patcher
        unreached = comfy_internals.unpatchable_keys(patcher, new_lists)
        if unreached:  # live value: an object patch, recomputed from the new lists (unpatchable)
            comfy_internals.set_unreached_patch_lists(patcher, {k: new_lists.pop(k) for k in unreached})
            refresh_object_patches(patcher, unreached)
            if not new_lists:
                in_place[target.name] = len(changed)
                return changed
        if self._applied and comfy_internals.is_loaded_with_own_patches(patcher):
            comfy_internals.recompute_in_place(patcher, new_lists)
            in_place[target.name] = len(changed)
        else:
            comfy_internals.set_patch_lists(patcher, new_lists)
            deferred[target.name] = len(changed)
        return changed

    def apply(self, ratio_a, ratio_b=None, default_a: float = 0.0, default_b: float = 0.0,
              calc: CalcSettings | None = None, task: TaskSettings | None = None) -> set:
        """Sets every key's ratios (and the calc mode: `calc_for(...)`, default the merge's own; a task-vector
        method's parameters: `inputs.task(...)`); returns the keys whose patches changed (all of them on the
        first call; every patched key when the calc mode or its option changes, since each key's patch then
        differs; the keys whose task parameters change)."""
        t0 = time.perf_counter()
        self._calc = calc if calc is not None else self.calc_for()
        self._task = task
        ra, rb = _lookup(ratio_a, default_a), _lookup(ratio_b, default_b)
        changed_all: set = set()
        in_place: dict = {}
        deferred: dict = {}
        for target in self.targets:
            changed_all.update(self._apply_target(target, ra, rb, in_place, deferred))
        self._applied = True
        self.last = ApplyStats(changed_all, in_place, deferred, time.perf_counter() - t0)
        return changed_all

    def changed_in(self, name: str, keys) -> bool:
        """Whether any of `keys` belongs to target `name` ("unet" / "clip")."""
        return any(k in t.shapes for t in self.targets if t.name == name for k in keys)

    def load(self) -> None:
        """Loads the merged model(s) the way a sampler / text encode does (patching what is pending)."""
        comfy.model_management.load_models_gpu([t.target.patcher for t in self.targets])

    def full_state(self, keys=None) -> dict:
        """(target name, key) -> the merged weight as the loaded model holds it now (a CPU copy)."""
        self.load()
        out = {}
        for t in self.targets:
            for k in t.shapes:
                if keys is None or k in keys:
                    out[(t.name, k)] = comfy.utils.get_attr(t.target.patcher.model, k).detach().to("cpu", copy=True)
        return out


def _lookup(ratios, default):
    if ratios is None:
        return lambda key: default
    if callable(ratios):
        return ratios
    return lambda key: ratios.get(key, default)

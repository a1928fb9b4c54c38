"""Incremental re-merge: one merged ModelPatcher whose per-key patches change between XY cells, recomputing on
the device only the keys whose patch steps change.

Why not a fresh ElementalMerge per cell: every merge is a new clone with a new `patches_uuid`, and ComfyUI's
`load_models_gpu` -> `ModelPatcher.partially_load` re-patches the *whole* model whenever the weights in the
model were made under another uuid (`model.current_weight_patches_uuid != patcher.patches_uuid`). A cell that
moves one element would pay a full re-patch (every key of the UNet through `calculate_weight`).

What this module does instead, per changed key, on the patcher that ComfyUI has loaded:
  1. restore the key's original weight from the patcher's `backup` (the same restore `unpatch_model` does);
  2. swap the key's patch list (A's own patches + the merge steps of the new ratios);
  3. recompute the key with ComfyUI's own `patch_weight_to_device` (same `calculate_weight`, same fp32
     intermediate, same stochastic rounding seed), so the bits are those of a full load;
  4. give the patcher a fresh `patches_uuid` and record it as the model's `current_weight_patches_uuid`:
     the loaded weights now match exactly this patcher's patches, so the next `load_models_gpu` keeps them,
     and any older clone (same old uuid, old patches) is re-patched from scratch if it is ever loaded.
When the model is not fully loaded with our patches (never loaded yet, lowvram, loaded by another clone) only
the patch lists and the uuid change and ComfyUI's next load patches everything: slower, never wrong.
If the in-place update fails half-way, the model's uuid is set to one no patcher has, which forces every
later load to restore from the backup first (`backup` only ever holds original weights: a key is backed up
before its first patch, and a key restored to A's weight leaves the backup).

The patch lists come from `nodes.patching.apply_merge` (the ElementalMerge engine) run against a recorder,
so a cell's patches are exactly those an ElementalMerge with the same ratios adds.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import comfy.model_management
import comfy.utils

from ..merge_core import get_merge_method
from . import model_info
from .patching import apply_merge


class _PatchRecorder:
    """Stands in for a ModelPatcher in `apply_merge`: records the patch tuples ComfyUI's add_patches would
    store, `(strength_patch, source, strength_model, offset, function)`, without touching any model."""

    def __init__(self):
        self.patches: dict[str, list] = {}

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        for k, source in patches.items():
            key, offset = (k, None) if isinstance(k, str) else (k[0], k[1])
            self.patches.setdefault(key, []).append((strength_patch, source, strength_model, offset, None))
        return list(patches)


@dataclass
class _Target:
    """One patcher being re-merged (the UNet's, or the text encoder's)."""
    name: str
    patcher: object                  # comfy ModelPatcher
    shapes: dict                     # key -> shape of A's weight
    sources: dict                    # "b"/"c" -> get_key_patches() of that model
    base: dict = field(default_factory=dict)   # key -> A's own patches (a LoRA on A, a merged A, ...)
    current: dict = field(default_factory=dict)  # key -> patch list now in the patcher (merge part only)


@dataclass
class ApplyStats:
    """What one `apply` did: for the benchmark and the plot's table."""
    changed: set
    in_place: dict      # target name -> number of keys recomputed on the device now
    deferred: dict      # target name -> keys changed but left to ComfyUI's next load (model not loaded)
    seconds: float


def is_loaded_with_own_patches(patcher) -> bool:
    """True when the model holds exactly this patcher's patched weights, fully loaded (no lowvram)."""
    m = patcher.model
    return (m.current_weight_patches_uuid is not None and m.current_weight_patches_uuid == patcher.patches_uuid
            and not getattr(m, "model_lowvram", False) and getattr(m, "model_loaded_weight_memory", 0) > 0)


def _restore(patcher, key) -> None:
    bk = patcher.backup.get(key)
    if bk is None:
        return
    if bk.inplace_update:
        comfy.utils.copy_to_param(patcher.model, key, bk.weight)
    else:
        comfy.utils.set_attr_param(patcher.model, key, bk.weight)


def _recompute_in_place(patcher, keys, new_lists) -> None:
    """Steps 1-3 of the module docstring for `keys`; the caller sets the uuids."""
    device = patcher.model.device
    with patcher.use_ejected():
        for key in keys:
            old_param = comfy.utils.get_attr(patcher.model, key)
            _restore(patcher, key)
            new = new_lists.get(key)
            if new:
                patcher.patches[key] = new
                patcher.patch_weight_to_device(key, device_to=device)
            else:
                patcher.patches.pop(key, None)
                bk = patcher.backup.pop(key, None)
                if bk is not None and not bk.inplace_update and bk.weight.device != old_param.device:
                    # the backup lives on the offload device; a loaded module keeps its weights on `device`
                    comfy.utils.set_attr_param(patcher.model, key, bk.weight.to(old_param.device, copy=True))


class IncrementalMerge:
    """A merge of A with B (and C) whose per-key ratios can be changed cheaply.

    model_a/b/c: ModelPatchers; clip_a/b/c: CLIPs (the text encoder is merged when clip_a and clip_b, and
    clip_c for modes that need C, are given, as ElementalMerge does). `method`: a merge_core MergeMethod or
    its name. Neither source is ever modified: the merge lives on clones of A.

    `apply(ratio_a, ratio_b)` takes callables or dicts key -> ratio (a dict falls back to `default_a/b`) for
    every key of `keys`, and returns the set of keys whose patches changed; `.model` / `.clip` are the merged
    ModelPatcher / CLIP to sample with. `last` holds the ApplyStats of the latest apply.
    """

    def __init__(self, model_a, model_b, model_c=None, method="Weight sum", clip_a=None, clip_b=None,
                 clip_c=None):
        self.method = get_merge_method(method) if isinstance(method, str) else method
        if self.method.needs_c and model_c is None:
            raise ValueError(f"mode '{self.method.name}' needs model_c")
        self.model = model_a.clone()
        unet_sources = {"b": model_b.get_key_patches(model_info.UNET_PREFIX)}
        if self.method.needs_c:
            unet_sources["c"] = model_c.get_key_patches(model_info.UNET_PREFIX)
        self.targets = [_Target("unet", self.model, model_info.unet_shapes(model_a), unet_sources)]
        self.clip = clip_a
        self.clip_reason = None
        if clip_a is not None and clip_b is not None and (clip_c is not None or not self.method.needs_c):
            self.clip = clip_a.clone()
            clip_sources = {"b": clip_b.get_key_patches()}
            if self.method.needs_c:
                clip_sources["c"] = clip_c.get_key_patches()
            self.targets.append(_Target("clip", self.clip.patcher, model_info.clip_shapes(clip_a), clip_sources))
        elif clip_a is not None:
            self.clip_reason = "text encoder not merged (clip_b" + (" / clip_c" if self.method.needs_c else "") \
                               + " not connected)"
        for t in self.targets:
            t.base = {k: list(v) for k, v in t.patcher.patches.items()}
        self.keys = [k for t in self.targets for k in t.shapes]
        self.last: ApplyStats | None = None
        self._applied = False

    @property
    def clip_merged(self) -> bool:
        return any(t.name == "clip" for t in self.targets)

    def _plan(self, target: _Target, keys, ratio_a, ratio_b):
        """key -> merge-part patch list for `keys` (empty list: A's weight)."""
        rec = _PatchRecorder()
        apply_merge(rec, {k: target.shapes[k] for k in keys}, target.sources, self.method, ratio_a, ratio_b)
        return {k: rec.patches.get(k, []) for k in keys}

    def apply(self, ratio_a, ratio_b=None, default_a: float = 0.0, default_b: float = 0.0) -> set:
        """Sets every key's ratios; returns the keys whose patches changed (all of them on the first call)."""
        t0 = time.perf_counter()
        ra = _lookup(ratio_a, default_a)
        rb = _lookup(ratio_b, default_b)
        changed_all: set = set()
        in_place: dict = {}
        deferred: dict = {}
        for target in self.targets:
            plans = self._plan(target, target.shapes, ra, rb)
            changed = [k for k, p in plans.items() if not self._applied or not _same(p, target.current.get(k, []))]
            if not changed:
                continue
            new_lists = {}
            for k in changed:
                target.current[k] = plans[k]
                new_lists[k] = target.base.get(k, []) + plans[k]
            p = target.patcher
            if self._applied and is_loaded_with_own_patches(p):
                try:
                    _recompute_in_place(p, changed, new_lists)
                except BaseException:
                    p.model.current_weight_patches_uuid = uuid.uuid4()  # nobody's: next load restores everything
                    raise
                p.patches_uuid = uuid.uuid4()
                p.model.current_weight_patches_uuid = p.patches_uuid
                in_place[target.name] = len(changed)
            else:
                for k in changed:
                    if new_lists[k]:
                        p.patches[k] = new_lists[k]
                    else:
                        p.patches.pop(k, None)
                p.patches_uuid = uuid.uuid4()
                deferred[target.name] = len(changed)
            changed_all.update(changed)
        self._applied = True
        self.last = ApplyStats(changed_all, in_place, deferred, time.perf_counter() - t0)
        return changed_all

    def changed_in(self, name: str, keys) -> bool:
        """Whether any of `keys` belongs to target `name` ("unet" / "clip")."""
        for t in self.targets:
            if t.name == name:
                return any(k in t.shapes for k in keys)
        return False

    def load(self) -> None:
        """Loads the merged model(s) the way a sampler / text encode does (patching what is pending)."""
        comfy.model_management.load_models_gpu([t.patcher for t in self.targets])

    def full_state(self, keys=None) -> dict:
        """key -> the merged weight as the loaded model holds it now (a CPU copy), after loading."""
        self.load()
        out = {}
        for t in self.targets:
            for k in t.shapes:
                if keys is None or k in keys:
                    out[(t.name, k)] = comfy.utils.get_attr(t.patcher.model, k).detach().to("cpu", copy=True)
        return out


def _lookup(ratios, default):
    if ratios is None:
        return lambda key: default
    if callable(ratios):
        return ratios
    return lambda key: ratios.get(key, default)


def _same(a: list, b: list) -> bool:
    """Patch lists equal: same numbers and the very same source objects (identity, no tensor compare)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x[0] != y[0] or x[2] != y[2] or x[3] != y[3] or x[1] is not y[1]:
            return False
    return True

"""One fused patch per key: a merge as a ComfyUI weight adapter that computes the merged weight in one pass.

Why an adapter: ComfyUI 0.3.75's `comfy.lora.calculate_weight` calls a `WeightAdapterBase` patch value with
A's weight (float32, on the device, A's own patches already applied) and uses what it returns. One adapter
per key can therefore compute any per-key formula, the calc modes included, on the device when the sampler
loads the model, instead of a chain of `w * strength_model + strength * source` patches that each allocate
a temporary. The sources are the other models' `get_key_patches()` entries, evaluated here the way ComfyUI
evaluates a nested patch list, so a source that is itself a merge or carries a LoRA works.

Linear modes run merge_core's patch steps as fused in-place ops on A's weight (`lerp_`, `add_(alpha=)`); the
only temporaries are the casts of sources not already float32 on the device. Calc modes compute out of place
(merge_core.calc_modes) and copy the result into A's weight, in checkpoint layout where the mode needs it.
In place matters: with an `offset` ComfyUI hands over a narrowed view and keeps the full tensor.

Adapters are interned (`make_patch`): equal parameters give the very same object, so the XY re-merge, which
compares patch lists by identity, sees an unchanged key as unchanged.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch

import comfy.lora
import comfy.model_management
from comfy.weight_adapter import WeightAdapterBase

from .comfy_internals import weights_token
from ...merge_core.merge.calc_layout import LayoutUnit, layout_units, to_checkpoint
from ...merge_core.merge.calc_modes import NORMAL, STAT_CACHE, CalcArgs, CosineStat, cosine_statistic
from ...merge_core.merge.key_compute import merged_weight, run_steps
from ...merge_core.merge.key_work import CALC, LINEAR, TASK, KeyWork
from ...merge_core.merge.plan import KeyPlan
from ...merge_core.merge.task_params import TaskArgs


def entry_dtype(entry) -> torch.dtype:
    """The storage dtype of a `get_key_patches()` entry's base weight."""
    return entry[0][0].dtype


@torch.no_grad()
def source_weight(entry, device, key: str = "") -> torch.Tensor:
    """A `get_key_patches()` entry's weight, float32 on ``device``: the base weight converted and, when the
    entry carries patches (a merge, a LoRA), those applied with ComfyUI's own calculate_weight. The result
    is read-only for the caller unless it was copied (patched entries always are)."""
    (weight, convert), patches = entry[0], entry[1:]
    if not patches:
        return convert(comfy.model_management.cast_to_device(weight, device, torch.float32), inplace=False)
    base = convert(comfy.model_management.cast_to_device(weight, device, torch.float32, copy=True), inplace=True)
    return comfy.lora.calculate_weight(patches, base, key, intermediate_dtype=torch.float32)


@dataclass(frozen=True, eq=False)
class MergeParams:
    """Everything one key's merge needs. Deliberately not a tensor, tuple, list or adapter: ComfyUI's patch
    preparation (`comfy.lora.prefetch_prepared_value`, the dynamic-VRAM loader) copies those and rebuilds an
    adapter as ``type(value)(value.loaded_keys, prepared(value.weights))``; an object of any other type passes
    through as it is. The source entries inside are cast to the device here, when the key is computed."""
    key: str
    steps: tuple = ()
    calc: str = NORMAL
    a: float = 0.0
    b: float = 0.0
    sources: dict = field(default_factory=dict)
    unit: LayoutUnit | None = None
    args: CalcArgs = CalcArgs()
    task: TaskArgs | None = None  # a task-vector method (merge_core.merge.task_vectors): sources b..e

    @property
    def work(self) -> KeyWork:
        """The key's computation as merge_core describes it (merge_core.merge.key_compute computes it)."""
        kind = TASK if self.task is not None else (LINEAR if self.calc == NORMAL else CALC)
        return KeyWork(KeyPlan(self.key, None, self.steps), kind, (), self.calc, self.a, self.b, self.args,
                       self.unit, self.task)


def _float32_work(weight: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(A's weight as float32 to compute on, whether that is a copy to write back). ComfyUI hands over float32
    on the classic path, and its compute dtype (fp16 on most GPUs since 0.33) or the model's own dtype on the
    dynamic-VRAM path."""
    if weight.dtype == torch.float32:
        return weight, False
    return weight.to(torch.float32), True


class MergePatch(WeightAdapterBase):
    """The merge of one key. Constructed the way ComfyUI reconstructs adapters, ``MergePatch(loaded_keys,
    weights)``, with ``weights == [MergeParams]``; ``params.sources``: name -> tuple of `get_key_patches()`
    entries, one per key of ``unit`` (a single entry for a plain key); "a" holds A's entries of the unit's
    other keys (fused q/k/v)."""
    name = "elemental_merge"

    def __init__(self, loaded_keys, weights):
        self.loaded_keys = loaded_keys
        self.weights = weights

    @property
    def params(self) -> MergeParams:
        return self.weights[0]

    def __repr__(self):
        p = self.params
        if p.task is not None:
            return f"MergePatch({p.key!r}, {p.task.method}, {dict(p.task.values)}, sources={p.task.sources})"
        return f"MergePatch({p.key!r}, calc={p.calc}, a={p.a}, b={p.b}, steps={p.steps})"

    def _evaluate(self, name: str, index: int, device) -> torch.Tensor:
        return source_weight(self.params.sources[name][index], device, self.params.key)

    @torch.no_grad()  # outside ComfyUI's inference mode (tests, scripts) weights may require grad
    def calculate_weight(self, weight, key, strength, strength_model, offset, function,
                         intermediate_dtype=torch.float32, original_weight=None):
        """Writes the merged weight into ``weight`` (in place: with an offset ComfyUI keeps the full tensor
        and ignores what is returned) and returns it, in ``weight``'s dtype, computed in float32."""
        work, copied = _float32_work(weight)
        p = self.params
        b_dtype = entry_dtype(p.sources["b"][0]) if "b" in p.sources else None
        result = merged_weight(p.work, work, lambda name, i: self._evaluate(name, i, weight.device), b_dtype)
        if copied:
            weight.copy_(result)
        return weight


_INTERNED: "weakref.WeakValueDictionary[tuple, MergePatch]" = weakref.WeakValueDictionary()


def _token(value):
    """A hashable stand-in for a patch parameter: entries (lists of tensors) by identity."""
    if isinstance(value, dict):
        return tuple(sorted((k, _token(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)) and not isinstance(value, LayoutUnit):
        return tuple(id(v) for v in value)
    return value


def make_patch(key: str, steps=(), calc: str = NORMAL, a: float = 0.0, b: float = 0.0, sources=None,
               unit: LayoutUnit | None = None, args: CalcArgs = CalcArgs(), task: TaskArgs | None = None) -> MergePatch:
    """The MergePatch with these parameters: the same object as long as an equal one is alive."""
    ident = (key, tuple(steps), calc, a, b, _token(sources or {}), unit, args, task)
    patch = _INTERNED.get(ident)
    if patch is None:
        patch = MergePatch(set(), [MergeParams(key, tuple(steps), calc, a, b, dict(sources or {}), unit, args,
                                               task)])
        _INTERNED[ident] = patch
    return patch


def stat_pairs(parts, device=None):
    """(A, B) float32 checkpoint-layout tensors for the cosine statistic. ``parts``: (architecture, A's
    get_key_patches(), B's) per patcher (UNet, text encoder). Every floating-point key present in both, with
    q/k/v fused and text_projection untransposed; a key whose shapes differ is left out (SuperMerger would
    crash on it)."""
    device = device or torch.device("cpu")
    for arch, entries_a, entries_b in parts:
        keys = [k for k in entries_a if k in entries_b and entries_a[k][0][0].is_floating_point()]
        for unit in layout_units(keys, arch):
            A = to_checkpoint(unit, [source_weight(entries_a[k], device, k) for k in unit.keys])
            B = to_checkpoint(unit, [source_weight(entries_b[k], device, k) for k in unit.keys])
            if A.shape == B.shape:
                yield A, B


def pair_token(*patchers) -> tuple:
    """Identity of source models for the statistic cache (`comfy_internals.weights_token` of each)."""
    return tuple(weights_token(p) if p is not None else None for p in patchers)


def cosine_stat(mode: str, token, parts, device=None) -> CosineStat:
    """The cached statistic of ``mode`` for the pair ``token`` (`pair_token`), computed on first use."""
    return STAT_CACHE.get(mode, token, lambda: cosine_statistic(stat_pairs(parts, device), mode))


__all__ = ["CosineStat", "MergeParams", "MergePatch", "cosine_stat", "make_patch", "pair_token", "run_steps", "source_weight",
           "stat_pairs"]

"""How an Adjust (merge_core.adjust) becomes ModelPatcher patches, for the ElementalAdjust node and the XY plot.

Why patches: Adjust must work on any model, merged or not, whose weights may not exist yet (a merge is
itself a list of patches computed when the sampler loads the model). ComfyUI applies a patch tuple
`(strength, value, strength_model, offset, function)` as `w = w * strength_model + strength * value` in
float32, after the patches before it, so:

* a scale by `f` is `(0.0, (zeros,), f, None, None)`: `w *= f`, and the zero-strength diff adds nothing
  (ComfyUI skips a diff whose strength is 0, so the tensor is never read);
* the output-bias shift is `(1.0, (vector,), 1.0, None, None)`: `w += vector`.
Both land after the model's own patches (a merge, a LoRA), exactly as SuperMerger adjusts merged weights.
"""
from __future__ import annotations

import torch

from ...merge_core.merge.adjust import UNET, AdjustValues, KeyChange, check_keys, key_changes, shift_tensor
from . import model_info
from .comfy_internals import Patch
from .remerge import IncrementalMerge

_NO_DIFF = (torch.zeros(1),)  # a diff ComfyUI never reads (strength 0)


def internal_key(change: KeyChange) -> str:
    """The ModelPatcher key (``diffusion_model.…``) of a change stated in checkpoint form."""
    return model_info.UNET_PREFIX + change.key[len(UNET):]


def patch_tuple(change: KeyChange) -> tuple:
    """The tuple ModelPatcher.add_patches would store for `change`."""
    if change.kind == "scale":
        return (0.0, _NO_DIFF, float(change.amount), None, None)
    return (1.0, (shift_tensor(change),), 1.0, None, None)


def adjust_plan(model, values: AdjustValues) -> tuple:
    """(architecture, [(ModelPatcher key, KeyChange)]) for `values` on `model`; AdjustError when the model has
    no such layers (Flux, SD3) or `values` are invalid."""
    arch = model_info.architecture_of(model)
    check_keys(model_info.unet_shapes(model), arch.name, prefix=model_info.UNET_PREFIX)
    return arch, [(internal_key(c), c) for c in key_changes(values, arch.name)]


def add_adjust_patches(patcher, plan) -> None:
    """Adds the plan's patches to `patcher` (a clone), one add_patches call per change."""
    for key, change in plan:
        strength, value, strength_model, _, _ = patch_tuple(change)
        patcher.add_patches({key: value}, strength, strength_model)


def adjust_report(model_name: str, arch, values: AdjustValues, plan) -> str:
    """Which keys changed and by how much."""
    head = f"Elemental Adjust ({arch.label}) on {model_name}: {values.label()} [{values.text()}]"
    if not plan:
        return head + "\nno key changed (all eight values are 0)"
    lines = [head, f"{len(plan)} keys changed:"]
    for key, change in plan:
        if change.kind == "scale":
            lines.append(f"  {key}: x {change.amount:.6g} ({(change.amount - 1) * 100:+.4g}%)")
        else:
            channels = ", ".join(f"{a:+.6g}" for a in change.amount)
            lines.append(f"  {key}: + [{channels}] (one per latent channel)")
    return "\n".join(lines)


class AdjustedMerge(IncrementalMerge):
    """An IncrementalMerge whose UNet also carries an Adjust after the merge patches, exactly as
    ElementalMerge followed by ElementalAdjust (the same patch entries, in the same order). Changing the
    Adjust between cells re-merges only the (up to six) keys it touches."""

    def _start(self, inputs) -> None:
        super()._start(inputs)
        self._adjust: dict = {}     # ModelPatcher key -> [Patch] appended after the merge part
        self._entries: dict = {}    # KeyChange -> Patch, so an unchanged Adjust keeps its very objects

    def set_adjust(self, values: AdjustValues | None) -> None:
        """Sets the Adjust of the next `apply` (None or all zeros: none)."""
        if values is None or values.is_zero:
            self._adjust = {}
            return
        _, plan = adjust_plan(self.model, values)
        self._adjust = {key: [self._entry(change)] for key, change in plan}

    def _entry(self, change: KeyChange) -> Patch:
        if change not in self._entries:
            self._entries[change] = Patch(*patch_tuple(change))
        return self._entries[change]

    def _plan(self, target, ratio_a, ratio_b):
        plans = super()._plan(target, ratio_a, ratio_b)
        if target.name == "unet":
            for key, extra in self._adjust.items():
                plans[key] = plans[key] + extra
        return plans

"""Merged keys that ComfyUI's load path never patches, merged in the live model by an object patch.

ComfyUI applies a weight patch only to a parameter of a module without parameter-holding sub-modules, and never
to a buffer (`comfy_internals.load_path_keys` asks its own `_load_list`). `add_patches` on such a key (SD3's
`pos_embed`, Wan's `blocks.N.modulation` / `head.modulation`, AuraFlow's `positional_encoding` /
`register_tokens`, LTXV's `scale_shift_table`) changes nothing when the model is loaded, in ComfyUI's native
merge nodes too, while the streaming save computes every key from its patch list.

Here each such key keeps its patch list (the save and a later merge that reads this model as a source compute
it from that list, as before) and also gets the merged tensor, computed now exactly as the save computes it
(`checkpoint_writer.live_weight`: ComfyUI's calculate_weight in float32, stochastic rounding to the weight's
dtype), as a ModelPatcher object patch, which `patch_model` sets on every load. These tensors are small.
Not on ComfyUI 0.33's dynamic-VRAM patcher for a buffer (SD3's `pos_embed`): see `refresh_object_patches`.
"""
from __future__ import annotations

import torch

from . import comfy_internals

MARKER = "_elemental_merged"


def _identity(a, **kwargs):
    return a


def merged_value(patcher, key: str):
    """`key`'s merged tensor from its patch list (None: no patches), on the device and in the dtype of the
    tensor it replaces."""
    patches = patcher.patches.get(key)
    if not patches:
        return None
    from .checkpoint_writer import live_weight
    weight = comfy_internals.unobjected_weight(patcher, key)
    out = live_weight([(weight, _identity)] + list(patches), key, patcher.load_device)
    return out.to(weight.device)


def refresh_object_patches(patcher, keys) -> list:
    """Sets, renews or removes the object patch of each of `keys` that ComfyUI's load path never patches, from
    its patch list now; returns those keys."""
    keys = [k for k in keys if isinstance(k, str)]
    if not keys:
        return []
    unreached = comfy_internals.unpatchable_keys(patcher, keys)
    if comfy_internals.is_dynamic(patcher):
        # ComfyUI 0.33's dynamic-VRAM loader backs buffers up after `patch_model` and puts that backup back
        # after the object patches are undone, which would leave the merged buffer in A's model: buffers keep
        # A's live value there (the save still writes them merged).
        unreached = [k for k in unreached
                     if isinstance(comfy_internals.unobjected_weight(patcher, k), torch.nn.Parameter)]
    for key in unreached:
        comfy_internals.set_object_patch(patcher, key, merged_value(patcher, key), MARKER)
    return unreached

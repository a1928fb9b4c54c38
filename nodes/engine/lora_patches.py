"""A LoRA as per-key ModelPatcher patches, each key at its own strength: the engine of `ElementalLoRA`.

ComfyUI's `LoraLoader` parses a LoRA file into one patch per model key (`comfy.lora.load_lora` with the key
maps of the model and the text encoder) and adds them all at one strength. Here the same parse is used, so
every format ComfyUI loads works (kohya, LyCORIS LoHa/LoKr/LoCon, diffusers/PEFT, Flux, the Qwen-Image, Wan
and Z-Image formats listed in docs/lora-block-weight.md, and the rest), and each key's patch is added at
``strength x ratio(key)``. The patch tuples are exactly `LoraLoader`'s, so at ratio 1 a key's weight is bit
for bit what `LoraLoader` gives; a key at strength 0 gets no patch at all and keeps the base weight exactly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import comfy.lora
import comfy.lora_convert
import comfy.utils

# path -> (mtime, state dict, metadata): the last LoRA read, as LoraLoader keeps it
_FILE_CACHE: dict[str, tuple[float, dict, dict | None]] = {}
METADATA_ATTACHMENT = "lora_metadata"  # where LoraLoader (0.33) attaches a LoRA file's metadata to the patcher


def read_lora(path: str) -> tuple[dict, dict | None]:
    """The LoRA file's (tensors, safetensors metadata); the last file read is kept, so re-queueing with new
    weights is cheap."""
    mtime = os.path.getmtime(path)
    hit = _FILE_CACHE.get(path)
    if hit is not None and hit[0] == mtime:
        return hit[1], hit[2]
    sd, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    _FILE_CACHE.clear()
    _FILE_CACHE[path] = (mtime, sd, metadata)
    return sd, metadata


def attach_metadata(patcher, metadata: dict | None) -> None:
    """Attaches the LoRA file's metadata to a patched clone as ComfyUI's own LoraLoader does since 0.33 (for
    nodes that read what was applied; on older versions too); nothing where the file has none."""
    if metadata and hasattr(patcher, "set_attachments"):
        patcher.set_attachments(METADATA_ATTACHMENT, metadata)


def patch_key(k) -> str:
    """The model key of a patch-dict key (Flux's fused qkv LoRAs use (key, offset) tuples)."""
    return k if isinstance(k, str) else k[0]


@dataclass
class ParsedLoRA:
    """A LoRA file parsed against one model/CLIP pair, split by the object each patch belongs to."""
    unet: dict = field(default_factory=dict)     # patch key -> adapter, for the MODEL
    clip: dict = field(default_factory=dict)     # patch key -> adapter, for the CLIP
    unmatched: list = field(default_factory=list)  # patch keys that are in neither

    def model_keys(self) -> list[str]:
        """The model keys patched, each once, in patch order: the slices of one fused weight (Flux's and
        Z-Image's q/k/v LoRAs on ComfyUI's fused qkv) are one key, with one block and one strength."""
        return list(dict.fromkeys(patch_key(k) for k in list(self.unet) + list(self.clip)))


def parse_lora(lora_sd: dict, model, clip) -> ParsedLoRA:
    """ComfyUI's own parse (`comfy.sd.load_lora_for_models` without adding the patches)."""
    key_map = {}
    if model is not None:
        key_map = comfy.lora.model_lora_keys_unet(model.model, key_map)
    if clip is not None:
        key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, key_map)
    loaded = comfy.lora.load_lora(comfy.lora_convert.convert_lora(lora_sd), key_map)
    unet_keys = set(model.model_state_dict()) if model is not None else set()
    clip_keys = set(clip.patcher.model_state_dict()) if clip is not None else set()
    out = ParsedLoRA()
    for k, adapter in loaded.items():
        key = patch_key(k)
        if key in unet_keys:
            out.unet[k] = adapter
        elif key in clip_keys:
            out.clip[k] = adapter
        else:
            out.unmatched.append(k)
    return out


def add_scaled_patches(target, patches: dict, strength: float, ratio_of) -> dict:
    """Adds every patch at ``strength * ratio_of(key)`` to ``target`` (ModelPatcher or CLIP).

    One `add_patches` call per distinct strength (each call walks the model's whole state dict). Returns
    model key -> the strength it got (0 for the keys left unpatched).
    """
    groups: dict[float, dict] = {}
    applied: dict[str, float] = {}
    for k, adapter in patches.items():
        s = float(strength) * float(ratio_of(patch_key(k)))
        applied[patch_key(k)] = s
        if s != 0.0:
            groups.setdefault(s, {})[k] = adapter
    for s, group in groups.items():
        target.add_patches(group, s)
    return applied

"""Flux's RMSNorm parameters: ``.scale`` in files, ``.weight`` inside ComfyUI 0.33; the one mapping between them.

Flux files (and ComfyUI 0.3.75's model) name the q/k RMSNorm parameters ``..._norm.scale``. ComfyUI 0.33's
Flux model config renames every UNet key ending in ``_norm.scale`` to ``_norm.weight`` when it loads a model
(``supported_models.Flux.process_unet_state_dict``; Flux2 inherits it). In Flux those are exactly the q/k norms
of the attention blocks, 152 of the 1196 keys of Flux dev:

    double_blocks.N.img_attn.norm.query_norm   double_blocks.N.img_attn.norm.key_norm
    double_blocks.N.txt_attn.norm.query_norm   double_blocks.N.txt_attn.norm.key_norm
    single_blocks.N.norm.query_norm            single_blocks.N.norm.key_norm

The text encoders' ``layer_norm.weight`` / ``final_layer_norm.weight`` are ``.weight`` in files too and are
never renamed, so the mapping names the renamed paths exactly instead of any ``_norm`` suffix.

`file_name` gives the file name (the one SuperMerger sees and the canonical name), `comfy_name` the 0.33
internal one; both keep any prefix (``model.diffusion_model.``, ``diffusion_model.`` or none) and leave every
other key as it is. `file_element` turns a spec element written against the 0.33 names (``query_norm.weight``)
into the file name's element.
"""
from __future__ import annotations

import re

_RENAMED = re.compile(r"^((?:(?:model\.)?diffusion_model\.)?"
                      r"(?:double_blocks\.\d+\.(?:img|txt)_attn\.norm|single_blocks\.\d+\.norm)\.(?:query|key)_norm)"
                      r"\.(scale|weight)$")
FILE_SUFFIX = "scale"     # the parameter's name in Flux files and in ComfyUI 0.3.75
COMFY_SUFFIX = "weight"   # its name inside ComfyUI 0.33
_ELEMENT = re.compile(r"((?:query|key)_norm)\.weight")


def is_renamed_norm(key: str) -> bool:
    """Whether ``key`` (either naming, any prefix) is one of the Flux q/k RMSNorm parameters."""
    return _RENAMED.match(key) is not None


def file_name(key: str) -> str:
    """``key`` as Flux files name it: ``..._norm.weight`` -> ``..._norm.scale`` for the q/k norms."""
    m = _RENAMED.match(key)
    return f"{m.group(1)}.{FILE_SUFFIX}" if m else key


def comfy_name(key: str) -> str:
    """``key`` as ComfyUI 0.33 names it inside the model: ``..._norm.scale`` -> ``..._norm.weight``."""
    m = _RENAMED.match(key)
    return f"{m.group(1)}.{COMFY_SUFFIX}" if m else key


def file_element(word: str) -> str:
    """A spec element in file naming: ``query_norm.weight`` / ``key_norm.weight`` (what ComfyUI 0.33 shows)
    become ``.scale``; every other word (``weight``, ``norm.weight``, ``query_norm``) is kept as written."""
    return _ELEMENT.sub(rf"\1.{FILE_SUFFIX}", word)

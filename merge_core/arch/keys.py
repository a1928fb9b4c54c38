"""One canonical, checkpoint-style name for every parameter, whatever form it was given in.

Spec elements are substrings of parameter names, and the same parameter has several names: the one in a
checkpoint file and the ones ComfyUI uses inside its model and CLIP patchers. Elements are matched against
the canonical (checkpoint-file) name, so an element written for either form selects the same parameter.

Forms accepted, and the canonical name they become (arch in brackets):

==========================================  ==================================================================
given                                       canonical
==========================================  ==================================================================
``model.diffusion_model.X``  (all)          unchanged
``diffusion_model.X``  (model patcher)      ``model.diffusion_model.X``
``clip_l.X``  [sd1]                         ``cond_stage_model.X``  (``clip_l.transformer.text_model.Y`` ->
                                            ``cond_stage_model.transformer.text_model.Y``)
``clip_h.transformer.text_model.Y`` [sd2]   ``cond_stage_model.model.<OpenCLIP name of Y>``
``clip_l.X``  [sdxl]                        ``conditioner.embedders.0.X``
``clip_g.transformer.text_model.Y`` [sdxl]  ``conditioner.embedders.1.model.<OpenCLIP name of Y>``
``clip_l.X`` ``clip_g.X`` ``t5xxl.X``       ``text_encoders.clip_l.X`` etc. (ComfyUI's own checkpoint form)
[flux, sd3]
``..._norm.weight`` of Flux's q/k norms     ``..._norm.scale`` (the file name; ComfyUI 0.33 renames these on
(any UNet form)                             load, 0.3.75 does not: see `merge_core.flux_names`)
==========================================  ==================================================================

SD2's CLIP-H and SDXL's CLIP-G are stored in OpenCLIP naming in checkpoint files but in Hugging Face naming
inside ComfyUI. The translation is by table (`_OPENCLIP_NAMES`); ComfyUI's separate q/k/v projections all
map to OpenCLIP's fused ``attn.in_proj_weight`` / ``in_proj_bias`` (the same weights, so one ratio), which makes
the mapping many-to-one there: `canonical_key` is a name for matching, not an invertible conversion.
With ``arch=None`` the text-encoder form is guessed from the prefix: ``clip_l`` alone -> SD1, ``clip_g`` ->
SDXL, ``clip_h`` -> SD2, ``t5xxl`` -> ``text_encoders.``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..cache import cached
from .flux_names import file_name as _flux_file_name

UNET_PREFIX = "model.diffusion_model."
# Text-encoder keys no merge changes (ComfyUI's native CLIP merge leaves them alone too): buffers and scalars.
UNMERGED_TEXT_SUFFIXES = (".position_ids", ".logit_scale")
OPENCLIP = "openclip"  # a text encoder stored in OpenCLIP naming in checkpoint files


@dataclass(frozen=True)
class TextEncoder:
    """One text encoder of an architecture (declared on its record): ComfyUI's key prefix (``clip_l.``) and
    the checkpoint's; `naming` OPENCLIP when the checkpoint holds it in OpenCLIP naming."""
    comfy_prefix: str
    checkpoint_prefix: str
    naming: str = "hf"

    def convert(self, rest: str) -> str:
        """The checkpoint name of ComfyUI's ``<comfy_prefix><rest>``."""
        if self.naming == OPENCLIP:
            return _openclip(self.checkpoint_prefix, rest)
        return self.checkpoint_prefix + rest

# Hugging Face CLIP text-model names (after ``text_model.``) -> OpenCLIP names (after ``model.``).
_OPENCLIP_NAMES: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p), r) for p, r in (
    (r"^encoder\.layers\.(\d+)\.self_attn\.[qkv]_proj\.(weight|bias)$", r"transformer.resblocks.\1.attn.in_proj_\2"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"transformer.resblocks.\1.attn.out_proj."),
    (r"^encoder\.layers\.(\d+)\.layer_norm1\.", r"transformer.resblocks.\1.ln_1."),
    (r"^encoder\.layers\.(\d+)\.layer_norm2\.", r"transformer.resblocks.\1.ln_2."),
    (r"^encoder\.layers\.(\d+)\.mlp\.fc1\.", r"transformer.resblocks.\1.mlp.c_fc."),
    (r"^encoder\.layers\.(\d+)\.mlp\.fc2\.", r"transformer.resblocks.\1.mlp.c_proj."),
    (r"^embeddings\.token_embedding\.", r"token_embedding."),
    (r"^embeddings\.position_embedding\.weight$", r"positional_embedding"),
    (r"^final_layer_norm\.", r"ln_final."),
))


def _openclip(prefix: str, rest: str) -> str:
    """``rest`` follows ``clip_X.``; returns ``prefix`` + OpenCLIP name."""
    if rest.startswith("transformer.text_model."):
        name = rest[len("transformer.text_model."):]
        for pattern, repl in _OPENCLIP_NAMES:
            new, n = pattern.subn(repl, name, count=1)
            if n:
                return prefix + new
        return prefix + name  # no OpenCLIP counterpart (position_ids): keep the name under the prefix
    if rest == "transformer.text_projection.weight":
        return prefix + "text_projection"
    return prefix + rest  # logit_scale and the like


@cached(maxsize=None)
def _text_encoders(arch_name: str | None) -> tuple[TextEncoder, ...]:
    """The architecture's text encoders; without one (or an unknown name), those of the first architecture
    that has the key's prefix is used instead (`_guess`)."""
    from .architectures import ARCHITECTURES  # the records import this module

    a = ARCHITECTURES.get(arch_name or "")
    return a.text_encoders if a is not None else ()


@cached(maxsize=None)
def _guess(prefix_of_key: str) -> tuple[TextEncoder, ...]:
    """Without an architecture: the text encoders of the first record (in table order: SD1, SD2, SDXL,
    Flux, SD3) with a text encoder under this ComfyUI prefix."""
    from .architectures import ARCHITECTURES

    for a in ARCHITECTURES.values():
        if any(t.comfy_prefix == prefix_of_key for t in a.text_encoders):
            return a.text_encoders
    return ()


@cached(maxsize=65536)
def _canonical(key: str, arch_name: str | None) -> str:
    if key.startswith(UNET_PREFIX):
        return _flux_file_name(key)
    if key.startswith("diffusion_model."):
        return _flux_file_name("model." + key)
    encoders = _text_encoders(arch_name)
    if not encoders:
        dot = key.find(".")
        encoders = _guess(key[:dot + 1]) if dot > 0 else ()
    for enc in encoders:
        if key.startswith(enc.comfy_prefix):
            return enc.convert(key[len(enc.comfy_prefix):])
    return key


def canonical_key(key: str, arch=None) -> str:
    """The checkpoint-style name of ``key`` (any accepted form); ``arch`` is an Architecture or a name."""
    name = arch if isinstance(arch, str) or arch is None else arch.name
    return _canonical(key, name)

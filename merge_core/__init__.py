"""merge_core: which block every parameter belongs to and what ratio it gets (pure torch + stdlib).

The core of the Elemental Merge node pack, usable without ComfyUI:

* `architectures`: one block table per architecture (SD1, SD2, SDXL, Flux, SD3), key -> block, detection.
* `keys`: one canonical checkpoint-style name for checkpoint and ComfyUI key forms.
* `spec`: the elemental spec language (``blocks:elements:ratio``) with positioned diagnostics.
* `block_weights`: SuperMerger weight strings and presets.
* `ratios`: per-key ratio resolution, the change report, and the preview CLI.
* `methods`: the merge-method registry (formulas and equivalent ModelPatcher steps).

Block names
-----------
SD1/SD2: ``BASE, IN00..IN11, M00, OUT00..OUT11`` (time_embed -> IN00, ``out.`` -> OUT11, text encoder -> BASE).
SDXL: ``BASE, IN00..IN08, M00, OUT00..OUT08`` (time_embed, label_emb -> IN00, ``out.`` -> OUT08, both text
encoders -> BASE). Flux (SuperMerger's names): ``CLIP, T5, IN, D00..D18, S00..S37, OUT``.
SD3 (ours, in the Flux style): ``CLIP`` (clip_l and clip_g), ``T5`` (t5xxl), ``IN`` (x_embedder, pos_embed,
t_embedder, y_embedder, context_embedder), ``J00..J37`` (joint_blocks.N; SD3-medium has J00..J23), ``OUT``
(final_layer). VAE keys belong to no block and are never merged.

Key forms
---------
Checkpoint (``model.diffusion_model.``, ``cond_stage_model.``, ``conditioner.embedders.N.``,
``text_encoders.clip_l|clip_g|t5xxl.``) and ComfyUI's (``diffusion_model.``, ``clip_l.``, ``clip_g.``,
``clip_h.``, ``t5xxl.``) are accepted everywhere; elements match the canonical checkpoint name. See
`merge_core.keys` for the table (SDXL clip_g / SD2 clip_h map to OpenCLIP names).
"""
from .architectures import ARCHITECTURES, Architecture, detect_architecture, get_architecture
from .block_weights import (expected_counts, list_presets, load_user_presets, parse_block_weights,
                            sd1_to_sdxl)
from .diagnostics import Diagnostic, MergeSpecError
from .keys import canonical_key
from .methods import MERGE_METHODS, MergeMethod, PatchStep, apply_steps, get_merge_method
from .spec import ElementalSpec, SpecEntry, describe_blocks, parse_spec, validate_spec

__all__ = [
    "ARCHITECTURES", "Architecture", "detect_architecture", "get_architecture",
    "expected_counts", "list_presets", "load_user_presets", "parse_block_weights", "sd1_to_sdxl",
    "Diagnostic", "MergeSpecError", "canonical_key",
    "MERGE_METHODS", "MergeMethod", "PatchStep", "apply_steps", "get_merge_method",
    "Change", "Resolution", "format_change_report", "resolve_ratios",
    "ElementalSpec", "SpecEntry", "describe_blocks", "parse_spec", "validate_spec",
]


# `merge_core.ratios` is also run as a script (python -m merge_core.ratios); importing it here eagerly would
# make runpy warn that the module is already loaded. Its names are loaded on first use instead (PEP 562).
_LAZY = {"Change", "Resolution", "format_change_report", "resolve_ratios"}


def __getattr__(name):
    if name in _LAZY:
        from . import ratios
        return getattr(ratios, name)
    raise AttributeError(f"module 'merge_core' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _LAZY)

"""merge_core: which block every parameter belongs to and what ratio it gets (pure torch + stdlib).

The core of the Elemental Merge node pack, usable without ComfyUI:

* `architectures`: one block table per architecture (SD1, SD2, SDXL, Flux, SD3), key -> block, detection.
* `keys`: one canonical checkpoint-style name for checkpoint and ComfyUI key forms.
* `spec`: the elemental spec language (``blocks:elements:ratio``) with positioned diagnostics.
* `block_weights`: SuperMerger weight strings and presets.
* `resolve`: per-key ratio resolution (`resolve_ratios`); `report`: the change report; `__main__`: the preview
  CLI (``python -m merge_core``).
* `validation`: is a spec / weight string valid, and which architecture did the user mean.
* `methods`: the merge-method registry (formulas and equivalent ModelPatcher steps).
* `plot.axes`: the XY/XYZ-plot axis table and diff-checker targets, parsed into each cell's settings.
* `elements`: element names per block (editor completion).
* `checkpoint_header`: a file's architecture from its safetensors header (not imported here: it needs torch
  through `safetensors_stream`, and ``import merge_core`` stays light for the CLI and the editor's routes).
* `cache` / `key_index`: every memo behind functools.lru_cache; `clear_caches()` empties them all.

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
from .arch.architectures import ARCHITECTURES, Architecture, detect_architecture, get_architecture
from .text.block_weights import (expected_counts, list_presets, load_user_presets, parse_block_weights,
                            sd1_to_sdxl)
from .cache import clear_caches
from .diagnostics import Diagnostic, MergeSpecError
from .arch.elements import element_of, elements_by_block
from .arch.keys import canonical_key
from .merge.methods import MERGE_METHODS, MergeMethod, PatchStep, apply_steps, get_merge_method
from .merge.report import format_change_report
from .merge.resolve import Change, Resolution, resolve_ratios
from .text.spec import ParsedSpec, SpecEntry, describe_blocks, parse_spec, validate_spec
from .text.validation import AUTO, ArchitectureFit, closest_architecture, text_problem, validate_block_weights

__all__ = [
    "ARCHITECTURES", "Architecture", "detect_architecture", "get_architecture",
    "expected_counts", "list_presets", "load_user_presets", "parse_block_weights", "sd1_to_sdxl",
    "clear_caches",
    "Diagnostic", "MergeSpecError", "canonical_key", "element_of", "elements_by_block",
    "MERGE_METHODS", "MergeMethod", "PatchStep", "apply_steps", "get_merge_method",
    "Change", "Resolution", "format_change_report", "resolve_ratios",
    "ParsedSpec", "SpecEntry", "describe_blocks", "parse_spec", "validate_spec",
    "AUTO", "ArchitectureFit", "closest_architecture", "text_problem", "validate_block_weights",
]

"""Save Merged Checkpoint / Save Merged Diffusion Model: a merge saved as a checkpoint the stock loaders load,
streamed one tensor at a time (nodes/checkpoint_writer.py), with its complete recipe in the metadata.

The file holds what the live merge computes: each weight by ComfyUI's own patch arithmetic, cast to the chosen
precision (fp8 keeps norms, biases, embeddings and the VAE in fp16, see docs/saving.md). The metadata follows
ComfyUI's own `save_checkpoint` (modelspec architecture, predict key; v_pred/ztsnr/EDM tensors come from the
writer) plus `elemental_merge_recipe`: the recipe document (docs/recipe.md) with every source file's sha256.
"""
from __future__ import annotations

import json
import os

import folder_paths

try:
    from comfyui_version import __version__ as COMFYUI_VERSION
except ImportError:  # a ComfyUI tree without the generated version file
    COMFYUI_VERSION = "unknown"

from ..merge_core.recipes import recipe as recipes
from ..merge_core.files.save_dtypes import PRECISIONS
from .engine import model_info
from .engine import runtime
from .engine.checkpoint_writer import modelspec, sampling_extras, save_checkpoint_streaming
from .sockets.common import CATEGORY, RECIPE_METADATA_KEY, io, log, unused_checkpoint_path

SAVE_PRECISIONS = list(PRECISIONS)  # fp16, bf16, fp32 (the original choices, in their order), then fp8

def checkpoint_metadata(model, title: str, precision: str, prompt=None, extra_pnginfo=None) -> dict:
    """safetensors metadata: the recipe always; the prompt and workflow unless ComfyUI disables metadata."""
    metadata = {"format": "pt", **modelspec(model, title), **sampling_extras(model)[0]}
    doc = model_info.recipe_document(model, COMFYUI_VERSION, save={"precision": precision})
    if doc is not None:
        metadata[RECIPE_METADATA_KEY] = recipes.dumps(doc)
    if runtime.metadata_enabled():
        if prompt is not None:
            metadata["prompt"] = json.dumps(prompt)
        for k, v in (extra_pnginfo or {}).items():
            metadata[k] = json.dumps(v)
    return metadata


def save(model, clip, vae, filename_prefix: str, precision: str, hidden) -> str:
    """Writes the file under the output folder (never over an existing one); returns its relative path."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}' (valid: {', '.join(PRECISIONS)})")
    output_dir = folder_paths.get_output_directory()
    path = unused_checkpoint_path(filename_prefix, output_dir)
    title = os.path.splitext(os.path.basename(path))[0]
    metadata = checkpoint_metadata(model, title, precision, hidden.prompt, hidden.extra_pnginfo)
    save_checkpoint_streaming(path, model, clip, vae, precision, metadata)
    log.info("[Elemental Merge] saved %s", path)
    return os.path.relpath(path, output_dir)


class SaveMergedCheckpoint(io.ComfyNode):
    """Saves MODEL (+ CLIP, VAE) as safetensors with the merge recipe in the file's metadata."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SaveMergedCheckpoint", display_name="Save Merged Checkpoint", category=CATEGORY,
            description="Saves a checkpoint that the stock Load Checkpoint loads, one tensor at a time (little "
                        "memory beyond the loaded models), with the complete merge recipe and each source's "
                        f"sha256 in its metadata ('{RECIPE_METADATA_KEY}'); never overwrites a file. fp8 keeps "
                        "biases, norms, embeddings and the VAE in fp16.",
            inputs=[io.Model.Input("model"), io.Clip.Input("clip", optional=True),
                    io.Vae.Input("vae", optional=True),
                    io.String.Input("filename_prefix", default="checkpoints/ElementalMerge"),
                    io.Combo.Input("precision", options=SAVE_PRECISIONS, default="fp16")],
            outputs=[],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, filename_prefix, precision, clip=None, vae=None):
        rel = save(model, clip, vae, filename_prefix, precision, cls.hidden)
        return io.NodeOutput(ui={"text": [rel]})


class SaveMergedDiffusionModel(io.ComfyNode):
    """Saves only the diffusion model (Flux, SD3 and others that load with the stock Load Diffusion Model)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SaveMergedDiffusionModel", display_name="Save Merged Diffusion Model", category=CATEGORY,
            description="Saves the merged diffusion model alone (no text encoder, no VAE), loadable by the stock "
                        "Load Diffusion Model from models/diffusion_models, streamed one tensor at a time, with "
                        f"the merge recipe in its metadata ('{RECIPE_METADATA_KEY}').",
            inputs=[io.Model.Input("model"),
                    io.String.Input("filename_prefix", default="diffusion_models/ElementalMerge"),
                    io.Combo.Input("precision", options=SAVE_PRECISIONS, default="fp16")],
            outputs=[],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, filename_prefix, precision):
        rel = save(model, None, None, filename_prefix, precision, cls.hidden)
        return io.NodeOutput(ui={"text": [rel]})


NODES = [SaveMergedCheckpoint, SaveMergedDiffusionModel]

"""Save Merged Checkpoint: ComfyUI's checkpoint save plus the merge recipe, a precision choice, and a file
name that never overwrites.

The extra keys and modelspec metadata follow ComfyUI's own `comfy_extras.nodes_model_merging.save_checkpoint`
(read from 0.3.75): `v_pred` and `ztsnr` for v-prediction models (zero terminal SNR when the model sampling
says so), `edm_vpred.sigma_max/min` for EDM v-prediction, and the modelspec architecture, so a saved merge
reloads with the same sampling as the live one.
"""
from __future__ import annotations

import json
import os

import comfy.model_base
import comfy.model_management
import comfy.model_sampling
import comfy.utils
import folder_paths
import torch
from comfy.cli_args import args

from . import model_info
from .common import CATEGORY, RECIPE_METADATA_KEY, io, log, unused_path

SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

# (model_base class name, modelspec.architecture), first match wins: subclasses before their bases.
MODELSPEC_ARCHITECTURES = (
    ("SDXL_instructpix2pix", "stable-diffusion-xl-v1-edit"),
    ("SDXL", "stable-diffusion-xl-v1-base"),
    ("SDXLRefiner", "stable-diffusion-xl-v1-refiner"),
    ("SVD_img2vid", "stable-video-diffusion-img2vid-v1"),
    ("SD3", "stable-diffusion-v3-medium"),
)


def unused_checkpoint_path(filename_prefix: str, output_dir: str) -> str:
    """`<prefix>_00001_.safetensors`-style name like the stock node, never one that exists."""
    folder, filename, counter, _, _ = folder_paths.get_save_image_path(filename_prefix, output_dir)
    return unused_path(folder, filename, "safetensors", counter)[0]


def _modelspec(model, title: str) -> dict:
    for class_name, architecture in MODELSPEC_ARCHITECTURES:
        cls = getattr(comfy.model_base, class_name, None)
        if cls is not None and isinstance(model.model, cls):
            return {"modelspec.architecture": architecture, "modelspec.sai_model_spec": "1.0.0",
                    "modelspec.implementation": "sgm", "modelspec.title": title}
    return {}


def sampling_extras(model) -> tuple[dict, dict]:
    """(metadata, extra tensors) that tell a loader how the model samples, as ComfyUI's own save writes them."""
    metadata, extra = {}, {}
    sampling = model.get_model_object("model_sampling")
    if isinstance(sampling, comfy.model_sampling.ModelSamplingContinuousEDM) and \
            isinstance(sampling, comfy.model_sampling.V_PREDICTION):
        extra["edm_vpred.sigma_max"] = torch.tensor(sampling.sigma_max).float()
        extra["edm_vpred.sigma_min"] = torch.tensor(sampling.sigma_min).float()
    if model.model.model_type == comfy.model_base.ModelType.EPS:
        metadata["modelspec.predict_key"] = "epsilon"
    elif model.model.model_type == comfy.model_base.ModelType.V_PREDICTION:
        metadata["modelspec.predict_key"] = "v"
        extra["v_pred"] = torch.tensor([])
        if getattr(sampling, "zsnr", False):
            extra["ztsnr"] = torch.tensor([])
    return metadata, extra


def checkpoint_metadata(model, title: str, prompt=None, extra_pnginfo=None) -> dict:
    """safetensors metadata: the recipe always; the prompt and workflow unless ComfyUI disables metadata."""
    metadata = {"format": "pt", **_modelspec(model, title), **sampling_extras(model)[0]}
    recipe = model_info.recipe_of(model)
    if recipe is not None:
        metadata[RECIPE_METADATA_KEY] = json.dumps(recipe, sort_keys=True)
    if not args.disable_metadata:
        if prompt is not None:
            metadata["prompt"] = json.dumps(prompt)
        for k, v in (extra_pnginfo or {}).items():
            metadata[k] = json.dumps(v)
    return metadata


def save_merged(path: str, model, clip, vae, dtype: torch.dtype, metadata: dict) -> None:
    """Computes the patched weights (ComfyUI's own patch path, forced) and writes one safetensors file."""
    to_load = [model]
    clip_sd = None
    if clip is not None:
        to_load.append(clip.load_model())
        clip_sd = clip.get_sd()
    vae_sd = vae.get_sd() if vae is not None else None
    comfy.model_management.load_models_gpu(to_load, force_patch_weights=True)
    sd = model.model.state_dict_for_saving(clip_sd, vae_sd, None)
    out = {k: (t.to(dtype) if t.is_floating_point() else t).contiguous() for k, t in sd.items()}
    out.update(sampling_extras(model)[1])  # stored as ComfyUI stores them, whatever the precision
    comfy.utils.save_torch_file(out, path, metadata=metadata)


class SaveMergedCheckpoint(io.ComfyNode):
    """Saves MODEL (+ CLIP, VAE) as safetensors with the merge recipe in the file's metadata."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SaveMergedCheckpoint", display_name="Save Merged Checkpoint", category=CATEGORY,
            description="Saves a checkpoint with the elemental merge recipe in its metadata "
                        f"('{RECIPE_METADATA_KEY}'); never overwrites a file.",
            inputs=[io.Model.Input("model"), io.Clip.Input("clip", optional=True),
                    io.Vae.Input("vae", optional=True),
                    io.String.Input("filename_prefix", default="checkpoints/ElementalMerge"),
                    io.Combo.Input("precision", options=list(SAVE_DTYPES), default="fp16")],
            outputs=[],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, filename_prefix, precision, clip=None, vae=None):
        output_dir = folder_paths.get_output_directory()
        path = unused_checkpoint_path(filename_prefix, output_dir)
        title = os.path.splitext(os.path.basename(path))[0]
        metadata = checkpoint_metadata(model, title, cls.hidden.prompt, cls.hidden.extra_pnginfo)
        save_merged(path, model, clip, vae, SAVE_DTYPES[precision], metadata)
        rel = os.path.relpath(path, output_dir)
        log.info("[Elemental Merge] saved %s", path)
        return io.NodeOutput(ui={"text": [rel]})


NODES = [SaveMergedCheckpoint]

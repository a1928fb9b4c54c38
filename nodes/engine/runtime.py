"""ComfyUI's public services that the node modules use, so that no node module imports `comfy` itself: the
checkpoint loader as Load Checkpoint calls it, the sampler and scheduler lists, `--disable-metadata`, the
weight dtypes this ComfyUI would load a model in, and the progress bar."""
from __future__ import annotations

import comfy.model_management
import comfy.samplers
import comfy.sd
import comfy.supported_models
import comfy.utils
import folder_paths
from comfy.cli_args import args


def load_checkpoint(name: str, output_vae: bool = True, output_clip: bool = True) -> tuple:
    """(MODEL, CLIP, VAE) of checkpoint `name` from the checkpoints folder, loaded as Load Checkpoint does."""
    path = folder_paths.get_full_path_or_raise("checkpoints", name)
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
        path, output_vae=output_vae, output_clip=output_clip,
        embedding_directory=folder_paths.get_folder_paths("embeddings"))
    return model, clip, vae


def sampler_names() -> list:
    return comfy.samplers.KSampler.SAMPLERS


def scheduler_names() -> list:
    return comfy.samplers.KSampler.SCHEDULERS


def metadata_enabled() -> bool:
    """False when ComfyUI runs with --disable-metadata: then no prompt or workflow goes into saved files."""
    return not args.disable_metadata


def load_dtypes(config_class: str | None, unet_params: int, unet_file_dtype) -> dict:
    """{"unet": dtype, "clip": dtype}: what this ComfyUI (device, flags such as --fp16-unet) holds a loaded
    model's diffusion model and text encoders in, as its checkpoint loader decides them (`unet_dtype` with the
    config's supported dtypes and the file's own weight dtype; `text_encoder_dtype`)."""
    config = getattr(comfy.supported_models, config_class, None) if config_class else None
    supported = getattr(config, "supported_inference_dtypes", None)
    kwargs = {"model_params": unet_params, "weight_dtype": unet_file_dtype}
    if supported:
        kwargs["supported_dtypes"] = supported
    return {"unet": comfy.model_management.unet_dtype(**kwargs),
            "clip": comfy.model_management.text_encoder_dtype()}


def progress_bar(total: int):
    """ComfyUI's progress bar on the running node (`update_absolute(done, total)`)."""
    return comfy.utils.ProgressBar(total)

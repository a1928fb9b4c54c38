"""ComfyUI's public services that the node modules use, so that no node module imports `comfy` itself: the
checkpoint loader as Load Checkpoint calls it, the sampler and scheduler lists, and `--disable-metadata`."""
from __future__ import annotations

import comfy.samplers
import comfy.sd
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

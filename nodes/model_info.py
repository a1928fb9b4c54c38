"""What a ComfyUI MODEL/CLIP is, as far as a merge cares: its architecture, its name and its merge recipe.

ComfyUI already decided what a checkpoint is when it loaded it (the `model_config` class picked by its model
detection), so that is asked first; only a model whose config class is not in the table below (a custom
loader, a distilled SDXL variant) falls back to merge_core's key-based detection. The name and the recipe
ride on the ModelPatcher's `model_options`, which `ModelPatcher.clone()` deep-copies: every node downstream
(LoRA loaders, samplers, our save node) sees them, and the source patcher is never changed by a merge.
"""
from __future__ import annotations

from ..merge_core import detect_architecture, get_architecture

# ComfyUI's supported_models class name -> merge_core architecture. Subclasses with another block layout
# (SSD-1B, Vega, KOALA, the SDXL refiner) are left out on purpose: key detection decides for them.
ARCH_BY_CONFIG_CLASS = {
    "SD15": "sd1",
    "SD15_instructpix2pix": "sd1",
    "SD20": "sd2",
    "SD21UnclipL": "sd2",
    "SD21UnclipH": "sd2",
    "SDXL": "sdxl",
    "SDXL_instructpix2pix": "sdxl",
    "SD3": "sd3",
    "Flux": "flux",
    "FluxInpaint": "flux",
    "FluxSchnell": "flux",
}

SOURCE_KEY = "elemental_merge_source"   # model_options entry: the checkpoint file name
RECIPE_KEY = "elemental_merge_recipe"   # model_options entry: the recipe of a merged model (a JSON-able dict)
UNET_PREFIX = "diffusion_model."
CLIP_SKIP_SUFFIXES = (".position_ids", ".logit_scale")  # buffers/scalars the native CLIP merge leaves alone


class ArchitectureMismatch(ValueError):
    """Two merge inputs of different architectures (e.g. SD1 with SDXL)."""


def architecture_of(model):
    """The merge_core Architecture of a ComfyUI ModelPatcher, or ValueError when it is none we know."""
    config = getattr(getattr(model, "model", None), "model_config", None)
    name = ARCH_BY_CONFIG_CLASS.get(type(config).__name__) if config is not None else None
    if name is not None:
        return get_architecture(name)
    keys = list(model.model_state_dict().keys())
    try:
        arch = detect_architecture(keys)
    except ValueError:
        arch = None
    if arch is None:
        raise ValueError(f"{model_name(model)}: architecture not supported for elemental merging "
                         f"(ComfyUI model config {type(config).__name__})")
    return arch


def check_same_architecture(models: dict):
    """Architecture shared by all `models` ({input name: ModelPatcher}); ArchitectureMismatch naming both."""
    first_name, first = next(iter(models.items()))
    arch = architecture_of(first)
    for name, model in list(models.items())[1:]:
        other = architecture_of(model)
        if other.name != arch.name:
            raise ArchitectureMismatch(
                f"cannot merge {first_name} ({model_name(first)}, {arch.label}) with {name} "
                f"({model_name(model)}, {other.label}): the architectures differ")
    return arch


def model_name(model) -> str:
    """A human label for a MODEL: the checkpoint name when our loader loaded it, else what we know."""
    options = getattr(model, "model_options", None) or {}
    if SOURCE_KEY in options:
        return str(options[SOURCE_KEY])
    recipe = options.get(RECIPE_KEY)
    if recipe:
        return "merge of (" + ", ".join(str(v) for v in recipe.get("models", {}).values()) + ")"
    return "unnamed model"


def set_source_name(model, name: str) -> None:
    model.model_options[SOURCE_KEY] = name


def recipe_of(model):
    """The recipe attached to a merged ModelPatcher, or None for an unmerged one."""
    return (getattr(model, "model_options", None) or {}).get(RECIPE_KEY)


def attach_recipe(model, recipe: dict) -> None:
    model.model_options[RECIPE_KEY] = recipe
    model.model_options.pop(SOURCE_KEY, None)  # a merge result is no longer the checkpoint A came from


def unet_shapes(model) -> dict:
    """ComfyUI-internal UNet key (`diffusion_model.…`) -> shape, of the model's unpatched weights."""
    sd = model.model_state_dict(filter_prefix=UNET_PREFIX)
    return {k: tuple(v.shape) for k, v in sd.items()}


def clip_shapes(clip) -> dict:
    """Text-encoder key -> shape for the floating-point weights a merge may touch."""
    sd = clip.patcher.model_state_dict()
    return {k: tuple(v.shape) for k, v in sd.items()
            if not k.endswith(CLIP_SKIP_SUFFIXES) and v.is_floating_point()}

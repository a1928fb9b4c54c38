"""What a ComfyUI MODEL/CLIP is, as far as a merge cares: its architecture, its name and its merge recipe.

ComfyUI already decided what a checkpoint is when it loaded it (the `model_config` class picked by its model
detection), so that is asked first; only a model whose config class is not in the table below (a custom
loader, a distilled SDXL variant) falls back to merge_core's key-based detection. The name and the recipe
ride on the ModelPatcher's `model_options`, which `ModelPatcher.clone()` deep-copies: every node downstream
(LoRA loaders, samplers, our save node) sees them, and the source patcher is never changed by a merge.
"""
from __future__ import annotations

import copy
import logging
import os

import folder_paths

from ...merge_core import detect_architecture, get_architecture
from ...merge_core.arch import derived
from ...merge_core.arch.keys import UNMERGED_TEXT_SUFFIXES
from ...merge_core.arch.architectures import BY_CONFIG_CLASS
from ...merge_core.recipes import recipe as recipes
from ...merge_core.merge.adjust import NAMES, parse_adjust
from ...merge_core.files.file_hash import file_sha256
from ...merge_core.files.safetensors_stream import read_header
from .comfy_internals import key_patches

log = logging.getLogger("elemental_merge")

# ComfyUI's supported_models class name -> merge_core architecture. Subclasses with another block layout
# (SSD-1B, Vega, KOALA, the SDXL refiner) are left out on purpose: key detection decides for them.
ARCH_BY_CONFIG_CLASS = BY_CONFIG_CLASS  # ComfyUI model-config class name -> architecture, from the records

SOURCE_KEY = "elemental_merge_source"   # model_options entry: the checkpoint file name
RECIPE_KEY = "elemental_merge_recipe"   # model_options entry: the model's recipe node (merge_core.recipe, v2)
LORAS_KEY = "elemental_merge_loras"     # model_options entry ElementalLoRA appends its settings to (lora_nodes)
LORAS_FOLDED_KEY = "elemental_merge_loras_in_recipe"  # how many of those the recipe node already holds
ADJUST_PENDING = "adjust"               # ElementalAdjust appends its 8-value texts to the recipe node here
UNET_PREFIX = "diffusion_model."
CLIP_SKIP_SUFFIXES = UNMERGED_TEXT_SUFFIXES  # buffers/scalars the native CLIP merge leaves alone


class ArchitectureMismatch(ValueError):
    """Two merge inputs of different architectures (e.g. SD1 with SDXL)."""


def architecture_of(model):
    """The merge_core Architecture of a ComfyUI ModelPatcher: the record of its ComfyUI config class, else the
    record its keys show, else (no record, or the record found by keys leaves some of its diffusion-model
    keys outside every block) blocks derived from its own keys (merge_core.arch.derived), registered by name.
    ValueError only for a model with no diffusion-model key at all."""
    config = getattr(getattr(model, "model", None), "model_config", None)
    name = ARCH_BY_CONFIG_CLASS.get(type(config).__name__) if config is not None else None
    if name is not None:
        return get_architecture(name)
    keys = list(model.model_state_dict().keys())
    try:
        arch = detect_architecture(keys)
    except ValueError:
        arch = None
    if arch is not None and not derived.uncovered(arch, keys):
        return arch
    try:
        return derived.derive_and_register(keys, type(config).__name__ if config is not None else "")
    except ValueError as e:
        raise ValueError(f"{model_name(model)}: architecture not supported for elemental merging "
                         f"(ComfyUI model config {type(config).__name__}: {e})") from None


def check_same_architecture(models: dict, labels: dict | None = None):
    """Architecture shared by all `models` ({input name: ModelPatcher}); ArchitectureMismatch naming both, by
    `labels` ({input name: label}) where given (the graph's file names), else by `model_name`."""
    label = lambda name, model: (labels or {}).get(name) or model_name(model)  # noqa: E731
    first_name, first = next(iter(models.items()))
    arch = architecture_of(first)
    for name, model in list(models.items())[1:]:
        other = architecture_of(model)
        if other.name != arch.name:
            raise ArchitectureMismatch(
                f"cannot merge {first_name} ({label(first_name, first)}, {arch.label}) with {name} "
                f"({label(name, model)}, {other.label}): the architectures differ")
    return arch


def model_name(model) -> str:
    """A human label for a MODEL: the checkpoint name when our loader loaded it, else what we know."""
    options = getattr(model, "model_options", None) or {}
    if SOURCE_KEY in options:
        return str(options[SOURCE_KEY])
    node = options.get(RECIPE_KEY)
    if node and node.get("kind") == "merge":
        return "merge of (" + ", ".join(_node_label(s) for s in node["sources"].values()) + ")"
    return "unnamed model"


def _node_label(node: dict) -> str:
    return node["name"] if node.get("kind") == "checkpoint" else "merge"


def set_source_name(model, name: str) -> None:
    """Marks `model` as loaded from checkpoint `name`; a saved merge's own recipe is kept as provenance."""
    model.model_options[SOURCE_KEY] = name
    model.model_options[RECIPE_KEY] = checkpoint_recipe(name)
    model.model_options[LORAS_FOLDED_KEY] = len(model.model_options.get(LORAS_KEY, []))


def checkpoint_recipe(name: str) -> dict:
    """The recipe node of checkpoint `name` as loaded (with a saved merge's own recipe as provenance)."""
    return recipes.checkpoint_node(name, recipe=_embedded_recipe(name))


def _embedded_recipe(name: str) -> dict | None:
    """The recipe document in a checkpoint's safetensors metadata, or None (not a saved merge, unreadable)."""
    path = folder_paths.get_full_path("checkpoints", name)
    if not path or not path.lower().endswith((".safetensors", ".sft")):
        return None
    try:
        text = read_header(path)[1].get(recipes.METADATA_KEY)
        return recipes.parse_recipe(text) if text else None
    except (OSError, ValueError) as e:  # provenance only: a bad one is logged, never fatal
        log.warning("[Elemental Merge] %s: recipe in its metadata not used (%s)", name, str(e).splitlines()[0])
        return None


def recipe_of(model):
    """The model's recipe node (merge_core.recipe, version 2), None when its origin is unknown (a model from
    a loader that is not ours). Operations other nodes left pending (ElementalAdjust's texts, ElementalLoRA's
    entries) are folded into its `apply` list first, in the order they were made, so that the dict returned
    is the stored one and its `apply` is complete."""
    options = getattr(model, "model_options", None)
    node = (options or {}).get(RECIPE_KEY)
    if node is None:
        return None
    for text in node.pop(ADJUST_PENDING, None) or []:
        node["apply"] = node.get("apply", []) + [_adjust_op(text)]
    loras = options.get(LORAS_KEY, [])
    for entry in loras[options.get(LORAS_FOLDED_KEY, 0):]:
        node["apply"] = node.get("apply", []) + [recipes.lora_op(
            entry["lora"], entry["strength_model"], entry.get("strength_clip"),
            block_weights=entry.get("block_weights"), elemental=entry.get("elemental"),
            lbw_weights=entry.get("lbw_weights"))]
    options[LORAS_FOLDED_KEY] = len(loras)
    return node


def _adjust_op(text: str) -> dict:
    return recipes.adjust_op(dict(zip(NAMES, parse_adjust(text).values)))


def attach_recipe(model, recipe: dict) -> None:
    """Attaches a merge's recipe node (merge_core.recipes.recipe.merge_node, its sources the inputs' own
    nodes from `recipe_of`); a copy is stored, so later changes to `recipe` do not reach the model."""
    model.model_options[RECIPE_KEY] = copy.deepcopy(recipe)
    model.model_options[LORAS_FOLDED_KEY] = len(model.model_options.get(LORAS_KEY, []))
    model.model_options.pop(SOURCE_KEY, None)  # a merge result is no longer the checkpoint A came from


def recipe_document(model, comfyui_version: str, save: dict | None = None) -> dict | None:
    """The complete recipe of `model` for a file: pack and ComfyUI versions, every source's sha256."""
    node = recipe_of(model)
    if node is None:
        return None
    doc = recipes.fill_hashes(recipes.document(copy.deepcopy(node), recipes.pack_version(), comfyui_version, save),
                              source_sha256)
    try:
        return recipes.parse_recipe(doc)
    except recipes.RecipeError as e:  # a bug in whoever built the recipe: keep the save, say so loudly
        log.error("[Elemental Merge] the recipe being saved does not validate (LoadMergeRecipe will refuse it):\n%s", e)
        return doc


def hash_cache_path() -> str:
    return os.path.join(folder_paths.get_user_directory(), "elemental_merge", "hashes.json")


def source_sha256(folder: str, name: str) -> str | None:
    """sha256 of a model file named as ComfyUI lists it in `folder` ("checkpoints", "loras"), cached."""
    path = folder_paths.get_full_path(folder, name)
    return file_sha256(path, hash_cache_path()) if path else None


def unet_shapes(model) -> dict:
    """ComfyUI-internal UNet key (`diffusion_model.…`) -> shape, of the model's unpatched weights (a quantized
    layer's weight by its logical shape; its scale and config keys are part of it, not keys of their own)."""
    return {k: tuple(e[0][0].shape) for k, e in key_patches(model, UNET_PREFIX).items()}


def clip_shapes(clip) -> dict:
    """Text-encoder key -> shape for the floating-point weights a merge may touch."""
    sd = clip.patcher.model_state_dict()
    return {k: tuple(v.shape) for k, v in sd.items()
            if not k.endswith(CLIP_SKIP_SUFFIXES) and v.is_floating_point()}


def quantization(model) -> tuple[str, str] | None:
    """How the model's diffusion weights are stored quantized, as ComfyUI's loader recorded it on the model
    config: (the config attribute, a description naming the format), or None for a plain model. ComfyUI 0.33
    sets `quant_config` (files with per-layer `comfy_quant` keys, and scaled-fp8 files it converts to them;
    the weights are held as QuantizedTensor); 0.3.75 set `scaled_fp8` (the fp8 dtype; plain fp8 weights with
    separate `scale_weight` parameters) or `layer_quant_config` (mixed precision)."""
    config = getattr(getattr(model, "model", None), "model_config", None)
    if config is None:
        return None
    if _config_attribute(config, "quant_config"):
        return "quant_config", "mixed precision / fp8 scaled (comfy_quant)"
    scaled_fp8 = _config_attribute(config, "scaled_fp8")
    if scaled_fp8 is not None:
        return "scaled_fp8", f"scaled fp8 ({str(scaled_fp8).replace('torch.', '')})"
    if _config_attribute(config, "layer_quant_config"):
        return "layer_quant_config", "mixed precision (layer_quant_config)"
    return None


def _config_attribute(config, name: str):
    """`config.name` if the model config has it, else None, read without the model config's __getattr__
    (which logs a "please fix your code" warning for every attribute it lacks)."""
    if name in vars(config):
        return vars(config)[name]
    return getattr(type(config), name, None)

"""What every node module of the pack shares: the node API import, the category, the socket types and what
they carry, choices, and the few output helpers (PNG metadata, image tensors, never-overwrite paths).

Node modules import this module and the engine (`merge_inputs`, `merge_patches`, `remerge`, `comfy_internals`,
`model_info`), never each other, so that a node can be added or removed without touching the others.

The node API comes from a versioned module (`comfy_api.v0_0_2`), not `comfy_api.latest`: ComfyUI's
migration guide says `latest` follows the version under development, while a numbered version stays
importable in later ComfyUI releases.
"""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import torch
from comfy_api.v0_0_2 import io  # noqa: F401  (re-exported: node modules use `common.io`)
from PIL.PngImagePlugin import PngInfo

from ...merge_core import ARCHITECTURES, AUTO, MERGE_METHODS
from ...merge_core.text.written import TextInput  # noqa: F401  (the socket value type, used by node modules)
from ..engine import runtime

log = logging.getLogger("elemental_merge")

def _stock_merge_category() -> str:
    """Where this ComfyUI files its own merge nodes (`model/merging` since 0.33, `advanced/model_merging`
    before): the pack's nodes sit in an `elemental` folder beside them."""
    try:
        from comfy_extras.nodes_model_merging import ModelMergeSimple
        return ModelMergeSimple.CATEGORY
    except (ImportError, AttributeError):
        return "model/merging"


CATEGORY = _stock_merge_category() + "/elemental"
ARCH_CHOICES = [AUTO] + list(ARCHITECTURES)
MODES = list(MERGE_METHODS)  # "Weight sum", "Add difference", "Triple sum", "Sum twice"

# safetensors metadata key of a saved merge's recipe.
RECIPE_METADATA_KEY = "elemental_merge_recipe"

ElementalSpecType = io.Custom("ELEMENTAL_SPEC")
BlockWeightsType = io.Custom("BLOCK_WEIGHTS")


def text_of(value: TextInput | None) -> str | None:
    return value.text if value is not None else None


def png_metadata(hidden, extra: dict) -> PngInfo:
    """SaveImage's metadata (prompt, workflow: unless --disable-metadata) plus our own entries."""
    meta = PngInfo()
    if runtime.metadata_enabled() and hidden is not None:
        if hidden.prompt is not None:
            meta.add_text("prompt", json.dumps(hidden.prompt))
        for k, v in (hidden.extra_pnginfo or {}).items():
            meta.add_text(k, json.dumps(v))
    for k, v in extra.items():
        meta.add_text(k, json.dumps(v))
    return meta


def image_tensor(pil) -> torch.Tensor:
    """A PIL image as ComfyUI's IMAGE (1, H, W, 3) float in 0..1."""
    return torch.from_numpy(np.asarray(pil.convert("RGB")).astype(np.float32) / 255.0)[None]


def unused_path(folder: str, stem: str, ext: str, counter: int = 1) -> tuple[str, int]:
    """`<stem>_<counter:05>_.<ext>` in `folder`, the counter raised past every existing file: the pack never
    overwrites an output."""
    os.makedirs(folder, exist_ok=True)
    while True:
        path = os.path.join(folder, f"{stem}_{counter:05}_.{ext}")
        if not os.path.exists(path):
            return path, counter
        counter += 1


def unused_checkpoint_path(filename_prefix: str, output_dir: str) -> str:
    """`<prefix>_00001_.safetensors`-style name like the stock save node, never one that exists."""
    import folder_paths
    folder, filename, counter, _, _ = folder_paths.get_save_image_path(filename_prefix, output_dir)
    return unused_path(folder, filename, "safetensors", counter)[0]


def write_new(path: str, write) -> None:
    """Calls `write(path)` unless a file is already there (one appearing since its name was picked)."""
    if os.path.exists(path):
        raise FileExistsError(path)
    write(path)

"""In-process ComfyUI + this pack, for the benchmark workers.

The pack is imported as ComfyUI imports it from custom_nodes/ (devkit.pack), so the node modules import
exactly as they do in a server.
"""
from __future__ import annotations

import importlib
import os
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE_DIR = os.environ.get("ELEMENTAL_CACHE", os.path.expanduser("~/.cache/comfyui-elemental-merge"))
CHECKPOINT_DIR = os.environ.get("ELEMENTAL_CHECKPOINTS", os.path.join(CACHE_DIR, "checkpoints"))
# Where a smoke run (`--smoke`: CI's check that a bench still runs) writes its results, never bench/results/.
SMOKE_DIR = os.path.join(tempfile.gettempdir(), "elemental-bench-smoke")


def checkpoint_path(name: str) -> str:
    path = os.path.join(CHECKPOINT_DIR, f"test_{name}.safetensors")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} missing: run `python -m devkit.checkpoints {CHECKPOINT_DIR}`")
    return path


def setup_comfy():
    """Imports ComfyUI (CPU unless CUDA is usable) and returns its model_management module."""
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    from devkit.comfy_env import import_comfy

    import_comfy()
    import comfy.model_management as mm

    return mm


def pack_module(name: str):
    """`nodes.merge_nodes` etc. of this pack, imported as ComfyUI would (as a package), or None if absent."""
    setup_comfy()
    from devkit.pack import PACK_NAME, load_pack

    load_pack()
    try:
        return importlib.import_module(f"{PACK_NAME}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{PACK_NAME}.{name}":
            return None
        raise


def load_checkpoint(name: str):
    """(MODEL, CLIP) of test checkpoint `name`, loaded by ComfyUI's own loader with its default dtypes."""
    import comfy.sd

    model, clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(
        checkpoint_path(name), output_vae=False, output_clip=True)
    return model, clip

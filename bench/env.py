"""In-process ComfyUI + this pack, for the benchmark workers.

The pack uses relative imports (``from ..merge_core import``) because ComfyUI loads it as a package from
custom_nodes/; in-process we register the repository root as a package under the name ComfyUI would give
it, so the node modules import exactly as they do in a server.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_NAME = "comfyui_elemental_merge"
CACHE_DIR = os.environ.get("ELEMENTAL_CACHE", os.path.expanduser("~/.cache/comfyui-elemental-merge"))
CHECKPOINT_DIR = os.environ.get("ELEMENTAL_CHECKPOINTS", os.path.join(CACHE_DIR, "checkpoints"))


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
    if PACK_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACK_NAME, os.path.join(REPO_ROOT, "__init__.py"), submodule_search_locations=[REPO_ROOT])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[PACK_NAME] = mod
        spec.loader.exec_module(mod)
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

"""The pack in the test process, imported as ComfyUI imports it (devkit.pack), with ComfyUI importable first.

Tests reach `merge_core` as the top-level package and the node modules through `pack_module("nodes.…")`;
both see one copy of `merge_core` (devkit.pack shares it)."""
from __future__ import annotations

import os

from devkit.comfy_env import import_comfy
from devkit.pack import PACK_NAME as PACK  # noqa: F401  (tests name modules under it)
from devkit.pack import pack_module as _pack_module

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE_DIR = os.environ.get("ELEMENTAL_CACHE", os.path.expanduser("~/.cache/comfyui-elemental-merge"))
CHECKPOINT_DIR = os.environ.get("ELEMENTAL_CHECKPOINTS", os.path.join(CACHE_DIR, "checkpoints"))


def pack_module(name: str):
    """Module `name` of this pack (``"nodes.engine.merge_patches"``), ComfyUI imported first."""
    import_comfy()
    return _pack_module(name)

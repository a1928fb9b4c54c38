"""In-process tests: real ComfyUI objects (ModelPatcher, CLIP) in the test process, CPU only.

ComfyUI has a top-level module called `nodes`, so the pack cannot be imported as `nodes.…` here; it is
loaded as a package under its own name, the way ComfyUI loads it from custom_nodes/ (devkit.pack), with
`merge_core` shared with the top-level import.
"""
from __future__ import annotations

import os

import pytest

from devkit.comfy_env import import_comfy
from devkit.pack import PACK_NAME as PACK  # noqa: F401  (tests name modules under it)
from devkit.pack import pack_module as devkit_pack_module

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE_DIR = os.environ.get("ELEMENTAL_CACHE", os.path.expanduser("~/.cache/comfyui-elemental-merge"))
CHECKPOINT_DIR = os.environ.get("ELEMENTAL_CHECKPOINTS", os.path.join(CACHE_DIR, "checkpoints"))


def pack_module(name: str):
    """Module `name` of this pack (``"nodes.engine.patching"``), imported as ComfyUI would (devkit.pack)."""
    import_comfy()
    return devkit_pack_module(name)


@pytest.fixture(scope="session")
def checkpoint_paths() -> dict[str, str]:
    from devkit.checkpoints import ensure_checkpoints

    return ensure_checkpoints(CHECKPOINT_DIR)

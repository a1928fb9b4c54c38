"""In-process tests: real ComfyUI objects (ModelPatcher, CLIP) in the test process, CPU only.

ComfyUI has a top-level module called `nodes`, so the pack cannot be imported as `nodes.…` here; it is
loaded as a package under its own name, the way ComfyUI loads it from custom_nodes/.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import pytest

from devkit.comfy_env import import_comfy

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACK = "elemental_merge_pack"
CACHE_DIR = os.environ.get("ELEMENTAL_CACHE", os.path.expanduser("~/.cache/comfyui-elemental-merge"))
CHECKPOINT_DIR = os.environ.get("ELEMENTAL_CHECKPOINTS", os.path.join(CACHE_DIR, "checkpoints"))


def pack_module(name: str):
    """`nodes.<name>` of this pack, imported as ComfyUI would (a package with relative imports)."""
    import_comfy()
    if PACK not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK, os.path.join(REPO_ROOT, "__init__.py"),
                                                      submodule_search_locations=[REPO_ROOT])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{PACK}.nodes.{name}")


@pytest.fixture(scope="session")
def checkpoint_paths() -> dict[str, str]:
    from devkit.checkpoints import ensure_checkpoints

    return ensure_checkpoints(CHECKPOINT_DIR)

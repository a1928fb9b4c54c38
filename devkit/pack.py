"""This pack imported in-process the way ComfyUI imports it from custom_nodes/: the repository root as a
package (the node modules use relative imports such as ``from ..merge_core import``), with one copy of
`merge_core`.

ComfyUI has a top-level module called `nodes`, so the pack's `nodes/` can only be reached under the pack's
package name. `merge_core`, which tests and tools also import as the top-level package, is the same module
objects under both names: every `merge_core` module is registered under the pack's name too, so its caches
(the cosine statistics, the key indexes) exist once, whichever way a caller reached it.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_NAME = "comfyui_elemental_merge"


def _share_merge_core() -> None:
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    core = importlib.import_module("merge_core")
    sys.modules[f"{PACK_NAME}.merge_core"] = core
    for info in pkgutil.walk_packages(core.__path__, "merge_core."):
        if info.name == "merge_core.__main__":
            continue
        sys.modules[f"{PACK_NAME}.{info.name}"] = importlib.import_module(info.name)


def load_pack():
    """The pack's package module, registered once (ComfyUI must be importable first for `nodes.…`)."""
    if PACK_NAME not in sys.modules:
        _share_merge_core()
        spec = importlib.util.spec_from_file_location(PACK_NAME, os.path.join(REPO_ROOT, "__init__.py"),
                                                      submodule_search_locations=[REPO_ROOT])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK_NAME]


def pack_module(name: str):
    """Module `name` of the pack (``"nodes.engine.merge_patches"``, ``"merge_core.merge.calc_modes"``)."""
    load_pack()
    return importlib.import_module(f"{PACK_NAME}.{name}")

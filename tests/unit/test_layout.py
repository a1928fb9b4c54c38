"""The pack's layout rules, read from the source (no ComfyUI needed).

merge_core/ (pure: torch, numpy and the standard library)
  Sub-packages along the data path, each importing only those before it:
  arch (blocks, keys) < text (spec, weights, presets) < merge (methods, calc modes, resolution) <
  plot, recipes (which also reads files), editor (the web editor's answers). A few shared modules
  (cache, numbers, diagnostics) sit at the top with the package's public names and the CLI.
nodes/
  Only node modules at the top (each declares `NODES`), listed in the pack's NODE_MODULES; they import
  no other node module. `engine/` is the only place that imports `comfy`, and within it only
  `comfy_internals` touches ModelPatcher's private fields. `plot/` is the plot renderer, `sockets/` the
  shared socket types and merge inputs, `http_routes/` the HTTP routes with one `register()`.
"""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODES_DIR = os.path.join(ROOT, "nodes")
CORE_DIR = os.path.join(ROOT, "merge_core")
PRIVATE_FIELDS = ("backup", "patches_uuid", "current_weight_patches_uuid", "model_lowvram",
                  "model_loaded_weight_memory", "use_ejected", "patch_weight_to_device")
COMFYUI_MODULES = ("comfy", "comfy_api", "comfy_execution", "folder_paths", "server", "nodes", "aiohttp")

# merge_core's sub-packages in data-path order: each may import only those before it in this table.
CORE_LAYERS = ("arch", "files", "text", "merge", "plot", "recipes", "file_merge", "editor")
CORE_TOP = {"__init__", "__main__", "cache", "numbers", "diagnostics"}
NODE_PACKAGES = {"engine", "plot", "sockets", "http_routes"}


def _tree(path):
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), path)


def _py_files(top):
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(root, name)


def _module_name(path) -> list:
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    return rel[:-1] if rel[-1] == "__init__" else rel


def _imports(path):
    """(absolute module parts within the repository or the imported top-level name, is_relative) of every
    import in `path`; for ``from .x import name`` also x.name, which may be a module."""
    tree = _tree(path)
    mod = _module_name(path)
    package = mod if path.endswith("__init__.py") else mod[:-1]
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            for a in n.names:
                yield a.name.split("."), False
        elif isinstance(n, ast.ImportFrom):
            if n.level == 0:
                yield (n.module or "").split("."), False
                continue
            base = package[: len(package) - (n.level - 1)] + (n.module.split(".") if n.module else [])
            yield base, True
            for a in n.names:
                yield base + [a.name], True


def _is_node_module(tree) -> bool:
    return any(isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "NODES" for t in n.targets)
               for n in tree.body)


def _top_node_modules():
    return sorted(n[:-3] for n in os.listdir(NODES_DIR) if n.endswith(".py") and n != "__init__.py")


def test_nodes_top_level_holds_only_the_registered_node_modules():
    registered = ast.literal_eval(next(
        n.value for n in _tree(os.path.join(ROOT, "__init__.py")).body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "NODE_MODULES"))
    top = _top_node_modules()
    assert sorted(registered) == top
    assert [m for m in top if not _is_node_module(_tree(os.path.join(NODES_DIR, f"{m}.py")))] == []
    packages = {d for d in os.listdir(NODES_DIR) if os.path.isfile(os.path.join(NODES_DIR, d, "__init__.py"))}
    assert packages == NODE_PACKAGES


def test_node_modules_do_not_import_each_other():
    top = set(_top_node_modules())
    bad = {}
    for m in top:
        hits = {parts[1] for parts, rel in _imports(os.path.join(NODES_DIR, f"{m}.py"))
                if rel and len(parts) == 2 and parts[0] == "nodes" and parts[1] in top and parts[1] != m}
        if hits:
            bad[m] = sorted(hits)
    assert bad == {}


@pytest.mark.parametrize("path", list(_py_files(NODES_DIR)), ids=lambda p: os.path.relpath(p, ROOT))
def test_only_the_engine_imports_comfy(path):
    if os.path.relpath(path, NODES_DIR).split(os.sep)[0] == "engine":
        return
    comfy = sorted({".".join(parts) for parts, rel in _imports(path) if not rel and parts[0] == "comfy"})
    assert comfy == [], f"{os.path.relpath(path, ROOT)} imports {comfy}: go through nodes/engine/"


@pytest.mark.parametrize("path", list(_py_files(NODES_DIR)), ids=lambda p: os.path.relpath(p, ROOT))
def test_only_comfy_internals_touches_private_patcher_fields(path):
    if path.endswith(os.path.join("engine", "comfy_internals.py")):
        return
    used = sorted({n.attr for n in ast.walk(_tree(path)) if isinstance(n, ast.Attribute) and n.attr in PRIVATE_FIELDS})
    assert used == [], f"{os.path.relpath(path, ROOT)} reads ModelPatcher internals {used}: go through comfy_internals"


def test_merge_core_imports_nothing_from_comfyui_or_nodes():
    offenders = []
    for path in _py_files(CORE_DIR):
        for parts, rel in _imports(path):
            if (not rel and parts[0] in COMFYUI_MODULES) or (rel and parts[0] != "merge_core"):
                offenders.append(f"{os.path.relpath(path, ROOT)}: {'.'.join(parts)}")
    assert offenders == []


def test_merge_core_is_in_sub_packages_along_the_data_path():
    top = {n[:-3] for n in os.listdir(CORE_DIR) if n.endswith(".py")}
    assert top == CORE_TOP
    packages = {d for d in os.listdir(CORE_DIR) if os.path.isfile(os.path.join(CORE_DIR, d, "__init__.py"))}
    assert packages == set(CORE_LAYERS)
    backwards = []
    for layer in CORE_LAYERS:
        allowed = set(CORE_LAYERS[: CORE_LAYERS.index(layer) + 1])
        for path in _py_files(os.path.join(CORE_DIR, layer)):
            for parts, rel in _imports(path):
                if rel and len(parts) >= 2 and parts[1] in CORE_LAYERS and parts[1] not in allowed:
                    backwards.append(f"{os.path.relpath(path, ROOT)} imports merge_core.{parts[1]}")
    assert backwards == []

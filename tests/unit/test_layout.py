"""The pack's layout rules, read from the source (no ComfyUI needed).

- Node modules (those declaring `NODES` or `ROUTES`) import no other node module: shared types and helpers
  come from `nodes/common.py`, the merge engine from the support modules. A node can be added or removed
  without touching another.
- `merge_core` imports nothing from ComfyUI.
- Only `nodes/comfy_internals.py` touches ModelPatcher's private fields.
"""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODES_DIR = os.path.join(ROOT, "nodes")
PRIVATE_FIELDS = ("backup", "patches_uuid", "current_weight_patches_uuid", "model_lowvram",
                  "model_loaded_weight_memory", "use_ejected", "patch_weight_to_device")


def _tree(path):
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), path)


def _node_dir_modules():
    return sorted(n[:-3] for n in os.listdir(NODES_DIR) if n.endswith(".py") and n != "__init__.py")


def _is_node_module(tree) -> bool:
    return any(isinstance(n, ast.Assign) and any(getattr(t, "id", None) in ("NODES", "ROUTES") for t in n.targets)
               for n in tree.body)


def _sibling_imports(tree) -> set:
    found = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.level == 1:
            if n.module:
                found.add(n.module.split(".")[0])
            else:
                found.update(a.name for a in n.names)
    return found


def test_node_modules_do_not_import_each_other():
    trees = {m: _tree(os.path.join(NODES_DIR, f"{m}.py")) for m in _node_dir_modules()}
    node_modules = {m for m, t in trees.items() if _is_node_module(t)}
    assert {"merge_nodes", "xy_plot", "diff_checker", "routes"} <= node_modules
    bad = {m: sorted(_sibling_imports(trees[m]) & node_modules) for m in trees}
    assert {m: v for m, v in bad.items() if v} == {}


def test_merge_core_has_no_comfy_import():
    core = os.path.join(ROOT, "merge_core")
    offenders = []
    for name in sorted(os.listdir(core)):
        if name.endswith(".py"):
            for n in ast.walk(_tree(os.path.join(core, name))):
                mods = [a.name for a in n.names] if isinstance(n, ast.Import) else \
                    [n.module or ""] if isinstance(n, ast.ImportFrom) else []
                offenders += [f"{name}: {m}" for m in mods if m.split(".")[0] in ("comfy", "comfy_api", "folder_paths")]
    assert offenders == []


@pytest.mark.parametrize("module", _node_dir_modules())
def test_only_comfy_internals_touches_private_patcher_fields(module):
    if module == "comfy_internals":
        return
    tree = _tree(os.path.join(NODES_DIR, f"{module}.py"))
    used = sorted({n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in PRIVATE_FIELDS})
    assert used == [], f"nodes/{module}.py reads ModelPatcher internals {used}: go through comfy_internals"

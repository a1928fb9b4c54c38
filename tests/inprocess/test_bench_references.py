"""The benchmark cannot rot silently: every name bench/ reads from the pack exists.

bench/ reaches the pack through `bench.env.pack_module("nodes.x")` (the pack imported as ComfyUI imports it).
A refactor that moves a function bench/ calls breaks `bash bench/run.sh` minutes into a run, where no test
looks. This reads every bench module's source and checks, without running a benchmark, that each module it
asks for imports and that every attribute it takes from one (`mod = pack_module("m")` then `mod.attr`, or
`pack_module("m").attr`) is there."""
from __future__ import annotations

import ast
import glob
import os

import pytest

from tests.helpers.pack import REPO_ROOT

BENCH_FILES = sorted(glob.glob(os.path.join(REPO_ROOT, "bench", "*.py")))
# Runs inside a scratch ComfyUI server as a custom node (it imports ComfyUI's `server`): parsed, not imported.
SERVER_SIDE = {"session_probe.py"}


def _references(path: str) -> list[tuple[str, str, int]]:
    """(module name, attribute, line) for every attribute read off a pack_module(...) result in `path`."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)

    def module_of(node) -> str | None:
        if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "pack_module" and node.args
                and isinstance(node.args[0], ast.Constant)):
            return node.args[0].value
        return None

    refs, names = [], {}
    for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.Module))]:
        names = {}
        for node in ast.walk(func):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                mod = module_of(node.value)
                if mod:
                    names[node.targets[0].id] = mod
        for node in ast.walk(func):
            if isinstance(node, ast.Attribute):
                mod = module_of(node.value)
                if mod is None and isinstance(node.value, ast.Name):
                    mod = names.get(node.value.id)
                if mod:
                    refs.append((mod, node.attr, node.lineno))
    return refs


def test_bench_reads_only_names_the_pack_has():
    from bench.env import pack_module

    refs = {(os.path.relpath(p, REPO_ROOT), *r) for p in BENCH_FILES for r in _references(p)}
    assert len({r[1] for r in refs}) >= 5  # the parser finds the modules bench/ uses
    missing = []
    for path, mod, attr, line in sorted(refs):
        module = pack_module(mod)
        if module is None:
            missing.append(f"{path}:{line}: module {mod} is gone")
        elif not hasattr(module, attr):
            missing.append(f"{path}:{line}: {mod}.{attr} is gone")
    assert not missing, "bench/ uses names the pack no longer has:\n" + "\n".join(missing)


@pytest.mark.parametrize("path", BENCH_FILES, ids=os.path.basename)
def test_bench_module_imports(path):
    import importlib
    import sys

    if os.path.basename(path) in SERVER_SIDE:
        compile(open(path, encoding="utf-8").read(), path, "exec")
        return
    # bench_resolve.py, a script, puts the repository first on sys.path: left there, a later `import nodes`
    # would find this pack's nodes/ package instead of ComfyUI's nodes.py
    saved = list(sys.path)
    try:
        importlib.import_module("bench." + os.path.splitext(os.path.basename(path))[0])
    finally:
        sys.path[:] = saved

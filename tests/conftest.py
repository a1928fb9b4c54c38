"""Shared fixtures: the test checkpoints and a real ComfyUI server with this pack.

Unit tests (tests/unit) need none of this. Everything that needs ComfyUI reads COMFYUI_DIR, which
scripts/test.sh sets after provisioning; a missing ComfyUI is an error, never a silent skip.
"""
from __future__ import annotations

import ctypes
import gc
import os
import sys

import pytest

from devkit.server import ComfyServer

CACHE_DIR = os.environ.get("ELEMENTAL_CACHE", os.path.expanduser("~/.cache/comfyui-elemental-merge"))
CHECKPOINT_DIR = os.environ.get("ELEMENTAL_CHECKPOINTS", os.path.join(CACHE_DIR, "checkpoints"))


def _comfyui_dir() -> str:
    d = os.environ.get("COMFYUI_DIR")
    if not d or not os.path.isfile(os.path.join(d, "main.py")):
        pytest.fail("COMFYUI_DIR is not set to a ComfyUI tree: run the tests with scripts/test.sh", pytrace=False)
    return d


@pytest.fixture(scope="session")
def comfyui_dir() -> str:
    return _comfyui_dir()


@pytest.fixture(scope="session")
def checkpoints(comfyui_dir) -> dict[str, str]:
    """name ('A', 'B', 'C') -> path of the seeded random-weight SD1.5-layout test checkpoints."""
    from devkit.checkpoints import ensure_checkpoints

    return ensure_checkpoints(CHECKPOINT_DIR)


@pytest.fixture(scope="session")
def comfy_server(comfyui_dir, checkpoints):
    """A real ComfyUI (main.py --cpu) with this pack in custom_nodes and test_A/B/C in its checkpoints."""
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    server = ComfyServer(comfyui_dir, python, checkpoints=checkpoints)
    try:
        server.start()
        _RUNNING_SERVERS.append(server)
        yield server
    finally:
        _RUNNING_SERVERS.remove(server) if server in _RUNNING_SERVERS else None
        server.cleanup()


_RUNNING_SERVERS: list[ComfyServer] = []


@pytest.fixture(autouse=True, scope="module")
def _release_memory_after_each_module():
    """Each test module leaves the machine's memory and disk as it found them: the in-process suites'
    checkpoints are returned to the OS, the server drops its models and cache (see ComfyServer.free_memory)
    and the model files the module saved are deleted."""
    yield
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    for server in _RUNNING_SERVERS:
        server.free_memory()
        server.delete_saved_models()  # the disk too: a module's saved merges are its own


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the ComfyUI server log to every failing test that used the server."""
    outcome = yield
    report = outcome.get_result()
    server = item.funcargs.get("comfy_server") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(server, ComfyServer):
        report.sections.append(("ComfyUI server log (tail)", server.log_tail(12000)))


# Suites in the order they run: cheap ones first; the benchmarks' smoke runs (subprocesses, each holding its own
# models) while this process holds none; then the in-process suites (which load checkpoints into this process)
# before the server starts, so no two of them hold models in memory at the same time.
SUITE_ORDER = ("unit", "bench_smoke", "inprocess", "e2e", "browser")


def pytest_addoption(parser):
    parser.addoption("--compat", action="store_true",
                     help="only the tests of the older-ComfyUI compatibility run (tests/compat_selection.py)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--compat"):
        from tests.compat_selection import selected

        chosen = [item for item in items if selected(item.nodeid)]
        config.hook.pytest_deselected(items=[item for item in items if not selected(item.nodeid)])
        items[:] = chosen

    def rank(item):
        parts = item.nodeid.split("/")
        suite = parts[1] if len(parts) > 2 and parts[0] == "tests" else ""
        return SUITE_ORDER.index(suite) if suite in SUITE_ORDER else len(SUITE_ORDER)

    items.sort(key=rank)  # stable: keeps file and definition order inside a suite

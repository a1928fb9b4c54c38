"""In-process tests: real ComfyUI objects (ModelPatcher, CLIP) in the test process, CPU only.

ComfyUI has a top-level module called `nodes`, so the pack cannot be imported as `nodes.…` here; it is
loaded as a package under its own name, the way ComfyUI loads it from custom_nodes/ (devkit.pack), with
`merge_core` shared with the top-level import.
"""
from __future__ import annotations

import pytest

from tests.helpers.pack import CHECKPOINT_DIR


@pytest.fixture(scope="session")
def checkpoint_paths() -> dict[str, str]:
    from devkit.checkpoints import ensure_checkpoints

    return ensure_checkpoints(CHECKPOINT_DIR)

"""The example workflows, as the tests queue them: the API-format twin of each UI workflow."""
from __future__ import annotations

import copy
import io
import json
import os

from .server import REPO_ROOT

WORKFLOW_DIR = os.path.join(REPO_ROOT, "example_workflows")
# The API-format twins live one folder down: ComfyUI lists every *.json directly in example_workflows/ as a
# template, and an API-format file opened as a template would not load as a graph.
API_WORKFLOW_DIR = os.path.join(WORKFLOW_DIR, "api")


def load_api_workflow(name: str) -> dict:
    with open(os.path.join(API_WORKFLOW_DIR, f"{name}.json")) as f:
        return json.load(f)


def load_ui_workflow(name: str) -> dict:
    with open(os.path.join(WORKFLOW_DIR, f"{name}.json")) as f:
        return json.load(f)


def with_inputs(prompt: dict, node_id: str, **inputs) -> dict:
    """A copy of `prompt` with some inputs of one node replaced."""
    out = copy.deepcopy(prompt)
    out[str(node_id)]["inputs"].update(inputs)
    return out


def png_pixels(png: bytes):
    """Decoded RGB pixels of a PNG as a numpy array (metadata such as the embedded prompt is ignored)."""
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

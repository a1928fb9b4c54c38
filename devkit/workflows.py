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


LATENT_NODES = ("EmptyLatentImage", "EmptySD3LatentImage")


def on_fixtures(prompt: dict, inputs: dict, replace: dict | None = None, relink: dict | None = None) -> dict:
    """A user-sized template made runnable on the test fixtures: `inputs` ({node id: {input: value}}) names the
    fixture files, `replace` swaps whole nodes ({node id: node}) and `relink` moves links ({(id, output):
    (id, output)}) to the replacement's outputs; latents shrink to 64x64 and samplers to one step. The graph's
    merge settings stay as the template has them."""
    out = copy.deepcopy(prompt)
    out.update(copy.deepcopy(replace or {}))
    for nid, values in inputs.items():
        out[nid]["inputs"].update(values)
    moves = {tuple(k): list(v) for k, v in (relink or {}).items()}
    for node in out.values():
        ins = node["inputs"]
        for name, value in ins.items():
            if isinstance(value, list) and tuple(value) in moves:
                ins[name] = moves[tuple(value)]
        if node["class_type"] in LATENT_NODES:
            ins.update(width=64, height=64)
        if node["class_type"] == "KSampler":
            ins["steps"] = 1
    return out


def png_pixels(png: bytes):
    """Decoded RGB pixels of a PNG as a numpy array (metadata such as the embedded prompt is ignored)."""
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def sample_nodes(model, clip, vae, prefix: str, tag: str, seed: int = 5) -> dict:
    """API nodes that sample `model` 1 step at 64x64 and save the image as `prefix`; every id ends in `tag`
    (the saved image is node ``I<tag>``). Small enough for CI, and deterministic on CPU."""
    return {
        f"P{tag}": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", "clip": clip}},
        f"N{tag}": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": clip}},
        f"E{tag}": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        f"K{tag}": {"class_type": "KSampler", "inputs": {
            "model": model, "positive": [f"P{tag}", 0], "negative": [f"N{tag}", 0], "latent_image": [f"E{tag}", 0],
            "seed": seed, "steps": 1, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        f"D{tag}": {"class_type": "VAEDecode", "inputs": {"samples": [f"K{tag}", 0], "vae": vae}},
        f"I{tag}": {"class_type": "SaveImage", "inputs": {"images": [f"D{tag}", 0], "filename_prefix": prefix}},
    }


def only_image(server, outputs, node_id):
    """The pixels of the one image a SaveImage node wrote."""
    imgs = server.images(outputs, node_id)
    assert len(imgs) == 1, f"node {node_id} wrote {len(imgs)} images"
    return png_pixels(imgs[0])

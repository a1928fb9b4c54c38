"""Elemental Adjust end to end: the example workflow runs, all-zero values give the input model's image bit for
bit, other values change it, and the input model is untouched afterwards. (The adjusted weights themselves are
checked against the formulas in tests/inprocess/test_adjust_node.py.)"""
from __future__ import annotations

import numpy as np

from devkit.workflows import load_api_workflow, png_pixels
from tests.e2e.test_merge_nodes import test_ui_workflow_matches_api_twin as check_ui_matches_api_twin

NAMES = ("IN", "OUT", "OUT2", "CONT", "BRI", "COL1", "COL2", "COL3")


def _sample(model, prefix: str, start: int) -> dict:
    s = start
    return {
        str(s): {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", "clip": ["1", 1]}},
        str(s + 1): {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        str(s + 2): {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        str(s + 3): {"class_type": "KSampler", "inputs": {
            "model": model, "positive": [str(s), 0], "negative": [str(s + 1), 0], "latent_image": [str(s + 2), 0],
            "seed": 5, "steps": 1, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        str(s + 4): {"class_type": "VAEDecode", "inputs": {"samples": [str(s + 3), 0], "vae": ["1", 2]}},
        str(s + 5): {"class_type": "SaveImage", "inputs": {"images": [str(s + 4), 0], "filename_prefix": prefix}},
    }


def _adjust(node_id: str, **values) -> dict:
    inputs = {n: float(values.get(n, 0.0)) for n in NAMES}
    return {node_id: {"class_type": "ElementalAdjust", "inputs": {"model": ["1", 0], **inputs}}}


def _image(server, outputs, node_id):
    imgs = server.images(outputs, node_id)
    assert len(imgs) == 1
    return png_pixels(imgs[0])


LOADER = {"1": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "test_A.safetensors"}}}


def test_example_workflow_runs(comfy_server):
    prompt = load_api_workflow("adjust")
    outputs = comfy_server.run(prompt)
    assert comfy_server.images(outputs, "10")
    report = outputs["4"]["text"][0]
    assert "Elemental Adjust (SD1.x) on test_A.safetensors" in report and "3 keys changed" in report, report


def test_ui_workflow_matches_api_twin(comfy_server):
    check_ui_matches_api_twin(comfy_server, "adjust")


def test_zero_is_the_model_other_values_change_it_and_the_source_is_untouched(comfy_server):
    plain = comfy_server.run({**LOADER, **_sample(["1", 0], "adj_plain", 20)})
    zero = comfy_server.run({**LOADER, **_adjust("2"), **_sample(["2", 0], "adj_zero", 10)})
    moved = comfy_server.run({**LOADER, **_adjust("2", CONT=3.0, COL1=2.0, OUT2=2.0),
                              **_sample(["2", 0], "adj_moved", 10)})
    # A again, through a stock no-op merge so that ComfyUI's cache cannot hand back the first result
    after = comfy_server.run({**LOADER, "3": {"class_type": "ModelMergeSimple",
                                              "inputs": {"model1": ["1", 0], "model2": ["1", 0], "ratio": 1.0}},
                              **_sample(["3", 0], "adj_after", 20)})
    base = _image(comfy_server, plain, "25")
    assert np.array_equal(_image(comfy_server, zero, "15"), base), "all-zero Adjust changed the image"
    assert not np.array_equal(_image(comfy_server, moved, "15"), base), "Adjust did not change the image"
    assert np.array_equal(_image(comfy_server, after, "25"), base), "the input model changed after Adjust"
    assert "2 keys changed" in moved["2"]["text"][0]  # OUT2 -> out.2.weight; CONT, COL1 -> out.2.bias

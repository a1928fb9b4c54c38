"""Calc modes end to end through a real ComfyUI server: one example workflow per family runs and its image
changes when the calc mode changes; every invalid (mode, calc mode) pair is rejected by /prompt with a
message naming both and the valid pairs; a bound that a plain alpha breaks is rejected too."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from devkit.ui_workflow import ui_to_api
from devkit.workflows import load_api_workflow, load_ui_workflow, png_pixels, with_inputs

# example workflow -> the calc mode its ElementalMerge uses
FAMILIES = {
    "calc_cosine": "cosineA",
    "calc_train_difference": "trainDifference",
    "calc_extract": "extract",
    "calc_tensor": "tensor",
}
VALID = {"normal": {"Weight sum", "Add difference", "Triple sum", "Sum twice"},
         "cosineA": {"Weight sum"}, "cosineB": {"Weight sum"}, "tensor": {"Weight sum"},
         "tensor2": {"Weight sum"}, "self": {"Weight sum"}, "trainDifference": {"Add difference"},
         "smoothAdd": {"Add difference"}, "extract": {"Add difference"}}
MODES = ["Weight sum", "Add difference", "Triple sum", "Sum twice"]
INVALID = [(m, c) for m, c in itertools.product(MODES, VALID) if m not in VALID[c]]


def _node(prompt: dict, class_type: str) -> str:
    ids = [k for k, v in prompt.items() if v["class_type"] == class_type]
    assert len(ids) == 1, (class_type, ids)
    return ids[0]


def _image(server, prompt) -> np.ndarray:
    outputs = server.run(prompt)
    imgs = server.images(outputs, _node(prompt, "SaveImage"))
    assert len(imgs) == 1
    return png_pixels(imgs[0]), outputs


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_workflow_runs_and_calc_mode_matters(comfy_server, name):
    prompt = load_api_workflow(name)
    assert ui_to_api(load_ui_workflow(name), comfy_server.object_info()) == prompt, f"{name}: UI and API differ"
    merge_id = _node(prompt, "ElementalMerge")
    assert prompt[merge_id]["inputs"]["calc_mode"] == FAMILIES[name]
    with_calc, outputs = _image(comfy_server, prompt)
    report = outputs[merge_id]["text"][0]
    assert f"calc mode: {FAMILIES[name]}" in report
    save_id = _node(prompt, "SaveImage")
    normal = with_inputs(prompt, merge_id, calc_mode="normal")
    normal[save_id]["inputs"]["filename_prefix"] += "_normal"
    plain, _ = _image(comfy_server, normal)
    assert with_calc.shape == plain.shape
    assert not np.array_equal(with_calc, plain), f"{name}: the calc mode did not change the image"


def _merge_prompt(mode: str, calc: str, alpha: float = 0.5) -> dict:
    return {
        "1": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "test_A.safetensors"}},
        "2": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "test_B.safetensors"}},
        "3": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "test_C.safetensors"}},
        "4": {"class_type": "ElementalMerge", "inputs": {
            "model_a": ["1", 0], "model_b": ["2", 0], "model_c": ["3", 0], "mode": mode, "alpha": alpha,
            "beta": 0.25, "print_change": False, "calc_mode": calc, "calc_option": 0.3}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 2]}},  # an output, so /prompt checks 4
    }


@pytest.mark.parametrize("mode,calc", INVALID)
def test_invalid_pair_rejected_at_queue_time(comfy_server, mode, calc):
    status, body = comfy_server.post_prompt(_merge_prompt(mode, calc))
    assert status == 400, body
    details = " ".join(e.get("details", "") + e.get("message", "") for e in body["node_errors"]["4"]["errors"])
    assert f"'{calc}'" in details and f"'{mode}'" in details, details
    assert "Weight sum: cosineA, cosineB, tensor, tensor2, self" in details, details
    assert "Add difference: trainDifference, smoothAdd, extract" in details, details


@pytest.mark.parametrize("calc,alpha", [("tensor", 1.5), ("tensor2", -0.25), ("extract", 1.25)])
def test_bounded_calc_mode_rejects_plain_alpha_out_of_range(comfy_server, calc, alpha):
    mode = "Add difference" if calc == "extract" else "Weight sum"
    status, body = comfy_server.post_prompt(_merge_prompt(mode, calc, alpha))
    assert status == 400, body
    details = " ".join(e.get("details", "") for e in body["node_errors"]["4"]["errors"])
    assert f"'{calc}'" in details and "[0, 1]" in details, details

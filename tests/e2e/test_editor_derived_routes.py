"""The editor's routes for a model with no record (LTXV, blocks derived from its keys) and the prefix-match
warning at queue time and in the merge report, through a real ComfyUI server.

/elemental/detect reads the file's header, runs ComfyUI's detection on its shapes and builds the model on the
meta device for its key order (`nodes/engine/header_model.py`); the answer must be the architecture the merge
itself derives from the loaded model, so the merge's report names the same blocks.
"""
from __future__ import annotations

import json
import os

import pytest

from tests.helpers.ltxv_files import BLOCKS, write_ltxv

UNET_A, UNET_B, CKPT = "ltxv_editor_a.safetensors", "ltxv_editor_b.safetensors", "ltxv_editor_ckpt.safetensors"


@pytest.fixture(scope="module")
def ltxv_files(comfy_server):
    """Two LTXV diffusion-model files in the server's diffusion_models folder and one checkpoint-form file in
    its checkpoints folder; deleted after the module."""
    paths = [os.path.join(comfy_server.models_dir, "diffusion_models", UNET_A),
             os.path.join(comfy_server.models_dir, "diffusion_models", UNET_B),
             os.path.join(comfy_server.checkpoints_dir, CKPT)]
    os.makedirs(os.path.dirname(paths[0]), exist_ok=True)
    for path, seed, ckpt in zip(paths, (1, 2, 1), (False, False, True)):
        write_ltxv(path, seed, checkpoint=ckpt)
    try:
        yield paths
    finally:
        for path in paths:
            if os.path.exists(path):
                os.remove(path)


def detect(server, name, folder=None):
    return server.get_json(f"/elemental/detect?ckpt_name={name}" + (f"&folder={folder}" if folder else ""))


def test_detect_derives_the_blocks_the_merge_will_use(comfy_server, ltxv_files):
    unet = detect(comfy_server, UNET_A, "diffusion_models")
    assert unet["arch"].startswith("derived-") and unet["derived"] is True, unet
    assert (unet["label"], unet["blocks"]) == ("LTXV (derived)", BLOCKS)
    assert unet["reason"] == "derived from its keys: 28 blocks T00-T27 (transformer_blocks.N), IN, OUT"
    ckpt = detect(comfy_server, CKPT)  # the same layout in a checkpoint file: the same architecture
    assert (ckpt["arch"], ckpt["blocks"]) == (unet["arch"], BLOCKS)
    # The editor's next requests name it: blocks, elements per block, checking.
    info = comfy_server.get_json(f"/elemental/architectures/{unet['arch']}")
    assert info["blocks"] == BLOCKS and "attn2.to_k" in info["elements"]["T05"]
    assert "ff.net" in info["element_names"]
    # A record is still answered from the header alone: the SD1.5 test checkpoint.
    sd1 = detect(comfy_server, "test_A.safetensors")
    assert (sd1["arch"], sd1["derived"], len(sd1["blocks"])) == ("sd1", False, 26)


def test_preview_on_derived_blocks_warns_of_an_element_matching_through_the_prefix(comfy_server, ltxv_files):
    arch = detect(comfy_server, UNET_A, "diffusion_models")["arch"]
    status, body = comfy_server.request("POST", "/elemental/preview",
                                        {"spec": "T05:attn2:0.3\nNOT T05:ff:0.9", "arch": arch})
    data = json.loads(body)
    assert status == 200 and data["ok"] and data["arch"] == arch, data
    assert data["entries"][0]["blocks"] == {"T05": data["entries"][0]["count"]} and data["entries"][0]["count"] > 0
    (warning,) = [d for d in data["diagnostics"] if "only inside their prefix" in d["message"]]
    assert (warning["line"], warning["column"], warning["severity"]) == (2, 9, "warning")
    assert "'model.diffusion_model.'" in warning["message"] and "write 'ff.net'" in warning["hint"]


def test_queue_time_logs_the_warning_and_the_merge_report_carries_it(comfy_server, ltxv_files):
    spec = "NOT T05:ff:0.9"
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": UNET_A, "weight_dtype": "default"}},
        "2": {"class_type": "UNETLoader", "inputs": {"unet_name": UNET_B, "weight_dtype": "default"}},
        "3": {"class_type": "ElementalSpec", "inputs": {"spec": spec, "architecture": "auto"}},
        "4": {"class_type": "ElementalMerge", "inputs": {
            "model_a": ["1", 0], "model_b": ["2", 0], "mode": "Weight sum", "alpha": 0.5, "beta": 0.25,
            "elemental_alpha": ["3", 0], "print_change": True}},
        "5": {"class_type": "SaveMergedDiffusionModel", "inputs": {
            "model": ["4", 0], "filename_prefix": "diffusion_models/ltxv_editor_merge", "precision": "fp16"}},
    }
    outputs = comfy_server.run(prompt, timeout=300)
    report = outputs["4"]["text"][0]  # the merge checks the spec against the model's derived blocks and keys
    assert "LTXV (derived)" in report and "only inside their prefix" in report and "write 'ff.net'" in report
    assert "derived from its keys: 28 blocks T00-T27 (transformer_blocks.N), IN, OUT" in report
    # At queue time the models are not known: a spec for a record warns there, in the server log, and the
    # prompt is judged on its errors alone.
    logged = len(comfy_server.log_text())
    status, _ = comfy_server.post_prompt({
        "3": {"class_type": "ElementalSpec", "inputs": {"spec": "NOT OUT04:ff:0.9", "architecture": "sd1"}},
        "4": {"class_type": "ElementalMerge", "inputs": {
            "model_a": ["1", 0], "model_b": ["2", 0], "mode": "Weight sum", "alpha": 0.5, "beta": 0.25,
            "elemental_alpha": ["3", 0]}},
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "no_such_model.safetensors",
                                                     "weight_dtype": "default"}},
        "2": {"class_type": "UNETLoader", "inputs": {"unet_name": "no_such_model.safetensors",
                                                     "weight_dtype": "default"}},
        "5": {"class_type": "SaveMergedDiffusionModel", "inputs": {
            "model": ["4", 0], "filename_prefix": "diffusion_models/never", "precision": "fp16"}},
    })
    assert status == 400  # the missing model fails the prompt; the spec's warning alone would not
    log = comfy_server.log_text()[logged:]
    assert "ElementalSpec: SD1.x: line 1, column 11: warning: element 'ff' matches" in log, log[-3000:]

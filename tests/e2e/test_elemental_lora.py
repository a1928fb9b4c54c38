"""ElementalLoRA end to end: the three example workflows (apply, bake in, extract) run; block weights all 1 give
LoraLoader's image bit for bit; a block at 0 keeps A's weights exactly in a baked file, whose reload gives the
live image bit for bit and whose recipe names the LoRA; a merge extracted as a full_diff LoRA with ComfyUI's
LoraSave, added to A, gives the merge back within fp16 rounding.

One server (the session's); the seeded LoRA files of devkit.loras are linked into its models/loras, and its
output/loras (where LoraSave writes) into models/loras/extracted. Sampling: 64x64, 1 step.
"""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
import torch
from safetensors import safe_open

from tests.helpers.arch_checks import dtype_ulp
from devkit.checkpoints import sha256_hex
from devkit.workflows import load_api_workflow, only_image, sample_nodes, with_inputs
from tests.e2e.test_merge_nodes import test_ui_workflow_matches_api_twin as check_ui_matches_api_twin

WORKFLOWS = ("elemental_lora", "elemental_lora_bake", "elemental_lora_extract")
CACHE_DIR = os.environ.get("ELEMENTAL_CACHE", os.path.expanduser("~/.cache/comfyui-elemental-merge"))
LOADER = {"1": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "test_A.safetensors"}}}


def newest(folder: str, prefix: str) -> str:
    found = sorted(glob.glob(os.path.join(folder, f"{prefix}_*_.safetensors")))
    assert found, (folder, prefix)
    return found[-1]


@pytest.fixture(scope="module")
def loras(comfy_server):
    """layout -> path of the test LoRAs, linked into the server's models/loras."""
    from devkit.loras import ensure_loras

    paths = ensure_loras(os.path.join(CACHE_DIR, "loras"))
    folder = os.path.join(comfy_server.models_dir, "loras")
    os.makedirs(folder, exist_ok=True)
    for path in paths.values():
        dest = os.path.join(folder, os.path.basename(path))
        if not os.path.lexists(dest):
            os.symlink(path, dest)
    extracted = os.path.join(comfy_server.output_dir, "loras")
    os.makedirs(extracted, exist_ok=True)
    if not os.path.lexists(os.path.join(folder, "extracted")):
        os.symlink(extracted, os.path.join(folder, "extracted"))
    return paths


def test_example_workflow_runs(comfy_server, loras):
    outputs = comfy_server.run(load_api_workflow("elemental_lora"))
    assert comfy_server.images(outputs, "10")
    report = outputs["3"]["text"][0]
    assert "Elemental LoRA test_lora_kohya.safetensors (SD1.x): strength_model=1.0 strength_clip=1.0" in report
    assert "OUT05     13  0.25..1 (2 values)" in report and "IN01      12  0" in report, report
    assert "BASE      72  0..1 (2 values)" in report, report


@pytest.mark.parametrize("name", WORKFLOWS)
def test_ui_workflow_matches_api_twin(comfy_server, loras, name):
    check_ui_matches_api_twin(comfy_server, name)


def test_weights_all_one_is_lora_loader_bit_for_bit(comfy_server, loras):
    ones = ",".join(["1"] * 26)
    prompt = {**LOADER,
              "W": {"class_type": "BlockWeights", "inputs": {"weights": ones, "architecture": "sd1"}},
              "L": {"class_type": "ElementalLoRA", "inputs": {
                  "model": ["1", 0], "clip": ["1", 1], "lora_name": "test_lora_loha.safetensors",
                  "strength_model": 0.75, "strength_clip": 0.5, "block_weights": ["W", 0], "lbw_weights": ""}},
              "R": {"class_type": "LoraLoader", "inputs": {
                  "model": ["1", 0], "clip": ["1", 1], "lora_name": "test_lora_loha.safetensors",
                  "strength_model": 0.75, "strength_clip": 0.5}},
              **sample_nodes(["L", 0], ["L", 1], ["1", 2], "lora_ones", "l"),
              **sample_nodes(["R", 0], ["R", 1], ["1", 2], "lora_ref", "r"),
              **sample_nodes(["1", 0], ["1", 1], ["1", 2], "lora_plain", "p")}
    outputs = comfy_server.run(prompt)
    mine, ref, plain = (only_image(comfy_server, outputs, f"I{t}") for t in "lrp")
    assert np.array_equal(mine, ref), "block weights all 1 differ from LoraLoader"
    assert not np.array_equal(mine, plain), "the LoRA changed nothing"


def test_bake_one_block_zero_reload_same_image_and_recipe(comfy_server, loras, checkpoints):
    from devkit.loras import sd15_targets

    prompt = with_inputs(load_api_workflow("elemental_lora_bake"), "4", precision="fp32",
                         filename_prefix="checkpoints/lora_baked32")
    prompt.update(sample_nodes(["3", 0], ["3", 1], ["1", 2], "lora_live", "l"))
    live = only_image(comfy_server, comfy_server.run(prompt), "Il")
    path = newest(os.path.join(comfy_server.output_dir, "checkpoints"), "lora_baked32")

    # Weights: OUT05 (block weight 0) is A's exactly; every other LoRA key is A + 0.75 * alpha/rank * up @ down.
    lora = safe_open(loras["kohya"], "pt")
    checked = {"zero": 0, "patched": 0}
    with safe_open(path, "pt") as baked, safe_open(checkpoints["A"], "pt") as a:
        for kohya, _, _, key in sd15_targets():
            if not key.startswith("diffusion_model."):
                continue
            fk = "model." + key
            W, got = a.get_tensor(fk).float(), baked.get_tensor(fk)
            if key.startswith("diffusion_model.output_blocks.5."):
                assert torch.equal(got, W), key
                checked["zero"] += 1
                continue
            up, down = (lora.get_tensor(f"{kohya}.lora_{n}.weight").float() for n in ("up", "down"))
            scale = lora.get_tensor(f"{kohya}.alpha").item() / down.shape[0]
            want = W + (0.75 * scale) * torch.mm(up.flatten(1), down.flatten(1)).reshape(W.shape)
            assert torch.equal(got, want), key
            checked["patched"] += 1
        untouched = "model.diffusion_model.output_blocks.4.0.in_layers.2.weight"
        assert torch.equal(baked.get_tensor(untouched), a.get_tensor(untouched).float())
        meta = baked.metadata()
    assert checked == {"zero": 13, "patched": 202 - 13}

    name = "saved_" + os.path.basename(path)
    os.symlink(path, os.path.join(comfy_server.checkpoints_dir, name))
    again = comfy_server.run({"C": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}},
                              **sample_nodes(["C", 0], ["C", 1], ["C", 2], "lora_reloaded", "s")})
    assert np.array_equal(only_image(comfy_server, again, "Is"), live), "the baked file samples another image"

    doc = json.loads(meta["elemental_merge_recipe"])["model"]
    assert (doc["kind"], doc["name"]) == ("checkpoint", "test_A.safetensors")
    (op,) = doc["apply"]
    assert op == {"op": "lora", "name": "test_lora_kohya.safetensors", "sha256": sha256_hex(loras["kohya"]),
                  "strength_model": 0.75, "strength_clip": 0.5, "block_weights": "1," * 19 + "0" + ",1" * 6,
                  "elemental": None, "lbw_weights": None}


def merge_ratio(key: str) -> float:
    """The extract workflow's ratios, by hand: alpha 0.5; IN04-IN05 0.75; OUT05 attn2 0.25."""
    if key.startswith(("diffusion_model.input_blocks.4.", "diffusion_model.input_blocks.5.")):
        return 0.75
    if key.startswith("diffusion_model.output_blocks.5.") and "attn2" in key:
        return 0.25
    return 0.5


def test_extracted_lora_on_a_gives_the_merge_back(comfy_server, loras, checkpoints):
    comfy_server.run(load_api_workflow("elemental_lora_extract"))
    path = newest(os.path.join(comfy_server.output_dir, "loras"), "elemental_extract")
    n = 0
    with safe_open(path, "pt") as lora, safe_open(checkpoints["A"], "pt") as fa, \
            safe_open(checkpoints["B"], "pt") as fb:
        names = set(lora.keys())
        for fk in fa.keys():
            if not fk.startswith("model.diffusion_model."):
                continue
            key = fk[len("model."):]
            stem, kind = key.rsplit(".", 1)
            diff = lora.get_tensor(f"{stem}.diff" if kind == "weight" else f"{stem}.diff_b")
            assert diff.dtype == torch.float16
            A, B = fa.get_tensor(fk).double(), fb.get_tensor(fk).double()
            r = merge_ratio(key)
            merge = A * (1 - r) + B * r
            err = (A + diff.double() - merge).abs()
            bound = dtype_ulp(merge - A, torch.float16) / 2 + 4 * 2.0 ** -24 * (A.abs() + B.abs())
            assert (err <= bound).all(), f"{key}: max error {err.max().item():.3g}"
            n += 1
        assert n == 686 and len(names) == 686  # every UNet weight and bias, nothing else

    rel = "extracted/" + os.path.basename(path)
    outputs = comfy_server.run({**LOADER, "L": {"class_type": "ElementalLoRA", "inputs": {
        "model": ["1", 0], "lora_name": rel, "strength_model": 1.0, "strength_clip": 1.0, "lbw_weights": ""}},
        "V": {"class_type": "PreviewAny", "inputs": {"source": ["L", 2]}}})
    report = outputs["L"]["text"][0]
    assert "686 UNet and 0 text-encoder patches" in report and "match neither" not in report, report


def test_lora_on_a_merge_source_is_merged_with_it(comfy_server, loras):
    """ElementalLoRA's MODEL/CLIP as merge source B at alpha 1: the merge is the LoRA'd B, bit for bit."""
    prompt = {**LOADER, "2": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "test_B.safetensors"}},
              "L": {"class_type": "ElementalLoRA", "inputs": {
                  "model": ["2", 0], "clip": ["2", 1], "lora_name": "test_lora_peft.safetensors",
                  "strength_model": 1.0, "strength_clip": 1.0, "lbw_weights": "OUTALL"}},
              "M": {"class_type": "ElementalMerge", "inputs": {
                  "model_a": ["1", 0], "model_b": ["L", 0], "clip_a": ["1", 1], "clip_b": ["L", 1],
                  "mode": "Weight sum", "alpha": 1.0, "beta": 0.25, "print_change": False, "calc_mode": "normal",
                  "calc_option": 0.3}},
              **sample_nodes(["M", 0], ["M", 1], ["1", 2], "lora_merged", "m"),
              **sample_nodes(["L", 0], ["L", 1], ["1", 2], "lora_source", "s")}
    outputs = comfy_server.run(prompt)
    assert np.array_equal(only_image(comfy_server, outputs, "Im"), only_image(comfy_server, outputs, "Is"))

"""The file-to-file merge (`python -m merge_core merge`) writes the tensors Save Merged Checkpoint writes for the
same merge made live in a real ComfyUI, bit for bit (SD1.5 fixtures; the server holds fp32 weights on the CPU).

Each case merges live and saves with SaveMergedCheckpoint, runs Merge Checkpoint Files in the same prompt and
the command line on the same files with the same settings, and compares every tensor's bytes; the recipe in the file is the live save's recipe (less the
sources' sha256, which the CLI is told not to compute here). Both files are deleted once compared. The
cosineA/cosineB statistic is the one known difference (docs/file-merge.md): the live one also covers the
text-encoder keys ComfyUI makes that a checkpoint does not hold.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SPEC = "OUT04:attn2:0.8\nIN01 IN02::0.1"
DARE_SPEC = "IN01 M00 OUT04::1"
WEIGHTS = "0.2," + ",".join(["0.4"] * 12) + ",0.6," + ",".join(["0.7"] * 12)  # SD1: 26 values, BASE first

# The dtypes the CPU server holds the weights in: float32 diffusion model, fp16 text encoder.
HELD = ["--unet-dtype", "fp32", "--text-encoder-dtype", "fp16"]

CASES = {
    # id: (ElementalMerge inputs besides the models, CLI flags, precision, sources)
    "weight_sum_spec_weights_fp32": (
        {"mode": "Weight sum", "alpha": 0.35, "beta": 0.25},
        ["--mode", "Weight sum", "--alpha", "0.35", "--spec", SPEC, "--block-weights", WEIGHTS], "fp32", "AB"),
    # DARE-TIES on three blocks (alpha 0 keeps A elsewhere: the random masks of 1 B parameters cost a minute)
    "dare_ties_seed_fp8": (
        {"mode": "DARE-TIES", "alpha": 0.0, "beta": 0.25, "drop_rate": 0.7, "merge_seed": 11},
        ["--mode", "DARE-TIES", "--alpha", "0", "--spec", DARE_SPEC, "--drop-rate", "0.7", "--merge-seed", "11"],
        "fp8_e4m3fn", "AB"),
}


def live_prompt(inputs: dict, sources: str, precision: str, prefix: str, spec: str | None,
                weights: bool) -> dict:
    prompt = {}
    merge = {"print_change": False, **inputs}
    for i, s in enumerate(sources):
        prompt[str(i + 1)] = {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": f"test_{s}.safetensors"}}
        merge[f"model_{s.lower()}"] = [str(i + 1), 0]
        merge[f"clip_{s.lower()}"] = [str(i + 1), 1]
    if spec:
        prompt["10"] = {"class_type": "ElementalSpec", "inputs": {"spec": spec, "architecture": "sd1"}}
        merge["elemental_alpha"] = ["10", 0]
    if weights:
        prompt["11"] = {"class_type": "BlockWeights", "inputs": {"weights": WEIGHTS, "architecture": "sd1"}}
        merge["block_weights_alpha"] = ["11", 0]
    prompt["20"] = {"class_type": "ElementalMerge", "inputs": merge}
    prompt["21"] = {"class_type": "SaveMergedCheckpoint", "inputs": {
        "model": ["20", 0], "clip": ["20", 1], "vae": ["1", 2], "filename_prefix": f"checkpoints/{prefix}",
        "precision": precision}}
    # The node merges the same files with the same settings: its file must equal the live save too.
    files = {k: v for k, v in merge.items() if not k.startswith(("model_", "clip_")) and k != "print_change"}
    files |= {f"ckpt_{s.lower()}": f"test_{s}.safetensors" for s in sources}
    prompt["22"] = {"class_type": "MergeCheckpointFiles", "inputs": {
        **files, "filename_prefix": f"checkpoints/{prefix}_node", "precision": precision}}
    return prompt


def assert_same_tensors(path_x: str, path_y: str) -> None:
    """The two files hold the same tensor names, each with the same dtype, shape and bytes."""
    with safe_open(path_x, "pt") as fx, safe_open(path_y, "pt") as fy:
        kx, ky = set(fx.keys()), set(fy.keys())
        assert kx == ky, (sorted(kx - ky)[:5], sorted(ky - kx)[:5])
        differing = []
        for k in sorted(kx):
            x, y = fx.get_tensor(k), fy.get_tensor(k)
            if x.dtype != y.dtype or x.shape != y.shape or x.numel() and not torch.equal(
                    x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)):
                differing.append(k)
        assert not differing, f"{os.path.basename(path_y)}: {len(differing)} tensors differ, e.g. {differing[:5]}"


def cli(args: list) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "merge_core", "merge", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("case", list(CASES))
def test_file_merge_equals_the_live_save(comfy_server, checkpoints, tmp_path, case):
    inputs, flags, precision, sources = CASES[case]
    spec = flags[flags.index("--spec") + 1] if "--spec" in flags else None
    comfy_server.run(live_prompt(inputs, sources, precision, case, spec, "--block-weights" in flags))
    folder = os.path.join(comfy_server.output_dir, "checkpoints")
    live = os.path.join(folder, f"{case}_00001_.safetensors")
    node = os.path.join(folder, f"{case}_node_00001_.safetensors")
    out = str(tmp_path / "merged.safetensors")
    try:
        done = cli([checkpoints[s] for s in sources] + ["-o", out, "--precision", precision, "--quiet", "--no-hash"]
                   + HELD + flags)
        assert done.returncode == 0, done.stderr
        assert_same_tensors(live, node)
        with safe_open(node, "pt") as fn:
            node_recipe = json.loads(fn.metadata()["elemental_merge_recipe"])["model"]
        assert_same_tensors(live, out)
        with safe_open(live, "pt") as fl, safe_open(out, "pt") as ff:
            live_recipe = json.loads(fl.metadata()["elemental_merge_recipe"])["model"]
            file_recipe = json.loads(ff.metadata()["elemental_merge_recipe"])["model"]
        assert node_recipe == live_recipe  # the node hashes its sources, as the live save does
        for s in live_recipe["sources"].values():  # the CLI ran with --no-hash (the server hashed them)
            assert len(s.pop("sha256")) == 64
        assert [s.pop("sha256") for s in file_recipe["sources"].values()] == [None] * len(sources)
        assert file_recipe == live_recipe
    finally:
        for p in (live, node, out):
            if os.path.exists(p):
                os.remove(p)

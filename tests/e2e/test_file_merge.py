"""The file-to-file merge writes the tensors Save Merged Checkpoint writes for the same merge made live in a
real ComfyUI, bit for bit: the Merge Checkpoint Files node and the command line (`python -m merge_core
merge`), on the SD1.5 fixtures.

Each case is a Merge Checkpoint Files node (the `merge_checkpoint_files` example workflow, or one built here).
The test adds to the same prompt a live merge with the same settings (loaders, Elemental Merge with the same
inputs and links, Save Merged Checkpoint), runs the command line with the same settings read from the node,
and compares every tensor's bytes of the three files and the recipes (the command line runs with --no-hash;
the node hashes its sources as the live save does). All files are deleted once compared.

The server holds float32 diffusion-model weights and an fp16 text encoder on the CPU: the node rounds to
what this ComfyUI holds by itself, the command line is told (--unet-dtype / --text-encoder-dtype). The
cosineA/cosineB statistic is the one known difference (docs/file-merge.md): the live one also covers the
text-encoder keys ComfyUI makes that a checkpoint does not hold.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from devkit.ui_workflow import ui_to_api
from devkit.workflows import load_api_workflow, load_ui_workflow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELD = ["--unet-dtype", "fp32", "--text-encoder-dtype", "fp16"]
FILE_NODE = "3"


def example_case() -> dict:
    return load_api_workflow("merge_checkpoint_files")


def dare_case() -> dict:
    """DARE-TIES with a seed on three blocks at bf16 (alpha 0 keeps A elsewhere: the random masks of 1 B
    parameters would cost a minute per merge)."""
    return {
        "1": {"class_type": "ElementalSpec", "inputs": {"spec": "IN01 M00 OUT04::1", "architecture": "sd1"}},
        FILE_NODE: {"class_type": "MergeCheckpointFiles", "inputs": {
            "ckpt_a": "test_A.safetensors", "ckpt_b": "test_B.safetensors", "mode": "DARE-TIES", "alpha": 0.0,
            "beta": 0.25, "elemental_alpha": ["1", 0], "drop_rate": 0.7, "merge_seed": 11,
            "filename_prefix": "checkpoints/dare", "precision": "bf16"}},
    }


CASES = {"merge_checkpoint_files": example_case, "dare_ties_seed_bf16": dare_case}


def with_live_merge(prompt: dict, prefix: str) -> dict:
    """`prompt` plus the live merge of the file node's settings and its Save Merged Checkpoint."""
    node = prompt[FILE_NODE]["inputs"]
    node["filename_prefix"] = f"checkpoints/{prefix}_node"
    merge = {"print_change": False}
    for name, value in node.items():
        if name.startswith("ckpt_"):
            letter = name[-1]
            loader = f"L{letter}"
            prompt[loader] = {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": value}}
            merge[f"model_{letter}"], merge[f"clip_{letter}"] = [loader, 0], [loader, 1]
        elif name not in ("filename_prefix", "precision"):
            merge[name] = value
    prompt["M"] = {"class_type": "ElementalMerge", "inputs": merge}
    prompt["S"] = {"class_type": "SaveMergedCheckpoint", "inputs": {
        "model": ["M", 0], "clip": ["M", 1], "vae": ["La", 2], "filename_prefix": f"checkpoints/{prefix}",
        "precision": node["precision"]}}
    return prompt


def cli_flags(prompt: dict, checkpoints: dict) -> list:
    """The command line of the file node's settings."""
    node = prompt[FILE_NODE]["inputs"]
    files = [checkpoints[node[f"ckpt_{s}"][len("test_"):-len(".safetensors")]] for s in "abcde"
             if node.get(f"ckpt_{s}", "(none)") != "(none)"]
    flags = []
    texts = {"elemental_alpha": ("--spec", "spec"), "block_weights_alpha": ("--block-weights", "weights")}
    for name, value in node.items():
        if name in texts:
            flag, field = texts[name]
            flags += [flag, prompt[value[0]]["inputs"][field]]
        elif not name.startswith("ckpt_") and name != "filename_prefix":
            flags += ["--" + name.replace("_", "-"), str(value)]
    return files + flags


def assert_same_tensors(path_x: str, path_y: str, skip: tuple = ()) -> None:
    """The two files hold the same tensor names, each with the same dtype, shape and bytes (but `skip`)."""
    with safe_open(path_x, "pt") as fx, safe_open(path_y, "pt") as fy:
        kx, ky = set(fx.keys()), set(fy.keys())
        assert kx == ky, (sorted(kx - ky)[:5], sorted(ky - kx)[:5])
        differing = []
        for k in sorted(kx - set(skip)):
            x, y = fx.get_tensor(k), fy.get_tensor(k)
            if x.dtype != y.dtype or x.shape != y.shape or x.numel() and not torch.equal(
                    x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)):
                differing.append(k)
        assert not differing, f"{os.path.basename(path_y)}: {len(differing)} tensors differ, e.g. {differing[:5]}"


def recipe(path: str) -> dict:
    with safe_open(path, "pt") as f:
        return json.loads(f.metadata()["elemental_merge_recipe"])["model"]


def assert_same_recipes(live_recipe: dict, node_recipe: dict, file_recipe: dict) -> None:
    """The node's recipe is the live save's; the command line's (run with --no-hash) is too, but for the
    sources' sha256, which the live save records and --no-hash leaves empty."""
    assert node_recipe == live_recipe
    for s in live_recipe["sources"].values():
        assert len(s.pop("sha256")) == 64
    assert [s.pop("sha256") for s in file_recipe["sources"].values()] == [None, None]
    assert file_recipe == live_recipe


@pytest.mark.parametrize("case", list(CASES))
def test_file_merge_equals_the_live_save(comfy_server, checkpoints, tmp_path, case):
    prompt = with_live_merge(CASES[case](), case)
    comfy_server.run(prompt)
    folder = os.path.join(comfy_server.output_dir, "checkpoints")
    live = os.path.join(folder, f"{case}_00001_.safetensors")
    node = os.path.join(folder, f"{case}_node_00001_.safetensors")
    out = str(tmp_path / "merged.safetensors")
    try:
        done = subprocess.run([sys.executable, "-m", "merge_core", "merge", *cli_flags(prompt, checkpoints), "-o",
                               out, "--quiet", "--no-hash", *HELD], cwd=ROOT, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr
        assert_same_tensors(live, node)
        assert_same_tensors(live, out)
        assert_same_recipes(recipe(live), recipe(node), recipe(out))
    finally:
        for p in (live, node, out):
            if os.path.exists(p):
                os.remove(p)


def test_example_template_matches_its_api_twin(comfy_server):
    assert ui_to_api(load_ui_workflow("merge_checkpoint_files"), comfy_server.object_info()) == example_case()

"""Reproducible merges end to end (issue 14): the saved file is the live merge, in every precision, with a
complete recipe; the stock loader loads it back and samples the same image bit for bit.

One server, test_A/B/C. Sampling on CPU is deterministic, so "the same image" is pixel equality. The fp32 file
is the reference: test_fp32_* proves it equals the live merge (by image through the stock loader; the
in-process tests prove it per weight against ComfyUI's patch path), and the other precisions are compared
with it cast the same way (fp8 keeps the tensors merge_core.save_dtypes names in fp16).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os

import pytest
import torch
from safetensors import safe_open

from devkit.workflows import png_pixels
from merge_core.save_dtypes import stored_dtype

SPEC = "OUT05:attn2:0.25\nIN04-IN05::0.75\nBASE::0.125"


def loaders(ids=("A", "B", "C")) -> dict:
    return {f"L{n}": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": f"test_{n}.safetensors"}}
            for n in ids}


def spec_merge() -> dict:
    """A = test_A + test_B by an elemental spec (text encoders merged too)."""
    return {
        "S": {"class_type": "ElementalSpec", "inputs": {"spec": SPEC, "architecture": "sd1"}},
        "M": {"class_type": "ElementalMerge", "inputs": {
            "model_a": ["LA", 0], "model_b": ["LB", 0], "clip_a": ["LA", 1], "clip_b": ["LB", 1],
            "mode": "Weight sum", "alpha": 0.5, "beta": 0.25, "elemental_alpha": ["S", 0], "print_change": False}},
    }


def merge_of_merge() -> dict:
    """M2 = Add difference (M, test_C, test_B) at 0.375: a merge whose A is a merge."""
    return {**spec_merge(), "M2": {"class_type": "ElementalMerge", "inputs": {
        "model_a": ["M", 0], "model_b": ["LC", 0], "model_c": ["LB", 0], "clip_a": ["M", 1], "clip_b": ["LC", 1],
        "clip_c": ["LB", 1], "mode": "Add difference", "alpha": 0.375, "beta": 0.25, "print_change": False}}}


def sample(model, clip, vae, prefix: str, tag: str) -> dict:
    """1 step at 64x64, saved as an image; node ids end in `tag`."""
    return {
        f"P{tag}": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", "clip": clip}},
        f"N{tag}": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": clip}},
        f"E{tag}": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        f"K{tag}": {"class_type": "KSampler", "inputs": {
            "model": model, "positive": [f"P{tag}", 0], "negative": [f"N{tag}", 0], "latent_image": [f"E{tag}", 0],
            "seed": 5, "steps": 1, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        f"D{tag}": {"class_type": "VAEDecode", "inputs": {"samples": [f"K{tag}", 0], "vae": vae}},
        f"I{tag}": {"class_type": "SaveImage", "inputs": {"images": [f"D{tag}", 0], "filename_prefix": prefix}},
    }


def save(model, clip, vae, prefix: str, precision: str, tag: str = "") -> dict:
    return {f"W{tag}": {"class_type": "SaveMergedCheckpoint", "inputs": {
        "model": model, "clip": clip, "vae": vae, "filename_prefix": f"checkpoints/{prefix}", "precision": precision}}}


def saved_file(server, prefix: str) -> str:
    found = sorted(glob.glob(os.path.join(server.output_dir, "checkpoints", f"{prefix}_*_.safetensors")))
    assert found, os.listdir(os.path.join(server.output_dir, "checkpoints"))
    return found[-1]


def expose(server, path: str) -> str:
    """Makes a saved merge loadable by the stock loader (models/checkpoints); returns its name there."""
    name = "saved_" + os.path.basename(path)
    dest = os.path.join(server.checkpoints_dir, name)
    if not os.path.lexists(dest):
        os.symlink(path, dest)
    return name


def image(server, outputs, node_id):
    imgs = server.images(outputs, node_id)
    assert len(imgs) == 1
    return png_pixels(imgs[0])


def stock_image(server, ckpt_name: str, prefix: str):
    prompt = {"C": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
              **sample(["C", 0], ["C", 1], ["C", 2], prefix, "s")}
    return image(server, server.run(prompt), "Is")


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(scope="module")
def spec_fp32(comfy_server):
    """The spec merge sampled live and saved as fp32 in the same graph: (live image, file path)."""
    prompt = {**loaders("AB"), **spec_merge(), **sample(["M", 0], ["M", 1], ["LA", 2], "live_spec", "l"),
              **save(["M", 0], ["M", 1], ["LA", 2], "spec32", "fp32")}
    outputs = comfy_server.run(prompt)
    return image(comfy_server, outputs, "Il"), saved_file(comfy_server, "spec32")


def test_fp32_spec_merge_same_image_through_stock_loader(comfy_server, spec_fp32):
    live, path = spec_fp32
    again = stock_image(comfy_server, expose(comfy_server, path), "reloaded_spec")
    assert again.shape == live.shape and (again == live).all()


def test_recipe_in_file_is_complete(comfy_server, spec_fp32, checkpoints):
    _, path = spec_fp32
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    doc = json.loads(meta["elemental_merge_recipe"])
    assert (doc["format"], doc["version"], doc["comfyui_version"]) == ("elemental-merge-recipe", 2, "0.3.75")
    assert doc["save"] == {"precision": "fp32"} and doc["pack_version"] == "0.1.0"
    m = doc["model"]
    assert (m["kind"], m["mode"], m["calc_mode"], m["alpha"], m["elemental_alpha"], m["architecture"],
            m["text_encoder_merged"]) == ("merge", "Weight sum", "normal", 0.5, SPEC, "sd1", True)
    for letter in "AB":
        src = m["sources"][letter]
        assert src == {"kind": "checkpoint", "name": f"test_{letter}.safetensors",
                       "sha256": sha256(checkpoints[letter]), "apply": []}
    assert meta["modelspec.predict_key"] == "epsilon" and "prompt" in meta


def test_merge_of_a_merge_fp32_same_image_and_nested_recipe(comfy_server):
    prompt = {**loaders(), **merge_of_merge(), **sample(["M2", 0], ["M2", 1], ["LA", 2], "live_mm", "l"),
              **save(["M2", 0], ["M2", 1], ["LA", 2], "mm32", "fp32")}
    live = image(comfy_server, comfy_server.run(prompt), "Il")
    path = saved_file(comfy_server, "mm32")
    again = stock_image(comfy_server, expose(comfy_server, path), "reloaded_mm")
    assert (again == live).all()
    with safe_open(path, "pt") as f:
        m = json.loads(f.metadata()["elemental_merge_recipe"])["model"]
    assert (m["mode"], m["alpha"], m["sources"]["A"]["kind"], m["sources"]["A"]["elemental_alpha"]) == \
        ("Add difference", 0.375, "merge", SPEC)
    assert [m["sources"][x]["name"] for x in "BC"] == ["test_C.safetensors", "test_B.safetensors"]


@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp8_e4m3fn", "fp8_e5m2"])
def test_other_precisions_are_the_live_weights_cast(comfy_server, spec_fp32, precision):
    _, ref = spec_fp32
    comfy_server.run({**loaders("AB"), **spec_merge(), **save(["M", 0], ["M", 1], ["LA", 2], f"spec_{precision}",
                                                                 precision)})
    path = saved_file(comfy_server, f"spec_{precision}")
    with safe_open(ref, "pt") as fr, safe_open(path, "pt") as fp:
        assert sorted(fr.keys()) == sorted(fp.keys())
        for key in fr.keys():
            want, got = fr.get_tensor(key), fp.get_tensor(key)
            dtype = stored_dtype(key, want.dtype, tuple(want.shape), precision)
            assert got.dtype == dtype, key
            if dtype.itemsize == 1:
                assert torch.equal(got.view(torch.uint8), want.to(dtype).view(torch.uint8)), key
            else:
                assert torch.equal(got, want.to(dtype)), key
        assert json.loads(fp.metadata()["elemental_merge_recipe"])["save"] == {"precision": precision}


def test_fp8_file_loads_and_samples_with_the_stock_loader(comfy_server):
    path = saved_file(comfy_server, "spec_fp8_e4m3fn")
    img = stock_image(comfy_server, expose(comfy_server, path), "reloaded_fp8")
    assert img.shape == (64, 64, 3) and img.std() > 0

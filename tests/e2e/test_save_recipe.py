"""Reproducible merges end to end: the saved file is the live merge, in every precision, with a
complete recipe; the stock loader loads it back and samples the same image bit for bit.

One server, test_A/B/C. Sampling on CPU is deterministic, so "the same image" is pixel equality. The fp32 file
is the reference: test_fp32_* proves it equals the live merge (by image through the stock loader; the
in-process tests prove it per weight against ComfyUI's patch path), and the other precisions are compared
with it cast the same way (fp8 keeps the tensors merge_core.files.save_dtypes names in fp16).
"""
from __future__ import annotations

import glob
import json
import os

import pytest
import torch
from safetensors import safe_open

from devkit.checkpoints import sha256_hex
from devkit.workflows import only_image, sample_nodes
from merge_core.files.save_dtypes import stored_dtype

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
    """M2 = Weight sum (M, test_B) at 0.375, block weights on alpha: a merge whose A is a merge (two source
    files only: three SD1.5 models in fp32 plus their rebuilt copies would not fit the CI machine)."""
    return {**spec_merge(),
            "BW": {"class_type": "BlockWeights", "inputs": {"weights": "GRAD_V", "architecture": "sd1"}},
            "M2": {"class_type": "ElementalMerge", "inputs": {
                "model_a": ["M", 0], "model_b": ["LB", 0], "clip_a": ["M", 1], "clip_b": ["LB", 1],
                "mode": "Weight sum", "alpha": 0.375, "beta": 0.25, "block_weights_alpha": ["BW", 0],
                "print_change": False}}}


def save(model, clip, vae, prefix: str, precision: str, tag: str = "") -> dict:
    inputs = {"model": model, "clip": clip, "vae": vae, "filename_prefix": f"checkpoints/{prefix}",
              "precision": precision}
    return {f"W{tag}": {"class_type": "SaveMergedCheckpoint", "inputs": {k: v for k, v in inputs.items() if v}}}


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


def stock_image(server, ckpt_name: str, prefix: str):
    prompt = {"C": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
              **sample_nodes(["C", 0], ["C", 1], ["C", 2], prefix, "s")}
    return only_image(server, server.run(prompt), "Is")


@pytest.fixture(scope="module")
def spec_fp32(comfy_server):
    """The spec merge sampled live and saved as fp32 in the same graph: (live image, file path)."""
    prompt = {**loaders("AB"), **spec_merge(),
              **sample_nodes(["M", 0], ["M", 1], ["LA", 2], "live_spec", "l"),
              **save(["M", 0], ["M", 1], ["LA", 2], "spec32", "fp32")}
    outputs = comfy_server.run(prompt)
    return only_image(comfy_server, outputs, "Il"), saved_file(comfy_server, "spec32")


def test_fp32_spec_merge_same_image_through_stock_loader(comfy_server, spec_fp32):
    live, path = spec_fp32
    again = stock_image(comfy_server, expose(comfy_server, path), "reloaded_spec")
    assert again.shape == live.shape and (again == live).all()


def test_recipe_in_file_is_complete(comfy_server, spec_fp32, checkpoints):
    _, path = spec_fp32
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    doc = json.loads(meta["elemental_merge_recipe"])
    server_version = comfy_server.get_json("/system_stats")["system"]["comfyui_version"]
    assert server_version in ("0.3.75", "0.33.0")
    assert (doc["format"], doc["version"], doc["comfyui_version"]) == ("elemental-merge-recipe", 2, server_version)
    assert doc["save"] == {"precision": "fp32"} and doc["pack_version"] == "0.1.0"
    m = doc["model"]
    assert (m["kind"], m["mode"], m["calc_mode"], m["alpha"], m["elemental_alpha"], m["architecture"],
            m["text_encoder_merged"]) == ("merge", "Weight sum", "normal", 0.5, SPEC, "sd1", True)
    for letter in "AB":
        src = m["sources"][letter]
        assert src == {"kind": "checkpoint", "name": f"test_{letter}.safetensors",
                       "sha256": sha256_hex(checkpoints[letter]), "apply": []}
    assert meta["modelspec.predict_key"] == "epsilon" and "prompt" in meta


def test_merge_of_a_merge_fp32_same_image_and_nested_recipe(comfy_server):
    prompt = {**loaders("AB"), **merge_of_merge(),
              **sample_nodes(["M2", 0], ["M2", 1], ["LA", 2], "live_mm", "l"),
              **save(["M2", 0], ["M2", 1], ["LA", 2], "mm32", "fp32")}
    live = only_image(comfy_server, comfy_server.run(prompt), "Il")
    path = saved_file(comfy_server, "mm32")
    again = stock_image(comfy_server, expose(comfy_server, path), "reloaded_mm")
    assert (again == live).all()
    with safe_open(path, "pt") as f:
        m = json.loads(f.metadata()["elemental_merge_recipe"])["model"]
    assert (m["mode"], m["alpha"], m["block_weights_alpha"], m["sources"]["A"]["kind"],
            m["sources"]["A"]["elemental_alpha"]) == ("Weight sum", 0.375, "GRAD_V", "merge", SPEC)
    assert [m["sources"]["B"]["name"], m["sources"]["A"]["sources"]["A"]["name"]] == \
        ["test_B.safetensors", "test_A.safetensors"]


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


# ---- Load Merge Recipe ---------------------------------------------------------------------------------------

def rebuild_and_save(server, inputs: dict, prefix: str) -> str:
    """LoadMergeRecipe(inputs) saved as fp32 with its VAE (test_A's); returns the file."""
    server.free_memory()  # the rebuild loads its own sources: drop the earlier prompts' models first
    prompt = {"R": {"class_type": "LoadMergeRecipe", "inputs": inputs},
              **save(["R", 0], ["R", 1], ["R", 3], prefix, "fp32")}
    outputs = server.run(prompt)
    assert "Sources checked:" in outputs["R"]["text"][0]
    return saved_file(server, prefix)


def assert_same_tensors(a: str, b: str):
    """Every tensor's bytes equal (hash of the data; the metadata holds each graph's own prompt)."""
    with safe_open(a, "pt") as fa, safe_open(b, "pt") as fb:
        assert sorted(fa.keys()) == sorted(fb.keys())
        for key in fa.keys():
            x, y = fa.get_tensor(key), fb.get_tensor(key)
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), key


def test_load_recipe_from_saved_file_rebuilds_it_exactly(comfy_server):
    """merge of a merge, read from the saved file under output/checkpoints: the fp32 rebuild is the file."""
    path = saved_file(comfy_server, "mm32")
    rel = os.path.relpath(path, comfy_server.output_dir).replace(os.sep, "/")
    rebuilt = rebuild_and_save(comfy_server, {"merge_file": f"{rel} [output]", "recipe_json": ""}, "rebuilt_mm")
    assert_same_tensors(rebuilt, path)
    with safe_open(rebuilt, "pt") as f:
        again = json.loads(f.metadata()["elemental_merge_recipe"])
    with safe_open(path, "pt") as f:
        first = json.loads(f.metadata()["elemental_merge_recipe"])
    assert again["model"] == first["model"]  # the rebuilt merge carries the same recipe


def test_load_pasted_recipe(comfy_server, spec_fp32):
    _, path = spec_fp32
    with safe_open(path, "pt") as f:
        text = f.metadata()["elemental_merge_recipe"]
    rebuilt = rebuild_and_save(comfy_server, {"merge_file": "(pasted recipe)", "recipe_json": text}, "rebuilt_spec")
    assert_same_tensors(rebuilt, path)


def test_missing_and_changed_sources_listed_and_nothing_loaded(comfy_server, spec_fp32):
    from devkit.server import ComfyError

    _, path = spec_fp32
    with safe_open(path, "pt") as f:
        doc = json.loads(f.metadata()["elemental_merge_recipe"])
    doc["model"]["sources"]["A"]["sha256"] = "0123456789" + "0" * 54
    doc["model"]["sources"]["B"]["name"] = "gone.safetensors"
    prompt = {"R": {"class_type": "LoadMergeRecipe", "inputs": {"merge_file": "(pasted recipe)",
                                                                "recipe_json": json.dumps(doc)}},
              **save(["R", 0], ["R", 1], None, "never", "fp16")}
    with pytest.raises(ComfyError) as e:
        comfy_server.run(prompt)
    msg = str(e.value)
    assert "model.sources.A: checkpoint 'test_A.safetensors' has sha256 " in msg
    assert "the recipe expects 0123456789: a different file" in msg
    assert "model.sources.B: checkpoint 'gone.safetensors' not found in models/checkpoints" in msg
    assert not glob.glob(os.path.join(comfy_server.output_dir, "checkpoints", "never_*"))


def test_bad_pasted_recipe_rejected_at_queue_time(comfy_server):
    status, body = comfy_server.post_prompt({"R": {"class_type": "LoadMergeRecipe", "inputs": {
        "merge_file": "(pasted recipe)", "recipe_json": '{"format": "elemental-merge-recipe", "version": 9}'}},
        **save(["R", 0], ["R", 1], None, "never", "fp16")})
    assert status == 400
    assert "recipe version 9 is newer than this pack reads (up to 2): update the pack" in json.dumps(body)


def test_reload_by_recipe_example_gives_the_live_merge_image(comfy_server):
    """The example: LoadMergeRecipe with a pasted recipe, sampled and saved again. Its image is the image of
    the same merge built live with the merge nodes (queued separately: four models at once would not fit)."""
    from devkit.workflows import load_api_workflow

    comfy_server.free_memory()
    example = load_api_workflow("reload_by_recipe")
    rebuilt = only_image(comfy_server, comfy_server.run(example), "7")
    doc = json.loads(example["1"]["inputs"]["recipe_json"])
    comfy_server.free_memory()
    k = example["5"]["inputs"]
    live_prompt = {**loaders("AB"),
                   "S": {"class_type": "ElementalSpec", "inputs": {"spec": doc["model"]["elemental_alpha"],
                                                                   "architecture": "sd1"}},
                   "M": {"class_type": "ElementalMerge", "inputs": {
                       "model_a": ["LA", 0], "model_b": ["LB", 0], "clip_a": ["LA", 1], "clip_b": ["LB", 1],
                       "mode": "Weight sum", "alpha": doc["model"]["alpha"], "beta": 0.25,
                       "elemental_alpha": ["S", 0], "print_change": False}},
                   **sample_nodes(["M", 0], ["M", 1], ["LA", 2], "live_example", "l")}
    live_prompt["Pl"]["inputs"]["text"] = example["2"]["inputs"]["text"]
    live_prompt["Kl"]["inputs"].update(seed=k["seed"], steps=k["steps"], cfg=k["cfg"])
    live = only_image(comfy_server, comfy_server.run(live_prompt), "Il")
    assert (rebuilt == live).all()
    assert saved_file(comfy_server, "reload_by_recipe")


def test_save_then_reload_by_recipe_examples(comfy_server):
    """The two examples chained as the README tells users: merge_then_save writes a merge, and
    reload_by_recipe, pointed at that file instead of its pasted recipe, rebuilds the same merge (same image
    with the same sampling) and saves it again with the same tensors."""
    from devkit.workflows import load_api_workflow, with_inputs

    comfy_server.free_memory()
    first = load_api_workflow("merge_then_save")
    live = only_image(comfy_server, comfy_server.run(first), "11")
    saved = saved_file(comfy_server, "merge_then_save")
    comfy_server.free_memory()
    rel = os.path.relpath(saved, comfy_server.output_dir).replace(os.sep, "/")
    again = with_inputs(load_api_workflow("reload_by_recipe"), "1", merge_file=f"{rel} [output]", recipe_json="")
    again["2"]["inputs"]["text"] = first["6"]["inputs"]["text"]
    again["5"]["inputs"].update({k: first["9"]["inputs"][k] for k in ("seed", "steps", "cfg", "sampler_name")})
    again["8"]["inputs"]["filename_prefix"] = "checkpoints/reloaded_example"
    rebuilt = only_image(comfy_server, comfy_server.run(again), "7")
    assert (rebuilt == live).all(), "the merge rebuilt from the saved file samples another image"
    assert_same_tensors(saved_file(comfy_server, "reloaded_example"), saved)


def test_reload_by_recipe_ui_file_is_its_api_twin(comfy_server):
    """The template users open is the prompt CI queues: same nodes, widget values and links."""
    from devkit.ui_workflow import api_to_ui
    from devkit.workflows import load_api_workflow, load_ui_workflow

    ui = load_ui_workflow("reload_by_recipe")
    derived = api_to_ui(load_api_workflow("reload_by_recipe"), comfy_server.object_info())
    strip = lambda wf: ([(n["id"], n["type"], n["widgets_values"], [i["link"] for i in n["inputs"]])  # noqa: E731
                         for n in sorted(wf["nodes"], key=lambda n: n["id"])], wf["links"])
    assert strip(ui) == strip(derived)

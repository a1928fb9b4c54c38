"""The merge nodes end to end, through a real ComfyUI server and its queue API (fixture `comfy_server`).

Images are compared pixel for pixel: sampling on CPU is deterministic, so a merge whose every ratio is 0 must
give model A's image exactly, every ratio 1 model B's, and model A sampled again after a merge graph ran (the
merge patches A's shared module while it samples) must give the image it gave before.
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
from devkit.ui_workflow import ui_to_api
from devkit.workflows import load_api_workflow, load_ui_workflow, png_pixels, with_inputs

WORKFLOWS = ["elemental_merge_basic", "add_difference_block_weights", "merge_then_save"]


def sample(model, clip, vae, prefix: str, start: int) -> dict:
    """API nodes that sample `model` 1 step at 64x64 and save the image; ids from `start`."""
    s = start
    return {
        str(s): {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", "clip": clip}},
        str(s + 1): {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": clip}},
        str(s + 2): {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        str(s + 3): {"class_type": "KSampler", "inputs": {
            "model": model, "positive": [str(s), 0], "negative": [str(s + 1), 0], "latent_image": [str(s + 2), 0],
            "seed": 11, "steps": 1, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        str(s + 4): {"class_type": "VAEDecode", "inputs": {"samples": [str(s + 3), 0], "vae": vae}},
        str(s + 5): {"class_type": "SaveImage", "inputs": {"images": [str(s + 4), 0], "filename_prefix": prefix}},
    }


def loaders() -> dict:
    return {
        "1": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "test_A.safetensors"}},
        "2": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "test_B.safetensors"}},
    }


def merge(spec: str, mode="Weight sum", alpha=0.5) -> dict:
    return {
        "3": {"class_type": "ElementalSpec", "inputs": {"spec": spec, "architecture": "auto"}},
        "4": {"class_type": "ElementalMerge", "inputs": {
            "model_a": ["1", 0], "model_b": ["2", 0], "clip_a": ["1", 1], "clip_b": ["2", 1], "mode": mode,
            "alpha": alpha, "beta": 0.25, "elemental_alpha": ["3", 0], "print_change": True}},
    }


def image(server, outputs, node_id):
    imgs = server.images(outputs, node_id)
    assert len(imgs) == 1
    return png_pixels(imgs[0])


@pytest.mark.parametrize("spec,source", [("::0", "A"), ("::1", "B")])
def test_all_ratios_give_one_source_bit_identical(comfy_server, spec, source):
    """Every ratio 0 (text encoder included: BASE is a block) is model A; every ratio 1 is model B."""
    ref = {"A": ("1", 0), "B": ("2", 0)}[source]
    prompt = {**loaders(), **merge(spec),
              **sample(["4", 0], ["4", 1], ["1", 2], f"merged_{source}", 10),
              **sample([ref[0], 0], [ref[0], 1], ["1", 2], f"plain_{source}", 20)}
    outputs = comfy_server.run(prompt)
    merged, plain = image(comfy_server, outputs, "15"), image(comfy_server, outputs, "25")
    assert np.array_equal(merged, plain), f"spec {spec!r} did not give model {source}'s image"
    report = outputs["4"]["text"][0]
    assert "Weight sum" in report and "test_A.safetensors" in report
    assert "[Elemental Merge]" in comfy_server.log_text()  # print_change logs the report too


def test_sources_untouched_by_a_merge_graph(comfy_server):
    """A sampled, then a merge of A sampled, then A again: the last image is the first one.

    The third prompt wraps A in the stock ModelMergeSimple at ratio 1.0 (exactly A: the patch has strength
    0), only so that ComfyUI's cache cannot hand back the first result without sampling again."""
    before = comfy_server.run({**loaders(), **sample(["1", 0], ["1", 1], ["1", 2], "a_before", 20)})
    merged = comfy_server.run({**loaders(), **merge("OUT03-OUT05::0.9", alpha=0.5),
                               **sample(["4", 0], ["4", 1], ["1", 2], "a_merged", 10)})
    after = comfy_server.run({**loaders(),
                              "5": {"class_type": "ModelMergeSimple",
                                    "inputs": {"model1": ["1", 0], "model2": ["1", 0], "ratio": 1.0}},
                              **sample(["5", 0], ["1", 1], ["1", 2], "a_after", 20)})
    first, last = image(comfy_server, before, "25"), image(comfy_server, after, "25")
    assert np.array_equal(first, last), "model A changed after being merged"
    assert not np.array_equal(first, image(comfy_server, merged, "15")), "the merge did nothing"


def test_bad_spec_rejected_at_queue_time(comfy_server):
    prompt = {**loaders(), **merge("IN04:attn1:0.5\nOUT99::0.5"),
              **sample(["4", 0], ["4", 1], ["1", 2], "never", 10)}
    status, body = comfy_server.post_prompt(prompt)
    assert status == 400, body
    errors = body["node_errors"]["3"]["errors"]
    details = " ".join(e["details"] for e in errors)
    assert "line 2, column 1" in details and "OUT99" in details, details


def test_bad_block_weights_rejected_at_queue_time(comfy_server):
    prompt = {**loaders(), **merge("::0.5"),
              "5": {"class_type": "BlockWeights", "inputs": {"weights": "0.5, 0.5, nope", "architecture": "sd1"}},
              **sample(["4", 0], ["4", 1], ["1", 2], "never", 10)}
    prompt["4"]["inputs"]["block_weights_alpha"] = ["5", 0]
    status, body = comfy_server.post_prompt(prompt)
    assert status == 400 and "5" in body["node_errors"], body
    assert "line 1, column" in body["node_errors"]["5"]["errors"][0]["details"]


@pytest.mark.parametrize("name", WORKFLOWS)
def test_example_workflow_runs(comfy_server, name):
    prompt = load_api_workflow(name)
    outputs = comfy_server.run(prompt)
    save = [nid for nid, n in prompt.items() if n["class_type"] == "SaveImage"]
    assert save and all(comfy_server.images(outputs, nid) for nid in save)
    merge_node = next(nid for nid, n in prompt.items() if n["class_type"] == "ElementalMerge")
    if prompt[merge_node]["inputs"]["print_change"]:
        assert "alpha" in outputs[merge_node]["text"][0]


def check_weight_sum_file(path: str, checkpoints: dict, alpha: float, spec: str) -> dict:
    """Every UNet and text-encoder tensor of a saved Weight-sum merge of A and B against A(1-a)+Ba computed
    here from the source files: the UNet is merged in fp32 (exact when saved as fp32, rounded once when
    saved as fp16); the fp16 text encoder is merged with ComfyUI's stochastic rounding, so within one fp16
    ulp. Tensors in no block (the VAE) are A's. Returns the file's metadata."""
    import merge_core as mc

    with safe_open(path, "pt") as out, safe_open(checkpoints["A"], "pt") as fa, \
            safe_open(checkpoints["B"], "pt") as fb:
        arch = mc.get_architecture("sd1")
        keys = [k for k in fa.keys() if arch.block_of(k) is not None and not k.endswith("position_ids")]
        ratios = mc.resolve_ratios(keys, arch, alpha, spec=mc.parse_spec(spec, arch, keys=keys)).ratios
        assert set(out.keys()) >= set(fa.keys()) - {"cond_stage_model.transformer.text_model.embeddings.position_ids"}
        for key in fa.keys():
            got = out.get_tensor(key)
            if key not in ratios:
                if got.is_floating_point():
                    assert torch.equal(got, fa.get_tensor(key).to(got.dtype)), key  # VAE: A's
                continue
            a = ratios[key]
            A, B = fa.get_tensor(key).float(), fb.get_tensor(key).float()
            expected = A * (1 - a) + a * B if a != 0 else A
            if key.startswith("model."):
                assert torch.equal(got, expected.to(got.dtype)), f"{key} (a={a})"
            else:
                assert got.dtype == torch.float16
                ulp = dtype_ulp(expected, torch.float16)
                assert ((got.float() - expected).abs() <= ulp).all(), f"{key} (a={a})"
        return out.metadata()


def newest(output_dir: str, prefix: str) -> str:
    saved = sorted(glob.glob(os.path.join(output_dir, "checkpoints", f"{prefix}_*_.safetensors")))
    assert saved, os.listdir(output_dir)
    return saved[-1]


def test_saved_merge_reloads_equal_to_formula(comfy_server, checkpoints):
    """merge_then_save's file (fp16): every tensor equals the formula, and the recipe is in its metadata."""
    prompt = load_api_workflow("merge_then_save")
    comfy_server.run(prompt)
    spec = next(n for n in prompt.values() if n["class_type"] == "ElementalSpec")["inputs"]["spec"]
    alpha = next(n for n in prompt.values() if n["class_type"] == "ElementalMerge")["inputs"]["alpha"]
    metadata = check_weight_sum_file(newest(comfy_server.output_dir, "merge_then_save"), checkpoints, alpha, spec)
    m = json.loads(metadata["elemental_merge_recipe"])["model"]
    assert m["mode"] == "Weight sum" and m["alpha"] == alpha and m["elemental_alpha"] == spec
    # The stock loaders give their MODEL no name; ElementalMerge reads the files from the graph, with hashes.
    assert [(s["kind"], s["name"]) for s in m["sources"].values()] == [
        ("checkpoint", "test_A.safetensors"), ("checkpoint", "test_B.safetensors")]
    assert all(len(s["sha256"]) == 64 for s in m["sources"].values())


def test_save_never_overwrites(comfy_server):
    """A second save with the same prefix gets the next number (the graph changes so that it runs again)."""
    prompt = {**loaders(), **merge("::0.5"),
              "5": {"class_type": "SaveMergedCheckpoint", "inputs": {
                  "model": ["4", 0], "filename_prefix": "checkpoints/twice", "precision": "fp16"}}}
    comfy_server.run(prompt)
    comfy_server.run(with_inputs(prompt, "3", spec="::0.25"))
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(comfy_server.output_dir, "checkpoints", "twice_*")))
    assert names == ["twice_00001_.safetensors", "twice_00002_.safetensors"]
    with safe_open(os.path.join(comfy_server.output_dir, "checkpoints", names[0]), "pt") as f:
        m = json.loads(f.metadata()["elemental_merge_recipe"])["model"]
    assert [s["name"] for s in m["sources"].values()] == ["test_A.safetensors", "test_B.safetensors"]
    assert m["elemental_alpha"] == "::0.5"


def test_stock_checkpoint_save_saves_the_merge(comfy_server, checkpoints):
    """ComfyUI's own CheckpointSave writes the merged weights (fp32 UNet: bit-exact to the formula)."""
    spec = "OUT00-OUT11::0.75"
    prompt = {**loaders(), **merge(spec),
              "5": {"class_type": "CheckpointSave", "inputs": {
                  "model": ["4", 0], "clip": ["4", 1], "vae": ["1", 2], "filename_prefix": "checkpoints/stock"}}}
    comfy_server.run(prompt)
    metadata = check_weight_sum_file(newest(comfy_server.output_dir, "stock"), checkpoints, 0.5, spec)
    assert "ElementalMerge" in metadata["prompt"]  # the stock node records the graph, not our recipe


@pytest.mark.parametrize("name", WORKFLOWS)
def test_ui_workflow_matches_api_twin(comfy_server, name):
    """What users open (UI format) is what CI queues (API format): nodes, widget values and links."""
    ui, api = load_ui_workflow(name), load_api_workflow(name)
    assert ui_to_api(ui, comfy_server.object_info()) == api, f"{name}: the template and its API twin differ"
    assert len(ui["links"]) == sum(isinstance(v, list) for n in api.values() for v in n["inputs"].values())

"""Task-vector merges end to end through a real ComfyUI server: the two example workflows run as saved, their
saved files equal the float64 formulas on a covering sample of keys (with each block's density from the
Block Weights and the spec), and a DARE merge rebuilt from its recipe is the same file, tensor for tensor.
A bad density or a method with too few models is refused, naming the input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from devkit.ui_workflow import ui_to_api
from devkit.workflows import load_api_workflow, load_ui_workflow, png_pixels
from tests.e2e.test_save_recipe import saved_file
from tests.helpers import task_oracles as oracle

SAMPLE_PREFIXES = (
    "model.diffusion_model.input_blocks.0.0.weight",
    "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
    "model.diffusion_model.input_blocks.7.0.in_layers.2.weight",
    "model.diffusion_model.middle_block.1.proj_in.weight",
    "model.diffusion_model.output_blocks.4.1.transformer_blocks.0.attn2.to_q.weight",
    "model.diffusion_model.output_blocks.4.1.transformer_blocks.0.attn1.to_q.weight",
    "model.diffusion_model.output_blocks.4.1.norm.bias",
    "model.diffusion_model.output_blocks.11.0.emb_layers.1.weight",
    "model.diffusion_model.out.2.weight",
    "cond_stage_model.transformer.text_model.encoder.layers.3.mlp.fc1.weight",
)


@pytest.fixture(autouse=True)
def _one_model_set_at_a_time(comfy_server):
    """Each test loads up to three SD1.5 models in fp32 (12.6 GB on the CPU): the server drops them after it,
    so no two tests' model sets are held at once."""
    yield
    comfy_server.free_memory()


def _node(prompt: dict, class_type: str) -> str:
    (node_id,) = [k for k, v in prompt.items() if v["class_type"] == class_type]
    return node_id


def _tensors(path: str, keys) -> dict:
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k).to(torch.float32).numpy() for k in keys}


def _values(prompt: dict, merge_id: str, keys: list) -> dict:
    """key -> the merge's parameters, resolved by merge_core from the prompt's texts (tested on its own)."""
    import merge_core as mc

    arch = mc.get_architecture("sd1")
    inputs = prompt[merge_id]["inputs"]
    out = {k: {n: inputs[n] for n in ("alpha", "density", "drop_rate", "epsilon", "outlier_rate")} for k in keys}
    for name in ("alpha", "density", "drop_rate"):
        weights = spec = None
        if isinstance(inputs.get(f"block_weights_{name}"), list):
            text = prompt[inputs[f"block_weights_{name}"][0]]["inputs"]["weights"]
            weights = mc.parse_block_weights(text, arch, alpha=inputs[name])
        if isinstance(inputs.get(f"elemental_{name}"), list):
            spec = mc.parse_spec(prompt[inputs[f"elemental_{name}"][0]]["inputs"]["spec"], arch, keys=keys)
        if weights is None and spec is None:
            continue
        res = mc.resolve_ratios(keys, arch, inputs[name], block_weights=weights, spec=spec)
        for k in keys:
            out[k][name] = res.ratios.get(k, inputs[name])
    return out


def _check_saved(server, checkpoints, prompt, merge_id, path, method, seed=0):
    inputs = prompt[merge_id]["inputs"]
    names = [n for n in "ABC" if f"model_{n.lower()}" in inputs]
    with safe_open(path, "pt") as f:
        saved_keys = list(f.keys())
        recipe = json.loads(f.metadata()["elemental_merge_recipe"])
    keys = [k for k in saved_keys if k.startswith(("model.diffusion_model.", "cond_stage_model."))]
    values = _values(prompt, merge_id, keys)
    sample = [k for k in SAMPLE_PREFIXES]
    got = _tensors(path, sample)
    src = {n: _tensors(checkpoints[n], sample) for n in names}
    for key in sample:
        want = oracle.merge(method, src["A"][key], [src[n][key] for n in names[1:]], values[key], seed, key)
        np.testing.assert_allclose(got[key].astype(np.float64), want, rtol=2 ** -10, atol=1e-6, err_msg=key)
        assert not np.array_equal(got[key], src["A"][key].astype(np.float16).astype(np.float32)), key
    assert recipe["model"]["mode"] == method and sorted(recipe["model"]["sources"]) == names
    return recipe, values


def test_ties_example_block_density(comfy_server, checkpoints):
    name = "task_ties_block_density"
    prompt = load_api_workflow(name)
    assert ui_to_api(load_ui_workflow(name), comfy_server.object_info()) == prompt
    outputs = comfy_server.run(prompt)
    merge_id = _node(prompt, "ElementalMerge")
    report = outputs[merge_id]["text"][0]
    assert report.startswith("TIES (SD1.x) alpha=1.0 density=0.2: A=test_A.safetensors, B=test_B.safetensors, "
                             "C=test_C.safetensors")
    recipe, values = _check_saved(comfy_server, checkpoints, prompt, merge_id, saved_file(comfy_server, name), "TIES")
    assert recipe["model"]["task"]["block_weights_density"].startswith("0.5, 0.1,0.1")
    # the block weights and the spec gave these keys their own density
    assert values["model.diffusion_model.input_blocks.0.0.weight"]["density"] == 0.1
    assert values["model.diffusion_model.output_blocks.4.1.transformer_blocks.0.attn2.to_q.weight"]["density"] == 0.5
    assert values["model.diffusion_model.output_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"]["density"] == 0.4
    assert values["cond_stage_model.transformer.text_model.encoder.layers.3.mlp.fc1.weight"]["density"] == 0.5


def test_dare_example_rebuilt_from_its_recipe_is_the_same_file(comfy_server, checkpoints):
    name = "task_dare_seed"
    prompt = load_api_workflow(name)
    assert ui_to_api(load_ui_workflow(name), comfy_server.object_info()) == prompt
    comfy_server.run(prompt)
    merge_id = _node(prompt, "ElementalMerge")
    first = saved_file(comfy_server, name)
    recipe, values = _check_saved(comfy_server, checkpoints, prompt, merge_id, first, "DARE", seed=42)
    assert recipe["model"]["task"]["merge_seed"] == 42
    assert values["model.diffusion_model.output_blocks.4.1.transformer_blocks.0.attn2.to_q.weight"]["drop_rate"] == 0.99
    with safe_open(first, "pt") as f:
        meta = f.metadata()
    comfy_server.free_memory()  # the rebuild loads its own A, B and C
    rebuild = {
        "R": {"class_type": "LoadMergeRecipe", "inputs": {"merge_file": "(pasted recipe)",
                                                          "recipe_json": meta["elemental_merge_recipe"]}},
        "W": {"class_type": "SaveMergedCheckpoint", "inputs": {
            "model": ["R", 0], "clip": ["R", 1], "vae": ["R", 3], "filename_prefix": "checkpoints/dare_rebuilt",
            "precision": "fp16"}}}
    comfy_server.run(rebuild)
    second = saved_file(comfy_server, "dare_rebuilt")
    with safe_open(first, "pt") as f, safe_open(second, "pt") as g:
        assert sorted(f.keys()) == sorted(g.keys())
        for key in f.keys():
            assert torch.equal(f.get_tensor(key), g.get_tensor(key)), key
    # another seed's masks: the XY seed axis below (and tests/unit/test_task_vectors.py)


def _bad(prompt_inputs: dict) -> dict:
    return {
        "1": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "test_A.safetensors"}},
        "2": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "test_B.safetensors"}},
        "4": {"class_type": "ElementalMerge", "inputs": {
            "model_a": ["1", 0], "model_b": ["2", 0], "mode": "TIES", "alpha": 1.0, "beta": 0.25,
            "print_change": False, **prompt_inputs}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 2]}},
    }


@pytest.mark.parametrize("name,value", [("density", 1.5), ("drop_rate", -0.1), ("epsilon", 2.0)])
def test_out_of_range_parameter_refused_at_queue_time(comfy_server, name, value):
    status, body = comfy_server.post_prompt(_bad({name: value}))
    assert status == 400, body
    text = json.dumps(body["node_errors"]["4"])
    assert name in text and "1" in text, text


def test_too_few_models_refused_at_queue_time_naming_the_inputs(comfy_server):
    """Which models are linked is known at queue time (the node asks ComfyUI for its linked inputs' types):
    a method given too few is refused by /prompt, naming the inputs to connect; ComfyUI's own link type
    check, which it then leaves to the node, still refuses a wrong link; Merge Checkpoint Files counts its
    picked sources the same way."""
    prompt = _bad({})
    prompt["4"]["inputs"]["mode"] = "Model Stock"
    status, body = comfy_server.post_prompt(prompt)
    assert status == 400, body
    text = json.dumps(body["node_errors"]["4"])
    assert ("mode 'Model Stock' needs at least 2 models besides the base model_a; connect model_b, model_c"
            in text), text
    wrong = _bad({"model_c": ["1", 1]})  # a CLIP into a MODEL input
    status, body = comfy_server.post_prompt(wrong)
    assert status == 400 and "model_c: the link gives CLIP, the input takes MODEL" in json.dumps(
        body["node_errors"]["4"]), body
    files = {"3": {"class_type": "MergeCheckpointFiles", "inputs": {
        "ckpt_a": "test_A.safetensors", "ckpt_b": "test_B.safetensors", "mode": "Model Stock", "alpha": 1.0,
        "beta": 0.0,
        "filename_prefix": "checkpoints/never", "precision": "fp16"}}}
    status, body = comfy_server.post_prompt(files)
    assert status == 400 and ("mode 'Model Stock' needs at least 2 models besides the base ckpt_a; connect ckpt_b, "
                              "ckpt_c") in json.dumps(body["node_errors"]["3"]), body
    files["3"]["inputs"]["ckpt_c"] = "no_such_file.safetensors"
    status, body = comfy_server.post_prompt(files)
    assert status == 400 and "ckpt_c: 'no_such_file.safetensors' is not in models/checkpoints" in json.dumps(
        body["node_errors"]["3"]), body


def _single_image(server, prompt: dict, merge_inputs: dict, prefix: str):
    """The image of ElementalMerge(`merge_inputs`) + KSampler with the plot's prompts and sampling: what a
    cell must equal."""

    plot = prompt[_node(prompt, "ElementalXYPlot")]["inputs"]
    single = {k: v for k, v in prompt.items() if v["class_type"] in ("CheckpointLoaderSimple", "ElementalSpec")}
    single.update({
        "M": {"class_type": "ElementalMerge", "inputs": {**merge_inputs, "print_change": False}},
        "P": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["M", 1], "text": plot["positive"]}},
        "N": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["M", 1], "text": plot["negative"]}},
        "L": {"class_type": "EmptyLatentImage", "inputs": {"width": plot["width"], "height": plot["height"],
                                                           "batch_size": 1}},
        "K": {"class_type": "KSampler", "inputs": {
            "model": ["M", 0], "positive": ["P", 0], "negative": ["N", 0], "latent_image": ["L", 0],
            **{k: plot[k] for k in ("seed", "steps", "cfg", "sampler_name", "scheduler")}, "denoise": 1.0}},
        "D": {"class_type": "VAEDecode", "inputs": {"samples": ["K", 0], "vae": plot["vae"]}},
        "S": {"class_type": "SaveImage", "inputs": {"images": ["D", 0], "filename_prefix": prefix}}})
    return png_pixels(server.images(server.run(single), "S")[0])


def test_xy_dare_seed_axis_cells_equal_single_merges(comfy_server):
    """The example plot's merge_seed axis: a cell is pixel for pixel ElementalMerge + KSampler with that seed
    (the same masks in a cell as in a single merge), and the two seeds give different images."""

    name = "xy_dare_seed"
    prompt = load_api_workflow(name)
    assert ui_to_api(load_ui_workflow(name), comfy_server.object_info()) == prompt
    outputs = comfy_server.run(prompt)
    cells = [png_pixels(p) for p in comfy_server.images(outputs, _node(prompt, "SaveImage"))]
    assert len(cells) == 2 and not np.array_equal(cells[0], cells[1])
    plot = prompt[_node(prompt, "ElementalXYPlot")]["inputs"]
    # the second cell: its masks re-drawn by the incremental re-merge after the first cell's
    merge_inputs = {k: plot[k] for k in ("model_a", "model_b", "clip_a", "clip_b", "mode", "alpha", "beta",
                                         "drop_rate", "elemental_drop_rate")}
    image = _single_image(comfy_server, prompt, {**merge_inputs, "merge_seed": 2}, "xy_dare_single2")
    assert np.array_equal(image, cells[1]), "merge_seed 2: the cell differs from ElementalMerge + KSampler"


def test_diff_checker_takes_a_task_method(comfy_server, checkpoints):
    """TIES in the diff checker: a target at ratio 0 keeps A on exactly its keys (lambda 0), counted as changed
    against the base's lambda; the image with it differs from the base one. The base merges OUT05 only (lambda
    0 elsewhere keeps A), so that the two merges cost seconds, not minutes."""
    import merge_core as mc
    from tests.e2e.test_diff_checker import csv_rows

    prompt = {
        "1": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "test_A.safetensors"}},
        "2": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "test_B.safetensors"}},
        "5": {"class_type": "ElementalSpec", "inputs": {"spec": "NOT OUT05::0", "architecture": "sd1"}},
        "3": {"class_type": "ElementalDiffChecker", "inputs": {
            "model_a": ["1", 0], "model_b": ["2", 0], "clip_a": ["1", 1], "clip_b": ["2", 1],
            "vae": ["1", 2], "model_a_name": ["1", 3], "model_b_name": ["2", 3], "elemental_alpha": ["5", 0],
            "mode": "TIES", "alpha": 1.0, "beta": 0.25, "density": 0.3, "positive": "a red cube", "negative": "",
            "width": 64, "height": 64, "batch_size": 1, "seed": 5, "steps": 1, "cfg": 5.0,
            "sampler_name": "euler", "scheduler": "normal", "targets": "OUT05:attn2", "ratio": 0.0,
            "threshold": 20, "amplify": 8.0}},
    }
    _stem, rows = csv_rows(comfy_server, comfy_server.run(prompt))
    (row,) = rows
    arch = mc.get_architecture("sd1")
    with safe_open(checkpoints["A"], "pt") as f:
        keys = list(f.keys())
    expected = [k for k in keys if k.startswith("model.diffusion_model.") and arch.block_of(k) == "OUT05"
                and "attn2" in k]
    assert int(row["keys changed"]) == len(expected) > 0
    assert float(row["mean abs diff"]) > 0


def test_xy_merge_method_axis(comfy_server):
    """A `merge method` axis: the TIES cell is pixel for pixel the single TIES merge + KSampler, and differs
    from the Weight sum cell of the same models. Alpha is 0 outside the output blocks (A's weights: TIES's
    selection over the whole UNet would cost most of a minute per merge here, for nothing the axis needs)."""

    prompt = load_api_workflow("xy_dare_seed")
    plot_id = _node(prompt, "ElementalXYPlot")
    prompt["5"] = {"class_type": "ElementalSpec", "inputs": {"spec": "NOT OUT00-OUT11::0", "architecture": "sd1"}}
    prompt[plot_id]["inputs"].update(x_type="merge method", x_values="Weight sum\nTIES", mode="Weight sum",
                                     filename_prefix="ElementalXY/xy_method", elemental_alpha=["5", 0])
    outputs = comfy_server.run(prompt)
    cells = [png_pixels(p) for p in comfy_server.images(outputs, _node(prompt, "SaveImage"))]
    assert len(cells) == 2 and not np.array_equal(cells[0], cells[1])
    plot = prompt[plot_id]["inputs"]
    merge = {k: plot[k] for k in ("model_a", "model_b", "clip_a", "clip_b", "alpha", "beta", "density",
                                  "elemental_alpha")}
    image = _single_image(comfy_server, prompt, {**merge, "mode": "TIES"}, "xy_method_single")
    assert np.array_equal(image, cells[1]), "the TIES cell differs from ElementalMerge + KSampler"

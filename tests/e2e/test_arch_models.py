"""SD2.x-v, SD3 and Flux (dev, schnell) merged, saved, reloaded and sampled through a real ComfyUI server.

The models are seeded random-weight fixtures in the real layouts (devkit.fixtures_arch), loaded by the stock
loaders (CheckpointLoaderSimple; UNETLoader for Flux's diffusion-model-only files). One server with
`--fp16-unet --fp16-text-enc` serves the whole module: weights stay fp16 as in the files (ComfyUI computes
in fp32 on the CPU), which halves the memory of a pair of models; a merged weight is computed in fp32 and
rounded once to fp16, so each saved element must be one of the two fp16 neighbours of the formula's exact
(float64) value; a key at ratio 0 must be A's bit for bit.

Every key's expected ratio comes from a block predicate written here (not from merge_core's tables). Each
test's wall time and the peak RSS of server + test process are printed (`-s`) and appended to
$ELEMENTAL_CACHE/arch_test_peaks.tsv.
"""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch

from tests.helpers.arch_checks import (ARCH_LABELS, assert_mismatch_refused, assert_sampled, check_weight_sum_file,
                                expected_summary, in_proj_count, loader_node, merge_node, merge_recipe, name,
                                newest_file, measured, report_block_summary, run_patient, sample_nodes, spec_ratio,
                                start_server)
from devkit.fixtures_arch import FIXTURES, checkpoints_dir, ensure_fixture
from devkit.ui_workflow import ui_to_api
from devkit.workflows import load_api_workflow, load_ui_workflow, on_fixtures, only_image

UNET = "model.diffusion_model."
FIXTURE_SET = [("sd2v", "A"), ("sd2v", "B"), ("sd3", "A"), ("sd3", "B"), ("flux_dev", "A"), ("flux_dev", "B"),
               ("flux_schnell", "A"), ("flux_schnell", "B"), ("flux_ae", "A")]


@pytest.fixture(scope="module")
def fixtures(comfyui_dir) -> dict:
    """(kind, name) -> path; written on first use into the checkpoints cache, then reused."""
    return {(k, n): ensure_fixture(checkpoints_dir(), k, n) for k, n in FIXTURE_SET}


@pytest.fixture(scope="module")
def server(comfyui_dir, checkpoints, fixtures):
    """One fp16 ComfyUI for the module, each fixture linked into the model folder its loader reads."""
    srv = start_server(comfyui_dir, {"sd1_A": checkpoints["A"]},
                       {path: FIXTURES[kind].folder for (kind, _), path in fixtures.items()})
    try:
        yield srv
    finally:
        srv.cleanup()


@pytest.fixture(autouse=True)
def peak_memory(request, server):
    """Wall time and peak RSS (server + this process) of each test, printed and appended to a TSV."""
    with measured(request, server, settle=2.0):
        yield


# ---- SD2.x 768-v --------------------------------------------------------------------------------------------

SD2_BLOCKS = ["BASE"] + [f"IN{i:02d}" for i in range(12)] + ["M00"] + [f"OUT{i:02d}" for i in range(12)]
SD2_WEIGHTS = dict(zip(SD2_BLOCKS, [0.3, 0, 0.1, 0, 0, 0.5, 0, 0, 0.7, 0, 0, 0, 0.2, 0.4,
                                    0, 0, 0.6, 0, 0, 0.9, 0, 0, 0, 0, 0, 1.0]))
SD2_SPEC = """IN04:attn2:0.25
OUT05 OUT11:NOT norm:0.8
BASE:resblocks.5.attn:0.65
BASE:mlp.c_fc:0.05
M00:proj_in:1"""
SD2_ENTRIES = [({"IN04"}, ("attn2",), False, 0.25), ({"OUT05", "OUT11"}, ("norm",), True, 0.8),
               ({"BASE"}, ("resblocks.5.attn",), False, 0.65), ({"BASE"}, ("mlp.c_fc",), False, 0.05),
               ({"M00"}, ("proj_in",), False, 1.0)]


def sd2_block(key: str) -> str | None:
    """SuperMerger's SD1/SD2 blocks, stated for checkpoint names."""
    m = re.match(r"model\.diffusion_model\.(input|output)_blocks\.(\d+)\.", key)
    if m:
        return ("IN" if m.group(1) == "input" else "OUT") + f"{int(m.group(2)):02d}"
    for prefix, block in (("model.diffusion_model.time_embed.", "IN00"), ("model.diffusion_model.middle_block.", "M00"),
                          ("model.diffusion_model.out.", "OUT11"), ("cond_stage_model.model.", "BASE")):
        if key.startswith(prefix):
            return None if key.endswith("logit_scale") else block
    return None


def sd2_ratio(key: str, spec_only: bool = False):
    block = sd2_block(key)
    start = None if spec_only else SD2_WEIGHTS.get(block)
    return spec_ratio(key, block, start, SD2_ENTRIES)


def test_sd2v_merge_save_reload_sample(server, fixtures):
    """SD2-v A+B: block weights + a spec on UNet blocks and OpenCLIP-H names; every saved tensor is the
    formula; the change report lists the spec's blocks; the merge samples; the saved file reloads as
    v-prediction (its image equals the merge's, and forcing eps changes it)."""
    a, b = name(fixtures, "sd2v", "A"), name(fixtures, "sd2v", "B")
    weights = ",".join(str(SD2_WEIGHTS[b_]) for b_ in SD2_BLOCKS)
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": a}},
              "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": b}},
              **merge_node(["1", 0], ["2", 0], ["1", 1], ["2", 1], weights, SD2_SPEC, arch="sd2"),
              "53": {"class_type": "SaveMergedCheckpoint", "inputs": {
                  "model": ["52", 0], "clip": ["52", 1], "vae": ["1", 2],
                  "filename_prefix": "checkpoints/sd2v_merge", "precision": "fp16"}},
              **sample_nodes(["52", 0], ["52", 1], ["1", 2], "sd2v_merged", 10),
              **sample_nodes(["1", 0], ["1", 1], ["1", 2], "sd2v_plain", 20)}
    outputs = run_patient(server, prompt)
    merged_img = assert_sampled(server, outputs, ("15", "16"), ("25", "26"))

    saved = newest_file(os.path.join(server.output_dir, "checkpoints"), "sd2v_merge")
    result = check_weight_sum_file(saved, fixtures[("sd2v", "A")], fixtures[("sd2v", "B")], sd2_ratio)
    from safetensors import safe_open
    with safe_open(fixtures[("sd2v", "A")], "pt") as fa:
        a_keys = list(fa.keys())
    assert result["checked"] >= len(a_keys)
    expected_ratios = {sd2_ratio(k) for k in a_keys} - {None, 0, 0.0}
    assert set(result["ratios"]) == expected_ratios  # every non-zero ratio of the test occurs in the file
    # OpenCLIP names reached through ComfyUI's split q/k/v: layer 5's fused in_proj merged at the spec ratio.
    for k in ("cond_stage_model.model.transformer.resblocks.5.attn.in_proj_weight",
              "cond_stage_model.model.positional_embedding", "cond_stage_model.model.text_projection"):
        assert sd2_ratio(k) in result["ratios"], k
    recipe = merge_recipe(result["metadata"])
    assert recipe["architecture"] == "sd2" and recipe["text_encoder_merged"] is True
    assert result["metadata"].get("modelspec.predict_key") == "v"

    report = outputs["52"]["text"][0]
    summary = report_block_summary(report)
    expected = expected_summary(a_keys, sd2_block, sd2_ratio, {"IN04", "OUT05", "OUT11", "BASE", "M00"},
                                count=in_proj_count)
    assert {b_: n for b_, (n, _) in summary.items()} == expected, report[-1500:]

    # Reload the saved merge with the stock loader: v-prediction again (same image as the merge itself).
    os.symlink(saved, os.path.join(server.checkpoints_dir, os.path.basename(saved)))
    reload = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": os.path.basename(saved)}},
              "2": {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["1", 0], "sampling": "eps",
                                                                      "zsnr": False}},
              **sample_nodes(["1", 0], ["1", 1], ["1", 2], "sd2v_reloaded", 10),
              **sample_nodes(["2", 0], ["1", 1], ["1", 2], "sd2v_reloaded_eps", 20)}
    out2 = run_patient(server, reload)
    assert np.array_equal(only_image(server, out2, "15"), merged_img), "the reloaded merge is not the merge"
    assert not np.array_equal(only_image(server, out2, "25"), merged_img), "eps and v sampling agree: test is blind"


# ---- SD3 (2 joint blocks, CLIP-L + CLIP-G) ------------------------------------------------------------------

SD3_BLOCKS = ["CLIP", "T5", "IN"] + [f"J{i:02d}" for i in range(38)] + ["OUT"]
SD3_WEIGHTS = {"CLIP": 0.35, "IN": 0.25, "J00": 0.5, "J01": 0.7, "OUT": 0.6}
SD3_SPEC = """J00:context_block.attn:0.1
J01:x_block.mlp:0.95
CLIP:clip_g:0.8
CLIP:text_projection:0.05
IN:pos_embed:1"""
SD3_ENTRIES = [({"J00"}, ("context_block.attn",), False, 0.1), ({"J01"}, ("x_block.mlp",), False, 0.95),
               ({"CLIP"}, ("clip_g",), False, 0.8), ({"CLIP"}, ("text_projection",), False, 0.05),
               ({"IN"}, ("pos_embed",), False, 1.0)]


def sd3_block(key: str) -> str | None:
    m = re.match(r"model\.diffusion_model\.joint_blocks\.(\d+)\.", key)
    if m:
        return f"J{int(m.group(1)):02d}"
    if re.match(r"model\.diffusion_model\.(x_embedder|pos_embed|t_embedder|y_embedder|context_embedder)", key):
        return "IN"
    if key.startswith("model.diffusion_model.final_layer."):
        return "OUT"
    if key.startswith(("text_encoders.clip_l.", "text_encoders.clip_g.")):
        return None if key.endswith("logit_scale") else "CLIP"
    return None


def sd3_ratio(key: str, spec_only: bool = False):
    block = sd3_block(key)
    start = None if spec_only else SD3_WEIGHTS.get(block, 0.0) if block else None
    return spec_ratio(key, block, start, SD3_ENTRIES)


def test_sd3_merge_save_sample(server, fixtures):
    """SD3 A+B (CheckpointLoaderSimple): 42 block weights and a spec on joint blocks, IN and both CLIPs; the
    saved UNet + text encoders are the formula key by key; the report lists J00, J01, CLIP, IN; it samples."""
    a, b = name(fixtures, "sd3", "A"), name(fixtures, "sd3", "B")
    weights = ",".join(str(SD3_WEIGHTS.get(b_, 0.0)) for b_ in SD3_BLOCKS)
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": a}},
              "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": b}},
              **merge_node(["1", 0], ["2", 0], ["1", 1], ["2", 1], weights, SD3_SPEC, arch="sd3"),
              "53": {"class_type": "SaveMergedCheckpoint", "inputs": {
                  "model": ["52", 0], "clip": ["52", 1], "filename_prefix": "checkpoints/sd3_merge",
                  "precision": "fp16"}},
              "54": {"class_type": "SaveMergedDiffusionModel", "inputs": {
                  "model": ["52", 0], "filename_prefix": "diffusion_models/sd3_unet", "precision": "fp16"}},
              **sample_nodes(["52", 0], ["52", 1], ["1", 2], "sd3_merged", 10, latent="EmptySD3LatentImage"),
              **sample_nodes(["1", 0], ["1", 1], ["1", 2], "sd3_plain", 20, latent="EmptySD3LatentImage")}
    outputs = run_patient(server, prompt)
    assert_sampled(server, outputs, ("15", "16"), ("25", "26"))

    from safetensors import safe_open
    with safe_open(fixtures[("sd3", "A")], "pt") as fa:
        a_keys = [k for k in fa.keys() if not k.startswith("first_stage_model.")]
    saved = newest_file(os.path.join(server.output_dir, "checkpoints"), "sd3_merge")
    result = check_weight_sum_file(saved, fixtures[("sd3", "A")], fixtures[("sd3", "B")], sd3_ratio,
                                   expect_keys=a_keys)
    with safe_open(saved, "pt") as f:
        assert not [k for k in f.keys() if k.startswith("first_stage_model.")], "no VAE was given to save"
    assert set(result["ratios"]) == {sd3_ratio(k) for k in a_keys} - {None, 0, 0.0}
    recipe = merge_recipe(result["metadata"])
    assert recipe["architecture"] == "sd3" and recipe["text_encoder_merged"] is True

    # The diffusion-model-only save: exactly the UNet keys, the same tensors as in the full save.
    unet_only = newest_file(os.path.join(server.output_dir, "diffusion_models"), "sd3_unet")
    with safe_open(unet_only, "pt") as u, safe_open(saved, "pt") as full:
        assert set(u.keys()) == {k for k in a_keys if k.startswith(UNET)}
        assert all(torch.equal(u.get_tensor(k), full.get_tensor(k)) for k in u.keys())
        assert merge_recipe(u.metadata()) == recipe

    summary = report_block_summary(outputs["52"]["text"][0])
    expected = expected_summary(a_keys, sd3_block, sd3_ratio, {"J00", "J01", "CLIP", "IN"})
    assert {b_: n for b_, (n, _) in summary.items()} == expected, outputs["52"]["text"][0][-1500:]


# ---- Flux dev / schnell (1 double + 1 single block, CLIP-L conditioning) --------------------------------------

FLUX_BLOCKS = ["CLIP", "T5", "IN"] + [f"D{i:02d}" for i in range(19)] + [f"S{i:02d}" for i in range(38)] + ["OUT"]
FLUX_WEIGHTS = {"IN": 0.3, "D00": 0.6, "S00": 0.2, "OUT": 0.8}
FLUX_SPEC = """D00:img_attn:0.9
D00:txt_mlp:0.1
S00:linear2:1
IN:guidance_in:0.45"""
FLUX_ENTRIES = [({"D00"}, ("img_attn",), False, 0.9), ({"D00"}, ("txt_mlp",), False, 0.1),
                ({"S00"}, ("linear2",), False, 1.0), ({"IN"}, ("guidance_in",), False, 0.45)]
def flux_block(key: str) -> str | None:
    k = key[len(UNET):] if key.startswith(UNET) else key
    m = re.match(r"(double|single)_blocks\.(\d+)\.", k)
    if m:
        return ("D" if m.group(1) == "double" else "S") + f"{int(m.group(2)):02d}"
    if k.split(".")[0] in ("img_in", "txt_in", "time_in", "vector_in", "guidance_in"):
        return "IN"
    return "OUT" if k.startswith("final_layer.") else None


def flux_ratio(key: str, spec_only: bool = False):
    block = flux_block(key)
    start = None if spec_only else FLUX_WEIGHTS.get(block, 0.0) if block else None
    return spec_ratio(key, block, start, FLUX_ENTRIES)


def flux_graph(fixtures, a_kind, b_kind, prefix) -> dict:
    """UNETLoader A and B, the SD1.5 fixture's CLIP-L for conditioning, the Flux VAE, a merge, a UNet-only
    save, and 1-step samples of the merge (10-16) and of A (20-26)."""
    vae = os.path.basename(fixtures[("flux_ae", "A")])
    return {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": name(fixtures, a_kind, "A"),
                                                         "weight_dtype": "default"}},
            "2": {"class_type": "UNETLoader", "inputs": {"unet_name": name(fixtures, *b_kind),
                                                         "weight_dtype": "default"}},
            "3": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "test_A.safetensors"}},
            "4": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
            **merge_node(["1", 0], ["2", 0], weights=",".join(str(FLUX_WEIGHTS.get(b_, 0.0)) for b_ in FLUX_BLOCKS),
                         spec=FLUX_SPEC, arch="flux"),
            "53": {"class_type": "SaveMergedDiffusionModel", "inputs": {
                "model": ["52", 0], "filename_prefix": f"diffusion_models/{prefix}", "precision": "fp16"}},
            **sample_nodes(["52", 0], ["3", 1], ["4", 0], f"{prefix}_merged", 10, latent="EmptySD3LatentImage",
                           cfg=1.0, scheduler="simple"),
            **sample_nodes(["1", 0], ["3", 1], ["4", 0], f"{prefix}_plain", 20, latent="EmptySD3LatentImage",
                           cfg=1.0, scheduler="simple")}


def test_flux_dev_merge_save_reload_sample(server, fixtures):
    """Flux dev A+B from UNETLoader, conditioned by a CLIP-L: 61 block weights and a spec on D00, S00 and
    guidance_in; the UNet-only save holds exactly the diffusion model, each tensor the formula, with the
    recipe; the merge samples; the saved file reloads with UNETLoader and gives the merge's image."""
    outputs = run_patient(server, flux_graph(fixtures, "flux_dev", ("flux_dev", "B"), "flux_dev_merge"))
    merged_img = assert_sampled(server, outputs, ("15", "16"), ("25", "26"))

    from safetensors import safe_open
    with safe_open(fixtures[("flux_dev", "A")], "pt") as fa:
        a_keys = list(fa.keys())
    saved = newest_file(os.path.join(server.output_dir, "diffusion_models"), "flux_dev_merge")
    result = check_weight_sum_file(saved, fixtures[("flux_dev", "A")], fixtures[("flux_dev", "B")], flux_ratio,
                                   source_key=lambda k: k[len(UNET):], expect_keys=[UNET + k for k in a_keys])
    assert result["checked"] == len(a_keys), "the UNet-only save holds more than the diffusion model"
    assert set(result["ratios"]) == {flux_ratio(k) for k in a_keys} - {None, 0, 0.0}
    assert flux_ratio("guidance_in.in_layer.weight") in result["ratios"]
    recipe = merge_recipe(result["metadata"])
    assert recipe["architecture"] == "flux" and recipe["text_encoder_merged"] is False

    summary = report_block_summary(outputs["52"]["text"][0])
    assert {b_: n for b_, (n, _) in summary.items()} == expected_summary(a_keys, flux_block, flux_ratio,
                                                                           {"D00", "S00", "IN"})

    os.makedirs(os.path.join(server.models_dir, "diffusion_models"), exist_ok=True)
    os.symlink(saved, os.path.join(server.models_dir, "diffusion_models", os.path.basename(saved)))
    reload = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": os.path.basename(saved),
                                                           "weight_dtype": "default"}},
              "3": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "test_A.safetensors"}},
              "4": {"class_type": "VAELoader", "inputs": {"vae_name": os.path.basename(fixtures[("flux_ae", "A")])}},
              **sample_nodes(["1", 0], ["3", 1], ["4", 0], "flux_reloaded", 10, latent="EmptySD3LatentImage",
                             cfg=1.0, scheduler="simple")}
    out2 = run_patient(server, reload)
    assert np.array_equal(only_image(server, out2, "15"), merged_img), "the reloaded merge is not the merge"


def test_flux_dev_with_schnell_keeps_guidance_from_a(server, fixtures):
    """Flux dev (A) merged with schnell (B): one architecture, so it merges; schnell has no guidance_in, so
    those keys keep A's weights and the report names them; everything else is the formula."""
    outputs = run_patient(server, flux_graph(fixtures, "flux_dev", ("flux_schnell", "B"), "flux_dev_schnell"))
    assert_sampled(server, outputs, ("15", "16"), ("25", "26"))
    report = outputs["52"]["text"][0]
    kept = re.findall(r"kept from A: (\S+) \(missing in model B\)", report)
    assert sorted(kept) == sorted(f"diffusion_model.guidance_in.{p}" for p in
                                  ("in_layer.weight", "in_layer.bias", "out_layer.weight", "out_layer.bias")), report
    saved = newest_file(os.path.join(server.output_dir, "diffusion_models"), "flux_dev_schnell")
    check_weight_sum_file(saved, fixtures[("flux_dev", "A")], fixtures[("flux_schnell", "B")], flux_ratio,
                          source_key=lambda k: k[len(UNET):])


def test_flux_schnell_merge_save_sample(server, fixtures):
    """Flux schnell A+B (no guidance_in): the same weights and spec as dev; the spec's guidance_in entry selects
    nothing here, every saved tensor is the formula, the report lists D00 and S00, the merge samples."""
    outputs = run_patient(server, flux_graph(fixtures, "flux_schnell", ("flux_schnell", "B"), "flux_schnell_merge"))
    assert_sampled(server, outputs, ("15", "16"), ("25", "26"))
    from safetensors import safe_open
    with safe_open(fixtures[("flux_schnell", "A")], "pt") as fa:
        a_keys = list(fa.keys())
    assert not any(k.startswith("guidance_in.") for k in a_keys)
    saved = newest_file(os.path.join(server.output_dir, "diffusion_models"), "flux_schnell_merge")
    result = check_weight_sum_file(saved, fixtures[("flux_schnell", "A")], fixtures[("flux_schnell", "B")],
                                   flux_ratio, source_key=lambda k: k[len(UNET):],
                                   expect_keys=[UNET + k for k in a_keys])
    assert result["checked"] == len(a_keys)
    assert set(result["ratios"]) == {flux_ratio(k) for k in a_keys} - {None, 0, 0.0}
    assert merge_recipe(result["metadata"])["architecture"] == "flux"
    summary = report_block_summary(outputs["52"]["text"][0])
    expected = expected_summary(a_keys, flux_block, flux_ratio, {"D00", "S00", "IN"})
    report = outputs["52"]["text"][0]
    assert "IN" not in expected and {b_: n for b_, (n, _) in summary.items()} == expected, report
    assert "line 4, column 1: warning: entry selects no key in entry 'IN:guidance_in:0.45'" in report, report


def flux_template_ratio(key: str):
    """The Flux template's spec, read by hand: D blocks 0.3 (img_attn of D00-D04: 1), S blocks 0.7, others 0.5."""
    block = flux_block(key)
    if block is None:
        return None
    if block.startswith("D"):
        return 1.0 if int(block[1:]) <= 4 and ".img_attn." in key else 0.3
    return 0.7 if block.startswith("S") else 0.5


def test_flux_merge_example_workflow(server, fixtures):
    """The Flux template (example_workflows/flux_merge.json) on the fixtures, 64 px and one step. Its
    DualCLIPLoader (T5-XXL + CLIP-L) becomes the SD1.5 fixture's CLIP-L: ComfyUI's T5-XXL is fixed at full size
    (9.5 GB) and the fixtures take 768-d conditioning. The saved diffusion model is the template's formula."""
    prompt = on_fixtures(load_api_workflow("flux_merge"),
                         {"1": {"unet_name": name(fixtures, "flux_dev", "A")},
                          "2": {"unet_name": name(fixtures, "flux_dev", "B")},
                          "4": {"vae_name": name(fixtures, "flux_ae", "A")}},
                         replace={"3": {"class_type": "CheckpointLoaderSimple",
                                        "inputs": {"ckpt_name": "test_A.safetensors"}}},
                         relink={("3", 0): ("3", 1)})
    outputs = run_patient(server, prompt)
    assert only_image(server, outputs, "14").shape == (64, 64, 3)
    from safetensors import safe_open
    with safe_open(fixtures[("flux_dev", "A")], "pt") as fa:
        a_keys = list(fa.keys())
    saved = newest_file(os.path.join(server.output_dir, "diffusion_models"), "flux_merge")
    result = check_weight_sum_file(saved, fixtures[("flux_dev", "A")], fixtures[("flux_dev", "B")],
                                   flux_template_ratio, source_key=lambda k: k[len(UNET):],
                                   expect_keys=[UNET + k for k in a_keys])
    assert set(result["ratios"]) == {0.3, 0.7, 1.0, 0.5}
    summary = report_block_summary(outputs["6"]["text"][0])
    per_block = {b: sum(flux_block(k) == b for k in a_keys) for b in ("D00", "S00")}
    assert {b: n for b, (n, _) in summary.items()} == per_block, outputs["6"]["text"][0]


@pytest.mark.parametrize("template", ["flux_merge", "sdxl_merge"])
def test_architecture_template_matches_api_twin(server, template):
    """What users open (UI format) is what the tests queue (API format); sdxl_merge runs in test_arch_sdxl."""
    assert ui_to_api(load_ui_workflow(template), server.object_info()) == load_api_workflow(template)


# ---- refusals and detection ---------------------------------------------------------------------------------

MISMATCH_PAIRS = [("sd1", "sd2v"), ("sd1", "sd3"), ("flux_dev", "sd1"), ("flux_dev", "sd2v"), ("flux_dev", "sd3"),
                  ("sd3", "sd2v")]
@pytest.mark.parametrize("pair", MISMATCH_PAIRS, ids=lambda p: f"{p[0]}-vs-{p[1]}")
def test_architecture_mismatch_names_both_models(server, fixtures, pair):
    """Merging models of two architectures stops with an error naming both inputs and both architectures."""
    node_a, node_b = loader_node(fixtures, pair[0]), loader_node(fixtures, pair[1])
    assert_mismatch_refused(server, node_a, node_b, ARCH_LABELS[pair[0]], ARCH_LABELS[pair[1]])


@pytest.mark.parametrize("kind,arch", [("sd2v", "sd2"), ("sd3", "sd3")])
def test_detect_route_on_fixture_checkpoints(server, fixtures, kind, arch):
    """/elemental/detect reads the architecture from the checkpoint's header."""
    import urllib.parse
    answer = server.get_json("/elemental/detect?" + urllib.parse.urlencode({"ckpt_name": name(fixtures, kind)}))
    assert answer["arch"] == arch, answer


@pytest.mark.parametrize("kind", ["flux_dev", "flux_schnell"])
def test_detect_route_on_diffusion_model_files(server, fixtures, kind):
    """/elemental/detect with folder=diffusion_models reads UNETLoader's files; an unknown folder is refused."""
    import urllib.parse
    who = "A" if kind == "flux_dev" else "B"
    query = urllib.parse.urlencode({"ckpt_name": name(fixtures, kind, who), "folder": "diffusion_models"})
    answer = server.get_json("/elemental/detect?" + query)
    assert answer["arch"] == "flux" and answer["folder"] == "diffusion_models", answer
    status, body = server.request("GET", "/elemental/detect?" + urllib.parse.urlencode(
        {"ckpt_name": name(fixtures, kind, who), "folder": "loras"}))
    assert status == 400 and b"diffusion_models" in body, body
    status, _ = server.request("GET", "/elemental/detect?" + urllib.parse.urlencode(
        {"ckpt_name": name(fixtures, kind, who)}))
    assert status == 404  # not in checkpoints

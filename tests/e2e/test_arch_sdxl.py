"""Full-size SDXL base through a real ComfyUI server: load, merge, save, check every tensor, sample (marker `heavy`).

Two seeded SDXL checkpoints (UNet, CLIP-L, OpenCLIP-G, VAE; 6.9 GB each in fp16, devkit.fixtures_arch) are
loaded by the stock Load Checkpoint in a server started with `--fp16-unet --fp16-text-enc`, merged with block
weights and a spec (IN04, M00, OUT02 and both text encoders, including CLIP-G's fused `in_proj` reached
through ComfyUI's split q/k/v and OpenCLIP's `positional_embedding`), saved by Save Merged Checkpoint (which
streams the file one tensor at a time: the stock save of such a merge was killed at 23.8 GB), and every saved
tensor is compared with A(1-a)+Ba from the source files, one at a time.

It needs about 15 GiB, so it is deselected unless asked for:
    flock /tmp/elemental-heavy.lock bash scripts/test.sh tests/e2e/test_arch_sdxl.py -m heavy -s
"""
from __future__ import annotations

import os
import re

import pytest
from safetensors import safe_open

from tests.helpers.arch_checks import (ARCH_LABELS, assert_mismatch_refused, assert_sampled, check_weight_sum_file,
                                expected_summary, in_proj_count, loader_node, merge_node, merge_recipe, newest_file,
                                record_peak, report_block_summary, run_patient, sample_nodes, spec_ratio,
                                start_server)
from devkit.fixtures_arch import FIXTURES, checkpoints_dir, ensure_fixture
from devkit.proc_memory import PeakProbe
from devkit.workflows import load_api_workflow, on_fixtures

pytestmark = pytest.mark.heavy

OTHER_ARCHS = ["sd1", "sd2v", "sd3", "flux_dev"]
BLOCKS = ["BASE"] + [f"IN{i:02d}" for i in range(9)] + ["M00"] + [f"OUT{i:02d}" for i in range(9)]
# Few blocks non-zero: a key at ratio 0 is not patched at all, which keeps sampling the merge small.
WEIGHTS = {"BASE": 0.3, "IN00": 0.6, "IN04": 0.5, "OUT08": 0.9}
SPEC = """IN04:attn2:0.2
M00:NOT middle_block.1.:0.8
OUT02:transformer_blocks.1.ff:1
BASE:resblocks.7.attn.in_proj:0.65
BASE:conditioner.embedders.0:0.05
BASE:positional_embedding:0.45"""
ENTRIES = [({"IN04"}, ("attn2",), False, 0.2), ({"M00"}, ("middle_block.1.",), True, 0.8),
           ({"OUT02"}, ("transformer_blocks.1.ff",), False, 1.0),
           ({"BASE"}, ("resblocks.7.attn.in_proj",), False, 0.65),
           ({"BASE"}, ("conditioner.embedders.0",), False, 0.05), ({"BASE"}, ("positional_embedding",), False, 0.45)]


def block_of(key: str) -> str | None:
    """SuperMerger's SDXL blocks, stated for checkpoint names (label_emb with IN00, out. with OUT08)."""
    m = re.match(r"model\.diffusion_model\.(input|output)_blocks\.(\d+)\.", key)
    if m:
        return ("IN" if m.group(1) == "input" else "OUT") + f"{int(m.group(2)):02d}"
    for prefix, block in (("model.diffusion_model.time_embed.", "IN00"), ("model.diffusion_model.label_emb.", "IN00"),
                          ("model.diffusion_model.middle_block.", "M00"), ("model.diffusion_model.out.", "OUT08"),
                          ("conditioner.embedders.", "BASE")):
        if key.startswith(prefix):
            return None if key.endswith(("logit_scale", "position_ids")) else block
    return None


def ratio_of(key: str, spec_only: bool = False):
    block = block_of(key)
    start = None if spec_only else WEIGHTS.get(block, 0.0) if block else None
    return spec_ratio(key, block, start, ENTRIES)


@pytest.fixture(scope="module")
def sdxl(request, comfyui_dir, checkpoints):
    """(fixture paths, a fp16 server with both SDXL files and the SD1.5 test_A)."""
    if "heavy" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("full-size SDXL needs ~15 GiB: run with -m heavy (docs/architectures.md)")
    paths = {n: ensure_fixture(checkpoints_dir(), "sdxl", n) for n in ("A", "B")}
    others = {(k, "A"): ensure_fixture(checkpoints_dir(), k, "A") for k in OTHER_ARCHS if k != "sd1"}
    srv = start_server(comfyui_dir, {"sdxl_A": paths["A"], "sdxl_B": paths["B"], "sd1_A": checkpoints["A"]},
                       {path: FIXTURES[kind].folder for (kind, _), path in others.items()})
    try:
        yield paths, srv, others
    finally:
        srv.cleanup()


def test_sdxl_merge_save_every_tensor_report_sample(sdxl, request):
    paths, server, _ = sdxl
    a, b = os.path.basename(paths["A"]), os.path.basename(paths["B"])
    with PeakProbe([server.proc.pid, os.getpid()]) as probe:
        prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": a}},
                  "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": b}},
                  **merge_node(["1", 0], ["2", 0], ["1", 1], ["2", 1],
                               ",".join(str(WEIGHTS.get(x, 0.0)) for x in BLOCKS), SPEC, arch="sdxl"),
                  "53": {"class_type": "SaveMergedCheckpoint", "inputs": {
                      "model": ["52", 0], "clip": ["52", 1], "vae": ["1", 2],
                      "filename_prefix": "checkpoints/sdxl_merge", "precision": "fp16"}},
                  **sample_nodes(["52", 0], ["52", 1], ["1", 2], "sdxl_merged", 10),
                  **sample_nodes(["1", 0], ["1", 1], ["1", 2], "sdxl_plain", 20)}
        outputs = run_patient(server, prompt, timeout=2400)
        assert_sampled(server, outputs, ("15", "16"), ("25", "26"))

        saved = newest_file(os.path.join(server.output_dir, "checkpoints"), "sdxl_merge")
        with safe_open(paths["A"], "pt") as fa:
            a_keys = list(fa.keys())
        result = check_weight_sum_file(saved, paths["A"], paths["B"], ratio_of, expect_keys=a_keys)
        assert set(result["ratios"]) == {ratio_of(k) for k in a_keys} - {None, 0, 0.0}
        for k in ("conditioner.embedders.1.model.positional_embedding",
                  "conditioner.embedders.1.model.text_projection",
                  "conditioner.embedders.1.model.transformer.resblocks.7.attn.in_proj_weight"):
            assert ratio_of(k) in result["ratios"], k  # merged (not left at A as SuperMerger does)
        recipe = merge_recipe(result["metadata"])
        assert recipe["architecture"] == "sdxl" and recipe["text_encoder_merged"] is True

        summary = report_block_summary(outputs["52"]["text"][0])
        # ComfyUI's CLIP also holds CLIP-L's text_projection, which SDXL files (and saves) leave out.
        held = a_keys + ["conditioner.embedders.0.transformer.text_projection.weight"]
        expected = expected_summary(held, block_of, ratio_of, {"IN04", "M00", "OUT02", "BASE"}, count=in_proj_count)
        assert {x: n for x, (n, _) in summary.items()} == expected, outputs["52"]["text"][0][-1500:]
    record_peak(request.node.nodeid, probe)


@pytest.mark.parametrize("other", OTHER_ARCHS)
def test_sdxl_against_other_architectures_names_both(sdxl, request, other):
    """SD1.5, SD2-v, SD3 or Flux dev (A) against SDXL (B) stops with the error naming both inputs and both
    architectures."""
    paths, server, others = sdxl
    server.free_memory()
    with PeakProbe([server.proc.pid, os.getpid()]) as probe:
        assert_mismatch_refused(server, loader_node(others, other),
                                {"class_type": "CheckpointLoaderSimple",
                                 "inputs": {"ckpt_name": os.path.basename(paths["B"])}},
                                ARCH_LABELS[other], ARCH_LABELS["sdxl"])
    record_peak(request.node.nodeid, probe)


TEMPLATE_SAMPLING = ("7", "8", "9", "10", "11", "12")  # prompts, latent, KSampler, VAEDecode, SaveImage
TEMPLATE_WEIGHTS = dict(zip(BLOCKS, [0.3, 0.2, 0.2, 0.2, 0.4, 0.4, 0.4, 0.6, 0.6, 0.6, 0.7,
                                     0.8, 0.8, 0.8, 0.6, 0.6, 0.6, 0.4, 0.4, 0.4]))


def template_ratio(key: str):
    """The SDXL template's weights and spec, read by hand: OUT00-OUT02 attn2 at 0, CLIP-L 0, CLIP-G 0.5."""
    block = block_of(key)
    if block is None:
        return None
    if block in ("OUT00", "OUT01", "OUT02") and ".attn2." in key:
        return 0.0
    if key.startswith("conditioner.embedders.0."):
        return 0.0
    if key.startswith("conditioner.embedders.1."):
        return 0.5
    return TEMPLATE_WEIGHTS[block]


def test_sdxl_merge_example_workflow(sdxl, request):
    """The SDXL template (example_workflows/sdxl_merge.json) on the fixtures, its merge and save: the saved
    checkpoint is the template's formula, tensor by tensor. Its sampling nodes are left out here: sampling a
    merge that patches every key holds A, B and the merged weights at once (22.7 GiB peak RSS on this CPU-only
    machine, measured with them in), and sampling an SDXL merge is proven by the test above."""
    paths, server, _ = sdxl
    server.free_memory()
    with PeakProbe([server.proc.pid, os.getpid()]) as probe:
        prompt = on_fixtures(load_api_workflow("sdxl_merge"), {"1": {"ckpt_name": os.path.basename(paths["A"])},
                                                               "2": {"ckpt_name": os.path.basename(paths["B"])}})
        prompt = {nid: node for nid, node in prompt.items() if nid not in TEMPLATE_SAMPLING}
        outputs = run_patient(server, prompt, timeout=2400)
        assert "alpha" in outputs["5"]["text"][0]
        saved = newest_file(os.path.join(server.output_dir, "checkpoints"), "sdxl_merge")
        result = check_weight_sum_file(saved, paths["A"], paths["B"], template_ratio)
        assert set(result["ratios"]) == {0.2, 0.4, 0.5, 0.6, 0.7, 0.8}
        assert merge_recipe(result["metadata"])["architecture"] == "sdxl"
    record_peak(request.node.nodeid, probe)


def test_detect_route_on_sdxl_checkpoints(sdxl):
    """/elemental/detect reads SDXL from both fixture checkpoints' headers."""
    import urllib.parse
    paths, server, _ = sdxl
    for path in paths.values():
        answer = server.get_json("/elemental/detect?" + urllib.parse.urlencode(
            {"ckpt_name": os.path.basename(path)}))
        assert answer["arch"] == "sdxl", answer


def test_sdxl_file_merge_equals_the_live_save(sdxl, request, tmp_path):
    """Merge Checkpoint Files and the command line write the tensors Save Merged Checkpoint writes for the same
    full-size SDXL merge (block weights and the spec above, fp16), bit for bit, with the same recipe (CLIP-G's
    logit_scale included: neither merges it)."""
    import subprocess
    import sys
    from tests.e2e.test_file_merge import assert_same_recipes, assert_same_tensors, recipe
    paths, server, _ = sdxl
    a, b = os.path.basename(paths["A"]), os.path.basename(paths["B"])
    weights = ",".join(str(WEIGHTS.get(x, 0.0)) for x in BLOCKS)
    with PeakProbe([server.proc.pid, os.getpid()]) as probe:
        prompt = {"1": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": a}},
                  "2": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": b}},
                  **merge_node(["1", 0], ["2", 0], ["1", 1], ["2", 1], weights, SPEC, arch="sdxl"),
                  "53": {"class_type": "SaveMergedCheckpoint", "inputs": {
                      "model": ["52", 0], "clip": ["52", 1], "vae": ["1", 2],
                      "filename_prefix": "checkpoints/sdxl_live", "precision": "fp16"}},
                  "60": {"class_type": "MergeCheckpointFiles", "inputs": {
                      "ckpt_a": a, "ckpt_b": b, "mode": "Weight sum", "alpha": 0.5, "beta": 0.0,
                      "block_weights_alpha": ["50", 0], "elemental_alpha": ["51", 0],
                      "filename_prefix": "checkpoints/sdxl_files", "precision": "fp16"}}}
        prompt["52"]["inputs"]["print_change"] = False
        run_patient(server, prompt, timeout=2400)
        folder = os.path.join(server.output_dir, "checkpoints")
        live, node = newest_file(folder, "sdxl_live"), newest_file(folder, "sdxl_files")
        out = str(tmp_path / "sdxl_cli.safetensors")
        try:  # one copy beside the live save at a time: three 6.6 GB files do not fit the shared disk
            assert_same_tensors(live, node)
            node_recipe = recipe(node)
            os.remove(node)
            root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            done = subprocess.run([sys.executable, "-m", "merge_core", "merge", paths["A"], paths["B"], "-o", out,
                                   "--mode", "Weight sum", "--alpha", "0.5", "--block-weights", weights,
                                   "--spec", SPEC, "--precision", "fp16", "--quiet", "--no-hash",
                                   "--unet-dtype", "fp16", "--text-encoder-dtype", "fp16"],
                                  cwd=root, capture_output=True, text=True, timeout=1200)
            assert done.returncode == 0, done.stderr
            assert_same_tensors(live, out)
            assert_same_recipes(recipe(live), node_recipe, recipe(out))
        finally:
            for p in (live, node, out):
                if os.path.exists(p):
                    os.remove(p)
    record_peak(request.node.nodeid, probe)

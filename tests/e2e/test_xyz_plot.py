"""The XY plot's new axes and Z through the real server: every new axis's cells equal the same
settings run one by one as Load Checkpoint + ElementalMerge (+ ElementalAdjust) + KSampler, bit for bit; seed
and prompt cells re-merge nothing; a 3x2x2 plot gives two labelled grids; a random cell's reported weights
rebuild it exactly; the example workflows run and match their UI versions."""
from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from devkit.workflows import load_api_workflow, png_pixels
from tests.e2e.test_merge_nodes import test_ui_workflow_matches_api_twin as check_ui_matches_api_twin

SAMPLING = {"seed": 11, "steps": 1, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal"}
POSITIVE, NEGATIVE = "a red cube", "blurry"
ADJUST = ("IN", "OUT", "OUT2", "CONT", "BRI", "COL1", "COL2", "COL3")
WORKFLOWS = ["xyz_seed_prompt", "xy_adjust_random"]


def plot_graph(x=("none", ""), y=("none", ""), z=("none", ""), random_settings="R", mode="Weight sum") -> dict:
    g = _plot_graph(x, y, z, random_settings, mode)
    if mode in ("Triple sum", "Sum twice", "Add difference"):
        g["5"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "test_C.safetensors"}}
        g["3"]["inputs"].update(model_c=["5", 0], clip_c=["5", 1])
    return g


def _plot_graph(x, y, z, random_settings, mode) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "test_A.safetensors"}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "test_B.safetensors"}},
        "3": {"class_type": "ElementalXYPlot", "inputs": {
            "model_a": ["1", 0], "model_b": ["2", 0], "clip_a": ["1", 1], "clip_b": ["2", 1], "vae": ["1", 2],
            "mode": mode, "alpha": 0.5, "beta": 0.25, "positive": POSITIVE, "negative": NEGATIVE,
            "width": 64, "height": 64, "batch_size": 1, **SAMPLING,
            "x_type": x[0], "x_values": x[1], "y_type": y[0], "y_values": y[1], "filename_prefix": "xyztest/xy",
            "z_type": z[0], "z_values": z[1], "random_settings": random_settings}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 1], "filename_prefix": "xyztest/cells"}},
    }


def single_graph(alpha=0.5, beta=0.25, bwa=None, bwb=None, spec="", adjust=None, seed=11, positive=POSITIVE,
                 model_a="test_A.safetensors", model_b="test_B.safetensors", model_c="test_C.safetensors",
                 mode="Weight sum", calc_mode=None, calc_option=None) -> dict:
    """One cell the stock way; every setting written out by the test, not read from the plot. The VAE is
    test_A's, as the plot's is, whichever model A the cell merges."""
    g = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": model_a}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": model_b}},
        "4": {"class_type": "ElementalMerge", "inputs": {
            "model_a": ["1", 0], "model_b": ["2", 0], "clip_a": ["1", 1], "clip_b": ["2", 1],
            "mode": mode, "alpha": alpha, "beta": beta, "print_change": False}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": positive}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": NEGATIVE}},
        "7": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "positive": ["5", 0], "negative": ["6", 0], "latent_image": ["7", 0],
            **SAMPLING, "seed": seed, "denoise": 1.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "xyztest/single"}},
    }
    if model_a != "test_A.safetensors":
        g["15"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "test_A.safetensors"}}
        g["9"]["inputs"]["vae"] = ["15", 2]
    if mode in ("Triple sum", "Sum twice", "Add difference"):
        g["3"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": model_c}}
        g["4"]["inputs"].update(model_c=["3", 0], clip_c=["3", 1])
    if calc_mode is not None:
        g["4"]["inputs"]["calc_mode"] = calc_mode
    if calc_option is not None:
        g["4"]["inputs"]["calc_option"] = calc_option
    for node, name, text in (("11", "block_weights_alpha", bwa), ("12", "block_weights_beta", bwb)):
        if text is not None:
            g[node] = {"class_type": "BlockWeights", "inputs": {"weights": text, "architecture": "auto"}}
            g["4"]["inputs"][name] = [node, 0]
    if spec:
        g["13"] = {"class_type": "ElementalSpec", "inputs": {"spec": spec, "architecture": "auto"}}
        g["4"]["inputs"]["elemental_alpha"] = ["13", 0]
    if adjust is not None:
        g["14"] = {"class_type": "ElementalAdjust", "inputs": {
            "model": ["4", 0], **{n: float(adjust.get(n, 0.0)) for n in ADJUST}}}
        g["8"]["inputs"]["model"] = ["14", 0]
    return g


def run_plot(server, graph):
    outputs = server.run(graph)
    cells = [png_pixels(p) for p in server.images(outputs, "4")]
    return outputs, cells


def single_image(server, **kw):
    return png_pixels(server.images(server.run(single_graph(**kw)), "10")[0])


def table_rows(outputs) -> dict:
    """cell index -> (step, keys re-merged, settings) from the plot's table output."""
    table = outputs["3"]["text"][0] if "text" in outputs["3"] else None
    assert table is not None, outputs["3"].keys()
    rows = {}
    for line in table.splitlines():
        parts = line.split("\t")
        if len(parts) >= 10 and parts[0].isdigit():
            rows[int(parts[1])] = (int(parts[0]), int(parts[5]), parts[9])
    return rows


def assert_same(server, cells, index, **kw):
    assert np.array_equal(cells[index], single_image(server, **kw)), f"cell {index} differs from {kw}"


@pytest.fixture(scope="module")
def xyz_run(comfy_server):
    """3 x 2 x 2: block weights alpha x prompt x seed."""
    graph = plot_graph(x=("block weights alpha", "GRAD_V\nFLAT_75\n" + ",".join(["0.9"] * 13 + ["0.1"] * 13)),
                       y=("prompt", "a red cube\na blue ball, on grass"), z=("seed", "11, 12"))
    return run_plot(comfy_server, graph)


def test_xyz_gives_two_labelled_grids_and_cells_equal_single_graphs(comfy_server, xyz_run):
    outputs, cells = xyz_run
    assert len(cells) == 12
    grids = outputs["3"]["images"]
    assert len(grids) == 2
    titles = []
    for g in grids:
        png = comfy_server.view(g["filename"], g["subfolder"])
        meta = json.loads(Image.open(io.BytesIO(png)).text["elemental_xy_plot"])
        titles.append(meta["title"])
        assert meta["z_type"] == "seed" and len(meta["cells"]) == 12
        w, h = Image.open(io.BytesIO(png)).size
        assert w >= 3 * 64 and h >= 2 * 64
    assert titles[0].startswith("Weight sum: test_A + test_B")  # names from the graph's stock loaders
    assert titles[0].endswith("Z: seed = 11") and titles[1].endswith("Z: seed = 12")
    bw3 = ",".join(["0.9"] * 13 + ["0.1"] * 13)
    # grid order: z outer, then y, then x; one cell per value of every axis
    assert_same(comfy_server, cells, 0, bwa="GRAD_V", positive="a red cube", seed=11)
    assert_same(comfy_server, cells, 6 + 3 + 1, bwa="FLAT_75", positive="a blue ball, on grass", seed=12)
    assert_same(comfy_server, cells, 6 + 2, bwa=bw3, positive="a red cube", seed=12)


def test_seed_and_prompt_cells_re_merge_nothing(xyz_run):
    outputs, _ = xyz_run
    rows = table_rows(outputs)
    assert len(rows) == 12
    by_step = sorted(rows.items(), key=lambda kv: kv[1][0])
    x_of = lambda i: i % 3  # noqa: E731
    for (prev, _), (cell, (step, keys, _)) in zip(by_step, by_step[1:]):
        if x_of(prev) == x_of(cell):  # same block weights: only the seed or the prompt changed
            assert keys == 0, f"step {step}: cell {cell} re-merged {keys} keys for a seed/prompt change"
        else:
            assert keys > 0
    # the order keeps each block-weight value together: exactly two re-merges after the first cell
    assert sum(1 for _, (step, keys, _) in by_step if step and keys) == 2


def test_alpha_and_beta_and_adjust_axes(comfy_server):
    outputs, cells = run_plot(comfy_server, plot_graph(
        x=("alpha and beta", "0.3 0.2\n0.8 0.1"), y=("adjust", "IN=2 CONT=1\n0,0,2,0,1,-1,0,0")))
    assert len(cells) == 4
    assert_same(comfy_server, cells, 0, alpha=0.3, beta=0.2, adjust={"IN": 2, "CONT": 1})
    assert_same(comfy_server, cells, 3, alpha=0.8, beta=0.1, adjust={"OUT2": 2, "BRI": 1, "COL1": -1})
    rows = table_rows(outputs)
    assert "adjust=[2,0,0,1,0,0,0,0]" in rows[0][2]


def test_pinpoint_adjust(comfy_server):
    _, cells = run_plot(comfy_server, plot_graph(x=("pinpoint adjust", "COL1, BRI"), y=("alpha", "-2, 3")))
    assert len(cells) == 4
    assert_same(comfy_server, cells, 1, adjust={"BRI": -2})
    assert_same(comfy_server, cells, 2, adjust={"COL1": 3})


def _reported(rows, index):
    settings = rows[index][2]
    bw = re.search(r"block_weights_alpha=(\S+)", settings)
    spec = re.search(r"elemental_alpha=\[([^\]]*)\]", settings)
    return (bw.group(1) if bw else None), (spec.group(1) if spec else "")


def test_random_cells_reproduce_from_the_reported_weights(comfy_server):
    pattern = ",".join(["X"] * 25 + ["ER"])  # block draws everywhere, one ratio per OUT11 key
    outputs, cells = run_plot(comfy_server, plot_graph(
        x=("random", "1, 2"), y=("add elemental", "OUT05::0"), random_settings=pattern + " lower=0.2 upper=0.8"))
    rows = table_rows(outputs)
    for i in (0, 1):
        bw, spec = _reported(rows, i)
        assert bw is not None and len(bw.split(",")) == 26
        assert all(0.2 <= float(v) <= 0.8 for v in bw.split(",")[:25])
        assert spec.startswith("OUT05::0, OUT11:model.diffusion_model.")
        assert_same(comfy_server, cells, i, bwa=bw, spec=spec)
    assert _reported(rows, 0) != _reported(rows, 1)


def test_model_axis_loads_each_checkpoint_once(comfy_server):
    outputs, cells = run_plot(comfy_server, plot_graph(
        x=("model B", "test_B.safetensors\ntest_C.safetensors"), y=("block weights beta", "FLAT_25")))
    assert len(cells) == 2
    assert_same(comfy_server, cells, 0)
    assert_same(comfy_server, cells, 1, model_b="test_C.safetensors")
    rows = table_rows(outputs)
    assert rows[1][1] > 600  # another checkpoint: a full re-merge


def test_model_a_and_model_c_axes(comfy_server):
    """Model A and model C swapped per cell (with their text encoders): each distinct pair is one full merge
    and every cell is the stock graph with those checkpoints. Three SD1.5 checkpoints in fp32 are in play:
    the server's cache is emptied before the plot and before the stock graphs, so they never add up."""
    comfy_server.free_memory()
    outputs, cells = run_plot(comfy_server, plot_graph(
        x=("model A", "test_A.safetensors\ntest_C.safetensors"),
        y=("model C", "test_C.safetensors\ntest_B.safetensors"), mode="Add difference"))
    assert len(cells) == 4 and len({c.tobytes() for c in cells}) == 4
    comfy_server.free_memory()
    assert_same(comfy_server, cells, 1, model_a="test_C.safetensors", mode="Add difference")
    assert_same(comfy_server, cells, 2, model_c="test_B.safetensors", mode="Add difference")
    rows = table_rows(outputs)
    assert "model_a=test_C.safetensors" in rows[1][2] and "model_c=test_B.safetensors" in rows[2][2]


def test_calc_mode_axis(comfy_server):
    """Each cell is ElementalMerge with that calc mode; the modes give different images. Two calc modes: cosineA
    (a cell with a model-wide statistic, checked by no other test) and tensor (a second calc mode, so a cell
    cannot pass by reusing the first one's calc or statistic). No "normal" cell: each is a full merge plus a
    full single merge on a CPU, and a plot cell in mode normal equal to its single merge is what every other
    test of this module checks; parsing "normal" on this axis is tests/unit/test_calc_modes.py's."""
    _, cells = run_plot(comfy_server, plot_graph(x=("calc mode", "cosineA\ntensor")))
    assert len(cells) == 2 and len({c.tobytes() for c in cells}) == 2
    for i, calc in enumerate(("cosineA", "tensor")):
        assert_same(comfy_server, cells, i, calc_mode=calc)


def test_calc_option_axis_is_derived_from_the_declared_parameter(comfy_server):
    """extract's gamma (calc_option) as an axis: each cell is ElementalMerge with that gamma; out of range is
    refused at queue time, naming the line and the declared range."""
    graph = plot_graph(x=("calc_option", "0.3\n4"), mode="Add difference")
    graph["3"]["inputs"]["calc_mode"] = "extract"
    _, cells = run_plot(comfy_server, graph)
    assert len(cells) == 2 and not np.array_equal(cells[0], cells[1])
    for i, gamma in enumerate((0.3, 4.0)):
        assert_same(comfy_server, cells, i, mode="Add difference", calc_mode="extract", calc_option=gamma)
    graph["3"]["inputs"]["x_values"] = "0.3\n25"
    status, body = comfy_server.post_prompt(graph)
    assert status == 400 and "x_values line 2: calc_option 25.0 is outside [0, 20]" in json.dumps(body), body


def test_block_weights_beta(comfy_server):
    _, cells = run_plot(comfy_server, plot_graph(x=("block weights beta", "FLAT_25\nGRAD_V"), mode="Triple sum"))
    assert len(cells) == 2 and not np.array_equal(cells[0], cells[1])
    assert_same(comfy_server, cells, 0, bwb="FLAT_25", mode="Triple sum")
    assert_same(comfy_server, cells, 1, bwb="GRAD_V", mode="Triple sum")


@pytest.mark.parametrize("name", WORKFLOWS)
def test_example_workflow_runs(comfy_server, name):
    prompt = load_api_workflow(name)
    outputs = comfy_server.run(prompt)
    plot = next(nid for nid, n in prompt.items() if n["class_type"] == "ElementalXYPlot")
    assert outputs[plot]["images"], name
    z_values = prompt[plot]["inputs"].get("z_values", "")
    if prompt[plot]["inputs"].get("z_type", "none") != "none":
        assert len(outputs[plot]["images"]) == len([v for v in re.split(r"[,\n]", z_values) if v.strip()])


@pytest.mark.parametrize("name", WORKFLOWS)
def test_ui_workflow_matches_api_twin(comfy_server, name):
    check_ui_matches_api_twin(comfy_server, name)

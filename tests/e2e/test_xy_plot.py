"""Elemental XY Plot through the real server: cells bit-identical to ElementalMerge + KSampler run one by one,
the grid's size, cells and labels, the saved PNG's metadata, queue-time validation, cancellation, and the
example workflows (API twins equal to their UI versions)."""
from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from devkit.ui_workflow import ui_to_api
from devkit.workflows import WORKFLOW_DIR, load_api_workflow, load_ui_workflow, png_pixels

SAMPLING = {"seed": 11, "steps": 1, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal"}
POSITIVE, NEGATIVE = "a red cube", "blurry"
X_VALUES = "OUT05:attn2.to_k, BASE:layers.3., IN07:"
Y_VALUES = "0.25, 1"


def plot_graph(x_type="pinpoint element", x_values=X_VALUES, y_type="alpha", y_values=Y_VALUES, steps=1,
               size=64) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "test_A.safetensors"}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "test_B.safetensors"}},
        "3": {"class_type": "ElementalXYPlot", "inputs": {
            "model_a": ["1", 0], "model_b": ["2", 0], "clip_a": ["1", 1], "clip_b": ["2", 1], "vae": ["1", 2],
            "mode": "Weight sum", "alpha": 0.5, "beta": 0.25, "positive": POSITIVE, "negative": NEGATIVE,
            "width": size, "height": size, "batch_size": 1, **SAMPLING, "steps": steps,
            "x_type": x_type, "x_values": x_values, "y_type": y_type, "y_values": y_values,
            "filename_prefix": "xytest/xy"}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 1], "filename_prefix": "xytest/cells"}},
    }


def single_graph(spec: str) -> dict:
    """The same merge as one cell, the stock way: ElementalMerge + CLIPTextEncode + KSampler + VAEDecode."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "test_A.safetensors"}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "test_B.safetensors"}},
        "3": {"class_type": "ElementalSpec", "inputs": {"spec": spec, "architecture": "auto"}},
        "4": {"class_type": "ElementalMerge", "inputs": {
            "model_a": ["1", 0], "model_b": ["2", 0], "clip_a": ["1", 1], "clip_b": ["2", 1],
            "mode": "Weight sum", "alpha": 0.5, "beta": 0.25, "elemental_alpha": ["3", 0],
            "print_change": False}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": POSITIVE}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": NEGATIVE}},
        "7": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "positive": ["5", 0], "negative": ["6", 0], "latent_image": ["7", 0],
            **SAMPLING, "denoise": 1.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "xytest/single"}},
    }


def cell_specs() -> list[str]:
    """Row-major (y outer): the spec each cell's merge is, written out by hand."""
    targets = ["OUT05:attn2.to_k", "BASE:layers.3.", "IN07:"]
    return [f"{t}:{r}" for r in ("0.25", "1.0") for t in targets]


@pytest.fixture(scope="module")
def plot_run(comfy_server):
    outputs = comfy_server.run(plot_graph())
    cells = [png_pixels(p) for p in comfy_server.images(outputs, "4")]
    grid_png = comfy_server.images(outputs, "3")[0]
    return outputs, cells, grid_png


def test_cells_equal_elemental_merge_one_by_one(comfy_server, plot_run):
    _, cells, _ = plot_run
    assert len(cells) == 6
    for i, spec in enumerate(cell_specs()):
        single = png_pixels(comfy_server.images(comfy_server.run(single_graph(spec)), "10")[0])
        assert np.array_equal(cells[i], single), f"cell {i} ({spec}) differs from ElementalMerge + KSampler"
    # the cells do differ from each other (the plot shows something)
    assert len({c.tobytes() for c in cells}) == 6


def test_grid_size_cells_and_labels(comfy_server, plot_run):
    _, cells, grid_png = plot_run
    g = png_pixels(grid_png)
    h, w, _ = g.shape
    # The cells form the bottom-right 3 x 2 block, row-major; the label bands are left and above them.
    block = np.concatenate([np.concatenate(cells[r * 3:(r + 1) * 3], axis=1) for r in range(2)], axis=0)
    assert np.array_equal(g[h - 128:, w - 192:], block)
    left, top = w - 192, h - 128
    assert left >= 64 and top >= 30, (left, top)
    white = np.all(g == 255, axis=-1)
    assert (~white[:top, left:]).sum() > 50, "no text in the title / column-label band"
    assert (~white[top:top + 64, :left]).sum() > 20, "no row label"
    assert (~white[top + 64:, :left]).sum() > 20, "no second row label"
    assert white[0, 0] and white[h - 1, 0] and white[top - 1, left - 1], "background expected there"
    for col in range(3):  # each column label has ink over its own column
        assert (~white[:top, left + col * 64:left + (col + 1) * 64]).sum() > 10
    meta = Image.open(io.BytesIO(grid_png)).text
    plot = json.loads(meta["elemental_xy_plot"])
    assert plot["x_type"] == "pinpoint element" and plot["y_values"] == Y_VALUES and len(plot["cells"]) == 6
    assert "prompt" in meta and "workflow" not in meta  # API queue: no workflow sent


def test_grid_is_saved_numbered_never_overwritten(comfy_server, plot_run):
    outputs, _, _ = plot_run
    first = outputs["3"]["images"][0]
    again = comfy_server.run(plot_graph(x_type="alpha", x_values="0.5", y_type="none", y_values=""))
    second = again["3"]["images"][0]
    assert first["subfolder"] == second["subfolder"] == "xytest"
    assert first["filename"] != second["filename"]
    assert os.path.exists(os.path.join(comfy_server.output_dir, "xytest", first["filename"]))


@pytest.mark.parametrize("field,value,where", [
    ("x_values", "OUT05:attn2.to_k\nOUT99:attn1", "x_values line 2"),
    ("y_values", "0.25\n0.5\nabc", "y_values line 3"),
    ("y_type", "none", "set y_type to 'alpha' or 'beta'"),
])
def test_invalid_axis_rejected_at_queue_time(comfy_server, field, value, where):
    graph = plot_graph()
    graph["3"]["inputs"][field] = value
    status, answer = comfy_server.post_prompt(graph)
    assert status == 400, answer
    text = json.dumps(answer)
    assert where in text, text


def test_cancel_leaves_models_intact(comfy_server, plot_run):
    _, cells, _ = plot_run
    pid = comfy_server.queue(plot_graph(steps=8))
    deadline = time.time() + 120
    while time.time() < deadline:  # interrupt once the plot is sampling (its progress reached us in the log)
        running = comfy_server.get_json("/queue")["queue_running"]
        if running and "Requested to load" in comfy_server.log_text().split(pid)[-1]:
            break
        time.sleep(0.2)
    time.sleep(2.0)
    comfy_server.interrupt()
    with pytest.raises(Exception):
        comfy_server.wait(pid)
    again = [png_pixels(p) for p in comfy_server.images(comfy_server.run(plot_graph()), "4")]
    assert all(np.array_equal(a, b) for a, b in zip(again, cells)), "cells changed after a cancelled plot"
    single = png_pixels(comfy_server.images(comfy_server.run(single_graph(cell_specs()[5])), "10")[0])
    assert np.array_equal(single, cells[5])


# ---- example workflows ---------------------------------------------------------------------------------------

XY_EXAMPLES = ["xy_pinpoint_element", "xy_pinpoint_blocks", "xy_elemental", "xy_alpha_beta", "xy_presets"]


@pytest.mark.parametrize("name", XY_EXAMPLES)
def test_example_workflow(comfy_server, name):
    api = load_api_workflow(name)
    assert ui_to_api(load_ui_workflow(name), comfy_server.object_info()) == api
    outputs = comfy_server.run(api)
    plot_id = next(k for k, v in api.items() if v["class_type"] == "ElementalXYPlot")
    grid_png = comfy_server.images(outputs, plot_id)[0]
    g = png_pixels(grid_png)
    assert g.shape[0] > 64 and g.shape[1] > 64
    assert os.path.isfile(os.path.join(WORKFLOW_DIR, f"{name}.json"))

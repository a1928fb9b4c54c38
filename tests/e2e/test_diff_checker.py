"""Elemental Diff Checker through the real server: zero difference at the base ratio, a many-key target beats a
no-key one, the CSV equals an independent computation from the saved images (fetched via /view), files are
never overwritten, and the example workflow runs and matches its UI version."""
from __future__ import annotations

import csv
import io
import os

import numpy as np

from devkit.ui_workflow import ui_to_api
from devkit.workflows import load_api_workflow, load_ui_workflow, png_pixels

TARGETS = "IN04\nOUT05:no_such_element"
SUBFOLDER = "diff/test_A_test_B"


def graph(ratio: float) -> dict:
    return {
        "1": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "test_A.safetensors"}},
        "2": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "test_B.safetensors"}},
        "3": {"class_type": "ElementalDiffChecker", "inputs": {
            "model_a": ["1", 0], "model_b": ["2", 0], "clip_a": ["1", 1], "clip_b": ["2", 1], "vae": ["1", 2],
            "model_a_name": ["1", 3], "model_b_name": ["2", 3],
            "mode": "Weight sum", "alpha": 0.5, "beta": 0.25, "positive": "a red cube", "negative": "",
            "width": 64, "height": 64, "batch_size": 1, "seed": 5, "steps": 1, "cfg": 5.0,
            "sampler_name": "euler", "scheduler": "normal", "targets": TARGETS, "ratio": ratio,
            "threshold": 20, "amplify": 8.0}},
    }


def csv_rows(server, outputs) -> tuple[str, list[dict]]:
    chart = outputs["3"]["images"][0]
    stem = chart["filename"].rsplit("_chart.png", 1)[0]
    raw = server.view(f"{stem}.csv", chart["subfolder"]).decode()
    return stem, list(csv.DictReader(io.StringIO(raw)))


def independent(base: np.ndarray, other: np.ndarray) -> tuple[float, int, float]:
    d = np.abs(base.astype(np.float64) - other.astype(np.float64))
    return d.sum() / d.size, int(d.max()), float(np.count_nonzero(d > 20)) / d.size


def test_base_ratio_gives_zero_then_many_keys_beat_none_and_files_accumulate(comfy_server):
    out0 = comfy_server.run(graph(0.5))
    stem0, rows0 = csv_rows(comfy_server, out0)
    assert [r["target"] for r in rows0] == ["IN04", "OUT05:no_such_element"]
    for r in rows0:  # ratio equals the base alpha: nothing changes
        assert (int(r["keys changed"]), float(r["mean abs diff"]), int(r["max diff"]),
                float(r["changed fraction"])) == (0, 0.0, 0, 0.0)

    out1 = comfy_server.run(graph(1.0))
    stem1, rows1 = csv_rows(comfy_server, out1)
    assert stem0 != stem1 and out0["3"]["images"][0]["subfolder"] == SUBFOLDER
    folder = os.path.join(comfy_server.output_dir, SUBFOLDER)
    names = os.listdir(folder)
    for stem in (stem0, stem1):
        assert {f"{stem}.csv", f"{stem}.gif", f"{stem}_chart.png", f"{stem}_00_base_0.png"} <= set(names)
    in04, none = rows1
    assert int(in04["keys changed"]) > 20 and int(none["keys changed"]) == 0
    assert float(in04["mean abs diff"]) > float(none["mean abs diff"]) == 0.0

    base = png_pixels(comfy_server.view(f"{stem1}_00_base_0.png", SUBFOLDER))
    for i, (row, tag) in enumerate(zip(rows1, ["IN04", "OUT05-no_such_element"]), start=1):
        img = png_pixels(comfy_server.view(f"{stem1}_{i:02}_{tag}_0.png", SUBFOLDER))
        mean, mx, frac = independent(base, img)
        assert abs(float(row["mean abs diff"]) - mean) < 1e-9, row
        assert int(row["max diff"]) == mx and abs(float(row["changed fraction"]) - frac) < 1e-12, row
        assert float(row["ratio"]) == 1.0
        diff = png_pixels(comfy_server.view(f"{stem1}_{i:02}_{tag}_0_diff.png", SUBFOLDER))
        assert (diff.any(axis=-1) == (np.abs(base.astype(int) - img).max(axis=-1) > 0)).all()
    # base image unchanged by the ratio (same base settings, same seed)
    assert np.array_equal(base, png_pixels(comfy_server.view(f"{stem0}_00_base_0.png", SUBFOLDER)))
    from PIL import Image
    gif = Image.open(io.BytesIO(comfy_server.view(f"{stem1}.gif", SUBFOLDER)))
    assert gif.n_frames == 3


def test_invalid_target_rejected_at_queue_time(comfy_server):
    g = graph(1.0)
    g["3"]["inputs"]["targets"] = "IN04\nXX12:attn1"
    status, answer = comfy_server.post_prompt(g)
    assert status == 400 and "targets line 2" in str(answer), answer


def test_example_workflow(comfy_server):
    api = load_api_workflow("diff_checker")
    assert ui_to_api(load_ui_workflow("diff_checker"), comfy_server.object_info()) == api
    outputs = comfy_server.run(api)
    assert outputs["10"]["images"][0]["filename"].endswith("_chart.png")
    chart = png_pixels(comfy_server.images(outputs, "11")[0])
    assert chart.shape[1] == 800 and (chart != 255).any()

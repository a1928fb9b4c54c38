"""A 4x4 pinpoint-element XY plot against re-queueing ComfyUI's native merge 16 times, end to end
through one real ComfyUI server: queue -> images in the history, sampling included.

Run (needs the provisioned ComfyUI and the seeded SD1.5 checkpoints; about 5 minutes on a 2-core CPU, plus
any wait for the lock):
    source scripts/env.sh && flock /tmp/elemental-heavy.lock "$PYTHON" -m bench.bench_xy_plot [--no-ours]

Phases, each after the server dropped its models and cache (ComfyServer.free_memory) and re-loaded test_A and
test_B untimed (a loader-only prompt, so no phase pays the disk read and all pay the first merge):
  plot    one ElementalXYPlot: x "pinpoint element" IN04:attn1, attn2, ff, proj; y "alpha" 0.2..0.8 (16 cells,
          64x64, 1 step, base alpha 0.5, text encoders merged at 0.5). Timed from queue to history complete.
  native  16 prompts, one per cell, as a user without this pack builds them: ModelMergeSD1 (the stock per-block
          merge; no stock node can pick an element, so the cell's ratio goes to the whole IN04 block,
          input_blocks.4.) + CLIPMergeSimple + CLIPTextEncode + KSampler + VAEDecode + SaveImage. A cell's
          IN04 ratio is its alpha + 0.01 x its column, so that no two prompts are equal and ComfyUI's cache
          skips none. All 16 queued at once (no client gap between them); timed first queue -> last complete.
  ours    (optional) the same 16 cells as re-queued ElementalSpec + ElementalMerge graphs, our non-plot path;
          their images are compared with the plot's cells (they must be identical).
Per-cell times: the plot's own table ("cell s"); for re-queued prompts execution_start -> execution_success
in each prompt's history. Results: stdout and bench/results/xy_plot_<date>.json.

`--smoke` (CI's bench smoke): a 1x1 plot (IN04:attn1 at alpha 0.2) through all three phases, results under
$TMPDIR (never bench/results/); the figures mean nothing.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from dataclasses import dataclass

from bench.env import SMOKE_DIR
from bench.machine import describe as describe_machine
from devkit.checkpoints import ensure_checkpoints
from devkit.comfy_env import comfyui_dir
from devkit.proc_memory import peak_rss_bytes, reset_peak
from devkit.server import ComfyServer

HERE = os.path.dirname(os.path.abspath(__file__))
ELEMENTS = ("IN04:attn1", "IN04:attn2", "IN04:ff", "IN04:proj")
ALPHAS = (0.2, 0.4, 0.6, 0.8)
BASE_ALPHA = 0.5
SAMPLING = {"seed": 11, "steps": 1, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal"}
POSITIVE, NEGATIVE = "a red cube", "blurry"
SIZE = 64
GIB = 2 ** 30


@dataclass(frozen=True)
class Grid:
    """The plot's axes: x the pinpointed elements, y the alphas."""
    elements: tuple
    alphas: tuple

    def cells(self) -> list[tuple[float, int, str]]:
        """(alpha, column, element) in the plot's cell order: row-major, y (alpha) outer."""
        return [(a, j, e) for a in self.alphas for j, e in enumerate(self.elements)]


FULL, SMOKE = Grid(ELEMENTS, ALPHAS), Grid(ELEMENTS[:1], ALPHAS[:1])


# ---- the graphs -------------------------------------------------------------------------------------------

def loaders() -> dict:
    return {"LA": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "test_A.safetensors"}},
            "LB": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "test_B.safetensors"}}}


def sampling_tail(model: list, clip: list, prefix: str) -> dict:
    """The stock text-to-image tail every re-queued cell shares: encode, sample, decode, save."""
    return {
        "P": {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": POSITIVE}},
        "N": {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": NEGATIVE}},
        "E": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "K": {"class_type": "KSampler", "inputs": {"model": model, "positive": ["P", 0], "negative": ["N", 0],
                                                   "latent_image": ["E", 0], **SAMPLING, "denoise": 1.0}},
        "D": {"class_type": "VAEDecode", "inputs": {"samples": ["K", 0], "vae": ["LA", 2]}},
        "S": {"class_type": "SaveImage", "inputs": {"images": ["D", 0], "filename_prefix": prefix}},
    }


def plot_prompt(grid: Grid) -> dict:
    return {**loaders(),
            "X": {"class_type": "ElementalXYPlot", "inputs": {
                "model_a": ["LA", 0], "model_b": ["LB", 0], "clip_a": ["LA", 1], "clip_b": ["LB", 1],
                "vae": ["LA", 2], "mode": "Weight sum", "alpha": BASE_ALPHA, "beta": 0.25,
                "positive": POSITIVE, "negative": NEGATIVE, "width": SIZE, "height": SIZE, "batch_size": 1,
                **SAMPLING, "x_type": "pinpoint element", "x_values": ", ".join(grid.elements),
                "y_type": "alpha", "y_values": ", ".join(map(str, grid.alphas)), "filename_prefix": "benchxy/grid"}},
            "S": {"class_type": "SaveImage", "inputs": {"images": ["X", 1], "filename_prefix": "benchxy/cell"}}}


def native_ratio(alpha: float, column: int) -> float:
    """B's share of IN04 in a native cell: the cell's alpha, nudged per column so no two prompts are equal."""
    return round(alpha + 0.01 * column, 2)


def native_prompt(alpha: float, column: int) -> dict:
    """ModelMergeSD1's ratios are model1's (A's) share, hence 1 - B's share."""
    blocks = {"time_embed.": 1 - BASE_ALPHA, "label_emb.": 1 - BASE_ALPHA, "out.": 1 - BASE_ALPHA}
    blocks.update({f"input_blocks.{i}.": 1 - BASE_ALPHA for i in range(12)})
    blocks.update({f"middle_block.{i}.": 1 - BASE_ALPHA for i in range(3)})
    blocks.update({f"output_blocks.{i}.": 1 - BASE_ALPHA for i in range(12)})
    blocks["input_blocks.4."] = round(1 - native_ratio(alpha, column), 2)
    return {**loaders(),
            "M": {"class_type": "ModelMergeSD1", "inputs": {"model1": ["LA", 0], "model2": ["LB", 0], **blocks}},
            "C": {"class_type": "CLIPMergeSimple", "inputs": {"clip1": ["LA", 1], "clip2": ["LB", 1],
                                                              "ratio": 1 - BASE_ALPHA}},
            **sampling_tail(["M", 0], ["C", 0], "benchxy/native")}


def ours_prompt(alpha: float, element: str) -> dict:
    return {**loaders(),
            "T": {"class_type": "ElementalSpec", "inputs": {"spec": f"{element}:{alpha}", "architecture": "sd1"}},
            "M": {"class_type": "ElementalMerge", "inputs": {
                "model_a": ["LA", 0], "model_b": ["LB", 0], "clip_a": ["LA", 1], "clip_b": ["LB", 1],
                "mode": "Weight sum", "alpha": BASE_ALPHA, "beta": 0.25, "elemental_alpha": ["T", 0],
                "print_change": False}},
            **sampling_tail(["M", 0], ["M", 1], "benchxy/ours")}


# ---- running and timing -----------------------------------------------------------------------------------

def warm(server: ComfyServer) -> None:
    """Frees everything, then loads A and B through the loaders every phase's prompts share (cache hits)."""
    server.free_memory()
    server.run({**loaders(), "Q": {"class_type": "PreviewAny", "inputs": {"source": ["LA", 0]}},
                "R": {"class_type": "PreviewAny", "inputs": {"source": ["LB", 0]}}}, timeout=1800)


def exec_seconds(entry: dict) -> float:
    """execution_start -> execution_success of one prompt, from the server's own timestamps (ms)."""
    stamps = {event: data.get("timestamp") for event, data in entry["status"]["messages"]}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000


def cached_nodes(entry: dict) -> list:
    return next((d.get("nodes", []) for e, d in entry["status"]["messages"] if e == "execution_cached"), [])


def timed_phase(server: ComfyServer, prompts: list[dict]) -> dict:
    """Queues every prompt at once and waits for all; wall time from first queue to last complete."""
    warm(server)
    exact = reset_peak(server.proc.pid)
    t0 = time.perf_counter()
    ids = [server.queue(p) for p in prompts]
    entries = [server.wait(i, timeout=3600) for i in ids]
    total = time.perf_counter() - t0
    return {"total_s": round(total, 2), "cell_s": [round(exec_seconds(e), 3) for e in entries],
            "peak_rss_gib": round(peak_rss_bytes(server.proc.pid) / GIB, 2), "peak_exact": exact,
            "cached_first": cached_nodes(entries[0]), "outputs": [e["outputs"] for e in entries]}


def plot_cell_seconds(table: str) -> list[float]:
    """The 'cell s' column of the plot's table (rows after its header line)."""
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("step\t")) + 1
    return [float(line.split("\t")[8]) for line in lines[start:] if line.count("\t") >= 9]


def run_plot(server: ComfyServer, grid: Grid) -> dict:
    phase = timed_phase(server, [plot_prompt(grid)])
    table = phase["outputs"][0]["X"]["text"][0]
    phase["cell_s"] = plot_cell_seconds(table)
    phase["table"] = table
    return phase


# ---- checking and reporting -------------------------------------------------------------------------------

def pixels(server: ComfyServer, outputs: dict) -> list[bytes]:
    """Raw RGB bytes of the images node S saved (PNG metadata differs between graphs, pixels must not)."""
    from PIL import Image

    return [Image.open(io.BytesIO(png)).convert("RGB").tobytes() for png in server.images(outputs, "S")]


def same_as_plot(server: ComfyServer, plot: dict, ours: dict) -> int:
    """How many of our re-queued cells are pixel-identical to the plot's cell at the same place."""
    plot_cells = pixels(server, plot["outputs"][0])
    ours_cells = [pixels(server, o)[0] for o in ours["outputs"]]
    return sum(a == b for a, b in zip(plot_cells, ours_cells))


def summary(phase: dict) -> dict:
    cells_s = phase["cell_s"]
    return {"total_s": phase["total_s"], "cell_median_s": round(statistics.median(cells_s), 3),
            "first_cell_s": cells_s[0], "cell_s": cells_s,
            "peak_rss_gib": phase["peak_rss_gib"], "nodes_cached_in_first_prompt": phase["cached_first"]}


def print_table(result: dict) -> None:
    rows = result["phases"]
    plot, n = rows["plot"]["total_s"], result["plot"]["cells"]
    print(f"\n{'phase':<44} {'total s':>9} {'median cell s':>14} {'peak RSS GiB':>13} {'x plot time':>11}")
    for name, label in (("plot", f"ElementalXYPlot, one prompt ({n} cells)"),
                        ("native", f"native ModelMergeSD1, {n} prompts"),
                        ("ours", f"ElementalMerge re-queued, {n} prompts")):
        if name in rows:
            r = rows[name]
            print(f"{label:<44} {r['total_s']:>9.1f} {r['cell_median_s']:>14.2f} {r['peak_rss_gib']:>13.2f} "
                  f"{r['total_s'] / plot:>11.2f}")
    print(f"native/plot total {result['native_over_plot']:.2f}x; per-cell median "
          f"{result['native_over_plot_cell_median']:.2f}x")


def result_of(phases: dict, same: int | None, grid: Grid) -> dict:
    s = {k: summary(v) for k, v in phases.items()}
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": describe_machine(),
           "load_average_at_end": os.getloadavg(), "models": "seeded SD1.5 test_A/test_B, fp32 (ComfyUI on CPU)",
           "plot": {"x": grid.elements, "y_alpha": grid.alphas, "cells": len(grid.cells()),
                    "base_alpha": BASE_ALPHA, "size": SIZE, **SAMPLING},
           "native_graph": "ModelMergeSD1 (IN04 = alpha + 0.01 x column, rest 0.5) + CLIPMergeSimple 0.5",
           "phases": s, "plot_table": phases["plot"]["table"],
           "native_over_plot": round(s["native"]["total_s"] / s["plot"]["total_s"], 2),
           "native_over_plot_cell_median": round(s["native"]["cell_median_s"] / s["plot"]["cell_median_s"], 2)}
    if "ours" in s:
        out["ours_requeue_over_plot"] = round(s["ours"]["total_s"] / s["plot"]["total_s"], 2)
        out["ours_requeue_cells_identical_to_plot"] = f"{same}/{len(grid.cells())}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-ours", action="store_true", help="skip the 16 re-queued ElementalMerge prompts")
    ap.add_argument("--smoke", action="store_true", help="a 1x1 plot, results under $TMPDIR: checks that it runs")
    args = ap.parse_args()
    grid = SMOKE if args.smoke else FULL
    checkpoints = ensure_checkpoints(os.environ.get(
        "ELEMENTAL_CHECKPOINTS", os.path.expanduser("~/.cache/comfyui-elemental-merge/checkpoints")), ("A", "B"))
    with ComfyServer(comfyui_dir(), os.environ.get("COMFYUI_PYTHON", "python"), checkpoints=checkpoints) as server:
        phases = {"plot": run_plot(server, grid)}
        print(f"plot: {phases['plot']['total_s']} s", flush=True)
        phases["native"] = timed_phase(server, [native_prompt(a, j) for a, j, _ in grid.cells()])
        print(f"native: {phases['native']['total_s']} s", flush=True)
        same = None
        if not args.no_ours:
            phases["ours"] = timed_phase(server, [ours_prompt(a, e) for a, _, e in grid.cells()])
            same = same_as_plot(server, phases["plot"], phases["ours"])
            print(f"ours re-queued: {phases['ours']['total_s']} s; cells identical to the plot's: "
                  f"{same}/{len(grid.cells())}")
        server.free_memory()
    result = result_of(phases, same, grid)
    print_table(result)
    path = os.path.join(SMOKE_DIR if args.smoke else os.path.join(HERE, "results"),
                        f"xy_plot_{time.strftime('%Y-%m-%d', time.gmtime())}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"written {path}")


if __name__ == "__main__":
    main()

"""Elemental Diff Checker: how much does each block / element change the picture?

One base image with the base merge, then for each target only that target set to `ratio` (a spec entry
appended to the base alpha spec, as a pinpoint XY cell), same seed; each image is compared with the base.
The merge is incremental (`remerge`): after the base only the keys of the previous and the current target
are recomputed. Metrics are on the 8-bit images as saved (what a user looks at):
  mean abs diff    mean over all pixel channel values of |target - base| (0..255)
  max diff         the largest such value
  changed fraction share of pixel channel values with |target - base| > threshold (SuperMerger: 20)
Files go to `<output>/diff/<ModelA>_<ModelB>/run_NNNNN*` (a run number no file uses yet: never overwrites).
"""
from __future__ import annotations

import csv
import io as _io
import logging
import os

import folder_paths
import numpy as np
import torch
from PIL import Image

from ..merge_core.plot import axes
from .plot import grid
from .engine.cell_render import PlotProgress
from .sockets.common import CATEGORY, io, png_metadata, write_new
from ..merge_core.plot.axes import AxisError
from .sockets.merge_inputs import calc_sockets, task_sockets
from ..merge_core.merge.merge_checks import calc_queue_problem
from .engine.merge_patches import key_effect
from .plot.plot_job import MergeJob, plot_inputs

log = logging.getLogger("elemental_merge")

CSV_COLUMNS = ("target", "keys changed", "ratio", "mean abs diff", "max diff", "changed fraction")
# Colour map for difference images: 0 -> black, then red, yellow, white ("hot"), as (position, RGB).
HOT = ((0.0, (0, 0, 0)), (0.35, (200, 0, 0)), (0.7, (255, 200, 0)), (1.0, (255, 255, 255)))
GIF_MS = 700


def metrics(base: np.ndarray, other: np.ndarray, threshold: int) -> tuple[float, int, float]:
    """(mean abs diff, max diff, changed fraction) of two uint8 images of one shape."""
    d = np.abs(other.astype(np.int16) - base.astype(np.int16))
    return float(d.mean()), int(d.max()), float((d > threshold).mean())


def colour_map(diff: np.ndarray, amplify: float) -> np.ndarray:
    """uint8 RGB picture of a uint8 difference (H, W, C): per-pixel max over channels, times `amplify`."""
    v = np.clip(diff.max(axis=-1).astype(np.float32) * amplify / 255.0, 0.0, 1.0)
    xs = [p for p, _ in HOT]
    out = np.stack([np.interp(v, xs, [c[i] for _, c in HOT]) for i in range(3)], axis=-1)
    return np.round(out).astype(np.uint8)


def run_stem(folder: str) -> str:
    """`run_NNNNN`: the first run number no file in `folder` starts with."""
    os.makedirs(folder, exist_ok=True)
    used = set(os.listdir(folder))
    n = 1
    while any(name.startswith(f"run_{n:05}") for name in used):
        n += 1
    return f"run_{n:05}"


class ElementalDiffChecker(io.ComfyNode):
    """Per target: the image with only that target changed, its difference from the base, ranked."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ElementalDiffChecker", display_name="Elemental Diff Checker", category=CATEGORY,
            description="For each target (OUT05:attn2, IN07, NOT M00:...), merge with only that target set to "
                        "`ratio`, sample with the same seed and compare with the base image.",
            inputs=plot_inputs() + [
                io.String.Input("targets", multiline=True, default="IN04\nOUT05:attn2"),
                io.Float.Input("ratio", default=1.0, min=-1.0, max=2.0, step=0.01,
                               tooltip="alpha given to each target in turn"),
                io.Int.Input("threshold", default=20, min=0, max=254,
                             tooltip="a pixel channel value counts as changed above this difference (of 255)"),
                io.Float.Input("amplify", default=8.0, min=1.0, max=255.0, step=0.5,
                               tooltip="difference images: |diff| x amplify, colour-mapped"),
                io.String.Input("model_a_name", optional=True, force_input=True),
                io.String.Input("model_b_name", optional=True, force_input=True),
            ] + calc_sockets() + task_sockets(),
            outputs=[io.Image.Output(display_name="images"), io.Image.Output(display_name="chart"),
                     io.String.Output(display_name="table")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, targets=None, mode=None, calc_mode=None, calc_option=None, alpha=None, beta=None):
        problem = calc_queue_problem(mode, calc_mode, calc_option, alpha, beta)
        if problem:
            return problem
        if targets is None:
            return True
        try:
            axes.parse_targets(targets, None, "targets")
        except AxisError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, targets, ratio, threshold, amplify, model_a_name=None, model_b_name=None, **kw):
        job = MergeJob(kw)
        try:
            items = axes.parse_targets(targets, job.arch, "targets")
        except AxisError as exc:
            raise ValueError(str(exc)) from None
        progress = PlotProgress(len(items) + 1, job.steps)
        progress.start_cell(0)
        base_imgs, _, _ = job.render(job.base, progress)
        base_ra, base_rb = job.ratios(job.base)
        base_u8 = [grid.to_uint8(im) for im in base_imgs]
        rows, out_images, frames = [], [base_imgs], [base_u8[0]]
        per_target = []
        for i, item in enumerate(items, start=1):
            progress.start_cell(i)
            s = axes.pinpoint(job.base, item.value, ratio, axes.ALPHA)
            ra, rb = job.ratios(s)
            calc = job.calc(s)
            n_keys = sum(1 for k in job.merge.keys if key_effect(job.method, calc, k, ra(k), rb(k))
                         != key_effect(job.method, calc, k, base_ra(k), base_rb(k)))
            imgs, _, _ = job.render(s, progress)
            u8 = [grid.to_uint8(im) for im in imgs]
            m = metrics(np.stack(base_u8), np.stack(u8), threshold)
            diffs = [colour_map(np.abs(t.astype(np.int16) - b.astype(np.int16)).astype(np.uint8), amplify)
                     for b, t in zip(base_u8, u8)]
            rows.append((item.label, n_keys, ratio) + m)
            per_target.append((item.label, u8, diffs))
            out_images += [imgs, torch.from_numpy(np.stack(diffs).astype(np.float32) / 255.0)]
            frames.append(u8[0])
        progress.bar.update_absolute(progress.bar.total)

        names = (axes.safe_name(model_a_name, "ModelA") if model_a_name else "ModelA",
                 axes.safe_name(model_b_name, "ModelB") if model_b_name else "ModelB")
        table = csv_text(rows)
        ranked = sorted(rows, key=lambda r: (-r[3], -r[5], r[0]))
        chart = grid.draw_bar_chart(
            [(f"{r[0]} ({r[1]} keys)", r[3], r[5], f"{r[3]:.3f}", f"{100 * r[5]:.2f}% > {threshold}")
             for r in ranked],
            f"Diff checker: {names[0]} x {names[1]}, {job.method.name}, ratio {ratio:g} (base "
            f"{job.base.describe()})")
        saved = save_run(names, base_u8, per_target, frames, table, chart, cls.hidden,
                         {"elemental_diff_checker": {"targets": targets, "ratio": ratio, "threshold": threshold,
                                                     "base": job.base.describe(), "mode": job.method.name}})
        log.info("[Elemental Diff Checker]\n%s", table)
        chart_t = torch.from_numpy(np.asarray(chart).astype(np.float32) / 255.0)[None]
        return io.NodeOutput(_same_size_batch(out_images), chart_t, table, ui={"images": saved})


def _same_size_batch(batches) -> torch.Tensor:
    return torch.cat([b.to(torch.float32).cpu() for b in batches], dim=0)


def csv_text(rows) -> str:
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for target, n, ratio, mean, mx, frac in rows:
        w.writerow([target, n, repr(float(ratio)), repr(mean), mx, repr(frac)])
    return buf.getvalue()


def save_run(names, base_u8, per_target, frames, table: str, chart, hidden, extra: dict) -> list[dict]:
    """Writes the run's files; returns the UI entries (the chart and the GIF)."""
    output_dir = folder_paths.get_output_directory()
    subfolder = os.path.join("diff", f"{names[0]}_{names[1]}")
    folder = os.path.join(output_dir, subfolder)
    stem = run_stem(folder)
    meta = png_metadata(hidden, extra)

    def png(name, arr):
        write_new(os.path.join(folder, name), lambda p: Image.fromarray(arr).save(p, pnginfo=meta, compress_level=4))

    for b, img in enumerate(base_u8):
        png(f"{stem}_00_base_{b}.png", img)
    for i, (label, u8, diffs) in enumerate(per_target, start=1):
        tag = axes.safe_name(label.replace(":", "-"), "target")
        for b, (img, d) in enumerate(zip(u8, diffs)):
            png(f"{stem}_{i:02}_{tag}_{b}.png", img)
            png(f"{stem}_{i:02}_{tag}_{b}_diff.png", d)
    write_new(os.path.join(folder, f"{stem}_chart.png"), lambda p: chart.save(p, pnginfo=meta))
    gif = [Image.fromarray(f) for f in frames]
    write_new(os.path.join(folder, f"{stem}.gif"),
               lambda p: gif[0].save(p, save_all=True, append_images=gif[1:], duration=GIF_MS, loop=0))
    def write_csv(p):
        with open(p, "w", newline="", encoding="utf-8") as f:
            f.write(table)
    write_new(os.path.join(folder, f"{stem}.csv"), write_csv)
    return [{"filename": f"{stem}_chart.png", "subfolder": subfolder, "type": "output"},
            {"filename": f"{stem}.gif", "subfolder": subfolder, "type": "output"}]


NODES = [ElementalDiffChecker]

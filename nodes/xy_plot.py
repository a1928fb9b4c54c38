"""Elemental XY Plot (issue 4): a grid of images over merge settings, re-merging incrementally between cells.

Each cell is a full set of ElementalMerge settings (`plot_axes.Settings`); its per-key ratios come from the
ElementalMerge node's own resolver and its patches from the same engine (`remerge.IncrementalMerge`), so a
cell is bit-identical to ElementalMerge + KSampler with those settings. Between cells only the keys whose
patches change are recomputed, and the prompts are re-encoded only when text-encoder keys change.

The inputs shared with the Diff Checker (models, base merge settings, prompts, sampling) and the run's state
are declared once in `plot_job`.
"""
from __future__ import annotations

import os
import time

import folder_paths
import torch

from ..merge_core import plot_axes
from . import grid
from .cell_render import PlotProgress
from .common import CATEGORY, image_tensor, io, log, png_metadata, unused_path
from ..merge_core.plot_axes import AxisError
from .merge_inputs import calc_axis_problem, calc_queue_problem, calc_sockets
from .plot_job import MergeJob, plot_inputs

PLOT_METADATA_KEY = "elemental_xy_plot"


def save_png(image, filename_prefix: str, meta) -> dict:
    """Saves a PIL image like SaveImage (numbered, never overwriting); returns the UI entry."""
    output_dir = folder_paths.get_output_directory()
    folder, stem, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, output_dir,
                                                                            image.width, image.height)
    path, _ = unused_path(folder, stem, "png", counter)
    image.save(path, pnginfo=meta, compress_level=4)
    return {"filename": os.path.basename(path), "subfolder": subfolder, "type": "output"}


class ElementalXYPlot(io.ComfyNode):
    """XY plot over merge settings; one full merge, then only the keys each cell changes."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ElementalXYPlot", display_name="Elemental XY Plot", category=CATEGORY,
            description="Grid of images over merge settings: x/y types " + ", ".join(plot_axes.AXIS_TYPES)
                        + ". A pinpoint axis takes its ratios from the other axis (alpha or beta). Cells are "
                          "identical to ElementalMerge + KSampler with the same settings.",
            inputs=plot_inputs() + [
                io.Combo.Input("x_type", options=list(plot_axes.AXIS_TYPES), default=plot_axes.ALPHA),
                io.String.Input("x_values", multiline=True, default="0, 0.5, 1"),
                io.Combo.Input("y_type", options=list(plot_axes.AXIS_TYPES), default=plot_axes.NONE),
                io.String.Input("y_values", multiline=True, default=""),
                io.String.Input("filename_prefix", default="ElementalXY/xy"),
            ] + calc_sockets(),
            outputs=[io.Image.Output(display_name="grid"), io.Image.Output(display_name="cells"),
                     io.String.Output(display_name="table")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, x_type=None, x_values=None, y_type=None, y_values=None, mode=None, calc_mode=None,
                        calc_option=None, alpha=None, beta=None):
        problem = calc_queue_problem(mode, calc_mode, calc_option, alpha, beta)
        if problem:
            return problem
        if x_type is None or y_type is None:
            return True  # a linked type: checked when the node runs
        problem = calc_axis_problem(mode, (x_type, y_type), (x_values, y_values))
        if problem:
            return problem
        try:
            plot_axes.check_pairing(x_type, y_type)
            if x_values is not None:
                plot_axes.parse_axis(x_type, x_values, None, "x_values")
            if y_values is not None:
                plot_axes.parse_axis(y_type, y_values, None, "y_values")
        except AxisError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, x_type, x_values, y_type, y_values, filename_prefix, **kw):
        job = MergeJob(kw)
        try:
            x, y = plot_axes.parse_plot(x_type, x_values, y_type, y_values, job.arch)
        except AxisError as exc:
            raise ValueError(str(exc)) from None
        cells = plot_axes.build_cells(job.base, x, y)
        progress = PlotProgress(len(cells), job.steps)
        images, rows = [], []
        t_start = time.perf_counter()
        for i, cell in enumerate(cells):
            progress.start_cell(i)
            t0 = time.perf_counter()
            out, changed, merge_s = job.render(cell.settings, progress)
            images.append(out)
            rows.append((cell, len(changed), job.merge.last, merge_s, time.perf_counter() - t0))
        progress.bar.update_absolute(progress.bar.total)

        x_title, y_title = plot_axes.axis_title(x, y), plot_axes.axis_title(y, x)
        title = " | ".join(t for t in (f"X: {x_title}" if x.type != plot_axes.NONE else "",
                                      f"Y: {y_title}" if y.type != plot_axes.NONE else "") if t)
        names = " + ".join(plot_axes.safe_name(n, n) for n in job.names.values())
        title = f"{job.method.name}: {names} | {title}" if title else f"{job.method.name}: {names}"
        firsts = [grid.to_uint8(im[0]) for im in images]
        pil, _ = grid.draw_grid(firsts, len(x.items), len(y.items), [i.label for i in x.items],
                                [i.label for i in y.items], title)
        table = plot_table(job, x, y, rows, time.perf_counter() - t_start)
        definition = {"x_type": x_type, "x_values": x_values, "y_type": y_type, "y_values": y_values,
                      "mode": job.method.name, "models": job.names, "base": job.base.describe(),
                      "cells": [{"x": c.x_label, "y": c.y_label, "settings": c.settings.describe()}
                                for c, *_ in rows]}
        saved = save_png(pil, filename_prefix, png_metadata(cls.hidden, {PLOT_METADATA_KEY: definition}))
        log.info("[Elemental XY Plot]\n%s", table)
        return io.NodeOutput(image_tensor(pil), torch.cat(images, dim=0), table, ui={"images": [saved]})


def plot_table(job: MergeJob, x, y, rows, total_s: float) -> str:
    """The plot as text: one row per cell with its equivalent ElementalMerge settings and re-merge cost."""
    head = [f"Elemental XY plot: {job.method.name} ({job.arch.label}) " +
            ", ".join(f"{k}={v}" for k, v in job.names.items()),
            f"base: {job.base.describe()}",
            f"x: {x.type} ({len(x.items)})  y: {y.type} ({len(y.items)})  cells: {len(rows)}  "
            f"text encodes: {job.renderer.encodes}  total {total_s:.2f} s",
            "cell\tx\ty\tkeys re-merged\ton device now\tmerge ms\tcell s\tsettings"]
    for i, (cell, n, stats, merge_s, cell_s) in enumerate(rows):
        now = sum(stats.in_place.values()) if stats else 0
        head.append(f"{i}\t{cell.x_label}\t{cell.y_label}\t{n}\t{now if i else 'at load'}\t"
                    f"{merge_s * 1000:.1f}\t{cell_s:.2f}\t{cell.settings.describe()}")
    return "\n".join(head)


NODES = [ElementalXYPlot]

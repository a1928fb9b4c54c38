"""Elemental XY Plot: a grid of images over merge settings, re-merging incrementally between cells.

Each cell is a full set of ElementalMerge settings (`axes.Settings`); its per-key ratios come from the
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

from PIL import Image

from ..merge_core.plot import axes, plot_labels
from ..merge_core.merge.adjust import AdjustError
from ..merge_core.plot.axes import AxisError
from ..merge_core.plot.random_merge import RandomSettingsError
from .plot import grid, plot_order
from .engine.cell_render import PlotProgress
from .sockets.common import CATEGORY, image_tensor, io, log, png_metadata, unused_path
from .sockets.merge_inputs import calc_sockets, task_sockets
from ..merge_core.merge.merge_checks import calc_queue_problem
from ..merge_core.plot.axes import calc_axis_problem
from .plot.plot_job import MergeJob, plot_inputs

PLOT_METADATA_KEY = "elemental_xy_plot"


def save_png(image, filename_prefix: str, meta) -> dict:
    """Saves a PIL image like SaveImage (numbered, never overwriting); returns the UI entry."""
    output_dir = folder_paths.get_output_directory()
    folder, stem, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, output_dir,
                                                                            image.width, image.height)
    path, _ = unused_path(folder, stem, "png", counter)
    image.save(path, pnginfo=meta, compress_level=4)
    return {"filename": os.path.basename(path), "subfolder": subfolder, "type": "output"}


RANDOM_SETTINGS_HELP = ("random axis: each value is a seed. " + axes.random_help())


class ElementalXYPlot(io.ComfyNode):
    """XY(Z) plot over merge settings; one full merge per model set, then only the keys each cell changes."""

    @classmethod
    def define_schema(cls):
        types = list(axes.AXIS_TYPES)
        return io.Schema(
            node_id="ElementalXYPlot", display_name="Elemental XY Plot", category=CATEGORY,
            description="Grid of images over merge settings: x/y/z types " + ", ".join(types)
                        + ". A pinpoint axis takes its numbers from the other of x/y (alpha or beta). One grid per "
                          "Z value. Cells are identical to (Load Checkpoint +) ElementalMerge (+ ElementalAdjust) "
                          "+ KSampler with the same settings; the table lists each cell's settings.",
            inputs=plot_inputs() + [
                io.Combo.Input("x_type", options=types, default=axes.ALPHA),
                io.String.Input("x_values", multiline=True, default="0, 0.5, 1"),
                io.Combo.Input("y_type", options=types, default=axes.NONE),
                io.String.Input("y_values", multiline=True, default=""),
                io.String.Input("filename_prefix", default="ElementalXY/xy"),
                # optional, so that prompts saved before these inputs existed still queue unchanged
                io.Combo.Input("z_type", options=types, default=axes.NONE, optional=True,
                               tooltip="one labelled grid per Z value, returned as a batch"),
                io.String.Input("z_values", multiline=True, default="", optional=True),
                io.String.Input("random_settings", default=axes.DEFAULT_RANDOM_SETTINGS, optional=True,
                                tooltip=RANDOM_SETTINGS_HELP),
            ] + calc_sockets() + task_sockets(),
            outputs=[io.Image.Output(display_name="grid"), io.Image.Output(display_name="cells"),
                     io.String.Output(display_name="table")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo, io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, x_type=None, x_values=None, y_type=None, y_values=None, z_type=axes.NONE,
                        z_values="", random_settings=axes.DEFAULT_RANDOM_SETTINGS, mode=None, calc_mode=None,
                        calc_option=None, alpha=None, beta=None):
        problem = calc_queue_problem(mode, calc_mode, calc_option, alpha, beta)
        if problem:
            return problem
        if x_type is None or y_type is None or z_type is None:
            return True  # a linked type: checked when the node runs
        problem = calc_axis_problem(mode, (x_type, y_type, z_type), (x_values, y_values, z_values))
        if problem:
            return problem
        try:
            axes.check_axes(x_type, y_type, z_type, random_settings if random_settings is not None else "R")
            names = folder_paths.get_filename_list("checkpoints")
            for t, v, n in ((x_type, x_values, "x"), (y_type, y_values, "y"), (z_type, z_values, "z")):
                if v is not None:
                    axes.parse_axis(t, v, None, f"{n}_values", names)
        except AxisError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, x_type, x_values, y_type, y_values, filename_prefix, z_type=axes.NONE, z_values="",
                random_settings=axes.DEFAULT_RANDOM_SETTINGS, **kw):
        job = MergeJob(kw, plot_labels.loaded_checkpoints(cls.hidden.prompt, cls.hidden.unique_id),
                       plot_labels.loaded_diffusion_models(cls.hidden.prompt, cls.hidden.unique_id))
        try:
            plot_axes = axes.parse_plot((x_type, y_type, z_type), (x_values, y_values, z_values), job.arch,
                                       random_settings, folder_paths.get_filename_list("checkpoints"))
            cells = axes.build_cells(job.base, *plot_axes)
            cells = axes.resolve_random(cells, random_settings, job.arch, job.merge.keys)
            order, estimate = plot_order.render_order(job, cells)
        except (AxisError, RandomSettingsError, AdjustError) as exc:
            raise ValueError(str(exc)) from None
        images, rows = render_cells(job, cells, order)
        x, y, z = plot_axes
        names = plot_labels.input_names(cls.hidden.prompt, cls.hidden.unique_id)
        table = plot_table(job, plot_axes, cells, order, rows, estimate)
        definition = {"x_type": x_type, "x_values": x_values, "y_type": y_type, "y_values": y_values,
                      "z_type": z_type, "z_values": z_values, "random_settings": random_settings,
                      "mode": job.method.name, "models": job.names, "base": job.base.describe(),
                      "order": order, "cells": [{"x": c.x_label, "y": c.y_label, "z": c.z_label,
                                                 "settings": c.describe(), "draw": c.draw_label} for c in cells]}
        grids, saved = [], []
        per_grid = len(x.items) * len(y.items)
        for zi in range(len(z.items)):
            part = cells[zi * per_grid:(zi + 1) * per_grid]
            pil, title = draw_plot_grid(job, plot_axes, part, images[zi * per_grid:(zi + 1) * per_grid], names)
            meta = {PLOT_METADATA_KEY: {**definition, "grid": zi, "title": title}}
            saved.append(save_png(pil, filename_prefix, png_metadata(cls.hidden, meta)))
            grids.append(pil)
        log.info("[Elemental XY Plot]\n%s", table)
        return io.NodeOutput(grid_batch(grids), torch.cat(images, dim=0), table, ui={"images": saved, "text": [table]})


def render_cells(job: MergeJob, cells: list, order: list) -> tuple[list, dict]:
    """Renders the cells in `order`; returns the images in grid order and, per cell index, its stats."""
    progress = PlotProgress(len(cells), job.steps)
    images: list = [None] * len(cells)
    rows: dict = {}
    for step, i in enumerate(order):
        progress.start_cell(step)
        t0 = time.perf_counter()
        out, changed, merge_s = job.render(cells[i].settings, progress, cells[i].extras)
        images[i] = out
        rows[i] = (step, len(changed), job.merge.last, merge_s, time.perf_counter() - t0)
    progress.bar.update_absolute(progress.bar.total)
    return images, rows


def _label(axis, n: int, cells, which: str) -> str:
    """The label of value `n` of an axis; a random axis shows its draw (rounded as used), a model axis the
    checkpoint without folders and extension."""
    label = axis.items[n].label
    if axis.type == axes.RANDOM:
        cell = next((c for c in cells if getattr(c, which) == n and c.draw_label), None)
        return cell.draw_label if cell is not None else label
    if axis.type in axes.MODEL_AXES:
        return plot_labels.display_name(label)
    return label


def _labels(axis, cells, which: str) -> list:
    return [_label(axis, n, cells, which) for n in range(len(axis.items))]


def draw_plot_grid(job: MergeJob, plot_axes, cells: list, images: list, graph_names: dict):
    """(image, title) of one labelled grid (one Z value): the model names from the graph, axis titles, Z."""
    x, y, z = plot_axes
    titles = [f"X: {axes.axis_title(x, y)}" if x.type != axes.NONE else "",
              f"Y: {axes.axis_title(y, x)}" if y.type != axes.NONE else ""]
    if z.type != axes.NONE:
        z_label = _label(z, cells[0].z, cells, "z")
        titles.append(f"Z: {z.type} = {z_label}")
    names = " + ".join(graph_names.get(f"model_{k.lower()}") or axes.safe_name(v, v)
                       for k, v in job.names.items())
    title = " | ".join([f"{job.method.name}: {names}"] + [t for t in titles if t])
    firsts = [grid.to_uint8(im[0]) for im in images]
    pil, _ = grid.draw_grid(firsts, len(x.items), len(y.items), _labels(x, cells, "x"),
                            _labels(y, cells, "y"), title)
    return pil, title


def grid_batch(grids: list) -> torch.Tensor:
    """The grids as one IMAGE batch; smaller ones padded with white at the right and bottom."""
    w = max(g.width for g in grids)
    h = max(g.height for g in grids)
    out = []
    for g in grids:
        if g.size != (w, h):
            canvas = Image.new("RGB", (w, h), grid.BACKGROUND)
            canvas.paste(g, (0, 0))
            g = canvas
        out.append(image_tensor(g))
    return torch.cat(out, dim=0)


def plot_table(job: MergeJob, plot_axes, cells: list, order: list, rows: dict, estimate: tuple) -> str:
    """The plot as text: the render order chosen and one row per cell (in that order) with its equivalent
    plain-graph settings and what it cost."""
    x, y, z = plot_axes
    total_s = sum(r[4] for r in rows.values())
    grid_cost, chosen_cost = estimate
    head = [f"Elemental XY plot: {job.method.name} ({job.arch.label}) " +
            ", ".join(f"{k}={v}" for k, v in job.names.items()),
            f"base: {job.base.describe()}",
            f"x: {x.type} ({len(x.items)})  y: {y.type} ({len(y.items)})  z: {z.type} ({len(z.items)})  "
            f"cells: {len(cells)}  text encodes: {job.renderer.encodes}  total {total_s:.2f} s",
            f"render order (fewest keys changed between neighbours): {', '.join(map(str, order))}; "
            f"estimated keys re-merged after the first cell: {chosen_cost} (grid order: {grid_cost})",
            "step\tcell\tz\tx\ty\tkeys re-merged\ton device now\tmerge ms\tcell s\tsettings"]
    for i in order:
        c = cells[i]
        step, n, stats, merge_s, cell_s = rows[i]
        now = sum(stats.in_place.values()) if stats else 0
        settings = c.describe() + (f"  [random {c.draw_label}]" if c.draw_label else "")
        head.append(f"{step}\t{i}\t{c.z_label}\t{c.x_label}\t{c.y_label}\t{n}\t{now if step else 'at load'}\t"
                    f"{merge_s * 1000:.1f}\t{cell_s:.2f}\t{settings}")
    return "\n".join(head)


NODES = [ElementalXYPlot]

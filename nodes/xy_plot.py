"""Elemental XY Plot (issue 4): a grid of images over merge settings, re-merging incrementally between cells.

Each cell is a full set of ElementalMerge settings (`plot_axes.Settings`); its per-key ratios come from the
ElementalMerge node's own resolver and its patches from the same engine (`remerge.IncrementalMerge`), so a
cell is bit-identical to ElementalMerge + KSampler with those settings. Between cells only the keys whose
patches change are recomputed, and the prompts are re-encoded only when text-encoder keys change.

The inputs shared with the Diff Checker (models, base merge settings, prompts, sampling) are declared once
here (`common_inputs`, `MergeJob`).
"""
from __future__ import annotations

import json
import logging
import os
import time

import comfy.samplers
import folder_paths
import torch
from comfy.cli_args import args
from comfy_api.latest import io
from PIL.PngImagePlugin import PngInfo

from . import grid, model_info, plot_axes
from .cell_render import CellRenderer, PlotProgress, empty_latent
from .merge_nodes import (AUTO, MODES, BlockWeightsType, ElementalSpecType, TextInput, ratio_lookup, resolve_side,
                          get_merge_method)
from .plot_axes import AxisError, Settings
from .remerge import IncrementalMerge

log = logging.getLogger("elemental_merge")

CATEGORY = "advanced/model_merging/elemental"
PLOT_METADATA_KEY = "elemental_xy_plot"


def common_inputs() -> list:
    """Models, base merge settings (as ElementalMerge), prompts and sampling (as KSampler)."""
    return [
        io.Model.Input("model_a"),
        io.Model.Input("model_b"),
        io.Model.Input("model_c", optional=True),
        io.Clip.Input("clip_a", tooltip="encodes the prompts; merged with clip_b at the BASE ratio when given"),
        io.Clip.Input("clip_b", optional=True),
        io.Clip.Input("clip_c", optional=True),
        io.Vae.Input("vae"),
        io.Combo.Input("mode", options=MODES, default="Weight sum"),
        io.Float.Input("alpha", default=0.5, min=-1.0, max=2.0, step=0.01),
        io.Float.Input("beta", default=0.25, min=-1.0, max=2.0, step=0.01),
        BlockWeightsType.Input("block_weights_alpha", optional=True),
        BlockWeightsType.Input("block_weights_beta", optional=True),
        ElementalSpecType.Input("elemental_alpha", optional=True),
        ElementalSpecType.Input("elemental_beta", optional=True),
        io.String.Input("positive", multiline=True, default=""),
        io.String.Input("negative", multiline=True, default=""),
        io.Int.Input("width", default=512, min=16, max=8192, step=8),
        io.Int.Input("height", default=512, min=16, max=8192, step=8),
        io.Int.Input("batch_size", default=1, min=1, max=64),
        io.Latent.Input("latent", optional=True, tooltip="used instead of width/height/batch_size when given"),
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
        io.Int.Input("steps", default=20, min=1, max=10000),
        io.Float.Input("cfg", default=7.0, min=0.0, max=100.0, step=0.1, round=0.01),
        io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS),
        io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS),
    ]


class MergeJob:
    """The merge and rendering state of one run: settings -> ratios -> incremental merge -> image."""

    def __init__(self, kw: dict):
        self.method = get_merge_method(kw["mode"])
        models = {"model_a": kw["model_a"], "model_b": kw["model_b"]}
        if self.method.needs_c:
            if kw.get("model_c") is None:
                raise ValueError(f"mode '{self.method.name}' needs model_c")
            models["model_c"] = kw["model_c"]
        self.arch = model_info.check_same_architecture(models)
        self.names = {k[-1].upper(): model_info.model_name(m) for k, m in models.items()}
        bwa, bwb = kw.get("block_weights_alpha"), kw.get("block_weights_beta")
        spa, spb = kw.get("elemental_alpha"), kw.get("elemental_beta")
        # Architecture tags of the connected texts, kept so the resolver checks them as ElementalMerge does.
        self.tags = {"bwa": bwa.architecture if bwa else AUTO, "bwb": bwb.architecture if bwb else AUTO,
                     "spa": spa.architecture if spa else AUTO, "spb": spb.architecture if spb else AUTO}
        self.base = Settings(float(kw["alpha"]), float(kw["beta"]), bwa.text if bwa else None,
                             bwb.text if bwb else None, spa.text if spa else "", spb.text if spb else "")
        self.merge = IncrementalMerge(kw["model_a"], kw["model_b"], kw.get("model_c"), self.method,
                                      kw["clip_a"], kw.get("clip_b"), kw.get("clip_c"))
        latent = kw.get("latent") or empty_latent(kw["width"], kw["height"], kw["batch_size"])
        self.steps = kw["steps"]
        self.renderer = CellRenderer(self.merge, kw["vae"], kw["positive"], kw["negative"], latent, kw["seed"],
                                     kw["steps"], kw["cfg"], kw["sampler_name"], kw["scheduler"])

    def ratios(self, s: Settings):
        """(ratio_a, ratio_b) callables for `s`, exactly as ElementalMerge resolves them."""
        return settings_ratios(self.method, self.arch, self.merge.keys, s, self.tags)

    def render(self, s: Settings, progress: PlotProgress | None = None):
        """(images, keys changed, merge seconds) for settings `s` on top of whatever the last cell left."""
        ra, rb = self.ratios(s)
        changed = self.merge.apply(ra, rb)
        seconds = self.merge.last.seconds
        images = self.renderer.render(changed, progress.on_step if progress else None)
        return images, changed, seconds


def settings_ratios(method, arch, keys, s: Settings, tags: dict | None = None):
    """(ratio_a, ratio_b) key -> ratio callables for settings `s`, through ElementalMerge's own resolver
    (`tags`: the architecture each connected text was written for, checked like ElementalMerge does)."""
    tags = tags or {}
    ti = lambda text, tag: TextInput(text, tags.get(tag, AUTO)) if text else None  # noqa: E731
    res_a = resolve_side(keys, arch, s.alpha, ti(s.block_weights_alpha, "bwa"), ti(s.elemental_alpha, "spa"), "alpha")
    res_b = None
    if method.uses_beta:
        res_b = resolve_side(keys, arch, s.beta, ti(s.block_weights_beta, "bwb"), ti(s.elemental_beta, "spb"), "beta")
    return ratio_lookup(res_a, s.alpha), ratio_lookup(res_b, s.beta)


def unused_path(folder: str, stem: str, ext: str, counter: int = 1) -> tuple[str, int]:
    """`<stem>_<counter:05>_.<ext>` in `folder`, the counter raised past every existing file."""
    os.makedirs(folder, exist_ok=True)
    while True:
        path = os.path.join(folder, f"{stem}_{counter:05}_.{ext}")
        if not os.path.exists(path):
            return path, counter
        counter += 1


def png_metadata(hidden, extra: dict) -> PngInfo:
    """SaveImage's metadata (prompt, workflow: unless --disable-metadata) plus our own entries."""
    meta = PngInfo()
    if not args.disable_metadata and hidden is not None:
        if hidden.prompt is not None:
            meta.add_text("prompt", json.dumps(hidden.prompt))
        for k, v in (hidden.extra_pnginfo or {}).items():
            meta.add_text(k, json.dumps(v))
    for k, v in extra.items():
        meta.add_text(k, json.dumps(v))
    return meta


def save_png(image, filename_prefix: str, meta: PngInfo) -> dict:
    """Saves a PIL image like SaveImage (numbered, never overwriting); returns the UI entry."""
    output_dir = folder_paths.get_output_directory()
    folder, stem, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, output_dir,
                                                                            image.width, image.height)
    path, _ = unused_path(folder, stem, "png", counter)
    image.save(path, pnginfo=meta, compress_level=4)
    return {"filename": os.path.basename(path), "subfolder": subfolder, "type": "output"}


def image_tensor(pil) -> torch.Tensor:
    import numpy as np
    return torch.from_numpy(np.asarray(pil.convert("RGB")).astype(np.float32) / 255.0)[None]


class ElementalXYPlot(io.ComfyNode):
    """XY plot over merge settings; one full merge, then only the keys each cell changes."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ElementalXYPlot", display_name="Elemental XY Plot", category=CATEGORY,
            description="Grid of images over merge settings: x/y types " + ", ".join(plot_axes.AXIS_TYPES)
                        + ". A pinpoint axis takes its ratios from the other axis (alpha or beta). Cells are "
                          "identical to ElementalMerge + KSampler with the same settings.",
            inputs=common_inputs() + [
                io.Combo.Input("x_type", options=list(plot_axes.AXIS_TYPES), default=plot_axes.ALPHA),
                io.String.Input("x_values", multiline=True, default="0, 0.5, 1"),
                io.Combo.Input("y_type", options=list(plot_axes.AXIS_TYPES), default=plot_axes.NONE),
                io.String.Input("y_values", multiline=True, default=""),
                io.String.Input("filename_prefix", default="ElementalXY/xy"),
            ],
            outputs=[io.Image.Output(display_name="grid"), io.Image.Output(display_name="cells"),
                     io.String.Output(display_name="table")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, x_type=None, x_values=None, y_type=None, y_values=None):
        if x_type is None or y_type is None:
            return True  # a linked type: checked when the node runs
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

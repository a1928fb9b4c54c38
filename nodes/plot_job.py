"""What the XY plot and the diff checker share: their inputs (the merge sockets of every merging node, plus
prompts and sampling as KSampler has them) and one run's state, settings -> ratios -> incremental merge ->
image. Cells take their ratios from `MergeInputs.ratios`, the resolver ElementalMerge uses, and their
patches from the same engine, so a cell is bit-identical to ElementalMerge + KSampler with its settings.
"""
from __future__ import annotations

import comfy.samplers

from .cell_render import CellRenderer, PlotProgress, empty_latent
from .common import AUTO, TextInput, io
from .merge_inputs import MergeInputs, merge_sockets, resolve
from ..merge_core.calc_modes import get_calc_mode
from ..merge_core.plot_axes import Settings
from .remerge import IncrementalMerge


def plot_inputs() -> list:
    """Models, base merge settings (as ElementalMerge), prompts and sampling (as KSampler)."""
    vae = io.Vae.Input("vae")
    return merge_sockets(clip_a_tooltip="encodes the prompts; merged with clip_b at the BASE ratio when given",
                         clip_a_optional=False, after_clips=(vae,)) + [
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
        self.inputs = MergeInputs(kw["mode"], kw["model_a"], kw["model_b"], kw.get("model_c"), kw["clip_a"],
                                  kw.get("clip_b"), kw.get("clip_c"),
                                  kw.get("calc_mode", "normal"), kw.get("calc_option", 0.3))
        self.method, self.arch, self.names = self.inputs.method, self.inputs.arch, self.inputs.names
        texts = {k: kw.get(k) for k in ("block_weights_alpha", "block_weights_beta", "elemental_alpha",
                                        "elemental_beta")}
        # The architecture each connected text was written for, checked by the resolver as ElementalMerge does.
        self.tags = {k: v.architecture if v else AUTO for k, v in texts.items()}
        text = lambda name, missing: texts[name].text if texts[name] else missing  # noqa: E731
        self.base = Settings(float(kw["alpha"]), float(kw["beta"]), text("block_weights_alpha", None),
                             text("block_weights_beta", None), text("elemental_alpha", ""),
                             text("elemental_beta", ""), kw.get("calc_mode", "normal"),
                             float(kw.get("calc_option", 0.3)))
        self.merge = IncrementalMerge.from_inputs(self.inputs)
        latent = kw.get("latent") or empty_latent(kw["width"], kw["height"], kw["batch_size"])
        self.steps = kw["steps"]
        self.renderer = CellRenderer(self.merge, kw["vae"], kw["positive"], kw["negative"], latent, kw["seed"],
                                     kw["steps"], kw["cfg"], kw["sampler_name"], kw["scheduler"])

    def ratios(self, s: Settings):
        """(ratio_a, ratio_b) callables for `s`, exactly as ElementalMerge resolves them."""
        return settings_ratios(self.method, self.arch, self.merge.keys, s, self.tags)

    def calc(self, s: Settings):
        """The engine's calc settings for cell settings `s` (its calc mode, e.g. from a `calc mode` axis)."""
        return self.merge.calc_for(s.calc_mode, s.calc_option)

    def render(self, s: Settings, progress: PlotProgress | None = None):
        """(images, keys changed, merge seconds) for settings `s` on top of whatever the last cell left."""
        ra, rb = self.ratios(s)
        changed = self.merge.apply(ra, rb, calc=self.calc(s))
        seconds = self.merge.last.seconds
        images = self.renderer.render(changed, progress.on_step if progress else None)
        return images, changed, seconds



def settings_ratios(method, arch, keys, s: Settings, tags: dict | None = None):
    """(ratio_a, ratio_b) key -> ratio callables for settings `s`, through ElementalMerge's own resolver
    (`tags`: input name -> the architecture that connected text was written for, checked as ElementalMerge
    does)."""
    tags = tags or {}
    tagged = lambda text, name: TextInput(text, tags.get(name, AUTO)) if text else None  # noqa: E731
    uses_beta = method.uses_beta or get_calc_mode(getattr(s, "calc_mode", "normal")).uses_beta
    r = resolve(method, arch, keys, s.alpha, s.beta, tagged(s.block_weights_alpha, "block_weights_alpha"),
                tagged(s.block_weights_beta, "block_weights_beta"), tagged(s.elemental_alpha, "elemental_alpha"),
                tagged(s.elemental_beta, "elemental_beta"), uses_beta=uses_beta)
    return r.a, r.b

"""What the XY plot and the diff checker share: their inputs (the merge sockets of every merging node, plus
prompts and sampling as KSampler has them) and one run's state, settings -> ratios -> incremental merge ->
image. Cells take their ratios from `MergeInputs.ratios`, the resolver ElementalMerge uses, and their
patches from the same engine, so a cell is bit-identical to ElementalMerge + KSampler with its settings.
"""
from __future__ import annotations

from ..engine import runtime
from ..engine.cell_render import CellRenderer, PlotProgress, empty_latent
from ..sockets.common import AUTO, TextInput, io
from ..sockets.merge_inputs import MergeInputs, merge_sockets
from ...merge_core.merge.merge_ratios import resolve
from ...merge_core.merge.calc_modes import NORMAL, uses_beta
from ...merge_core.merge.params import GAMMA, TASK_ONLY_PARAMS, task_only
from ...merge_core.merge.task_params import MODEL_WEIGHTS, text_socket_names
from ...merge_core.plot.axes import Settings
from ..engine import comfy_internals, model_info
from ..engine.adjust_patches import AdjustedMerge


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
        io.Combo.Input("sampler_name", options=runtime.sampler_names()),
        io.Combo.Input("scheduler", options=runtime.scheduler_names()),
    ]


class CheckpointCache:
    """Checkpoints a model axis names, loaded through ComfyUI's loader (as Load Checkpoint does) once per plot;
    `keep(names)` drops those no longer needed, so at most one model set's extra checkpoints are held."""

    def __init__(self):
        self.loaded: dict = {}

    def get(self, name: str):
        if name not in self.loaded:
            model, clip, _vae = runtime.load_checkpoint(name, output_vae=False)
            model_info.set_source_name(model, name)
            self.loaded[name] = (model, clip)
        return self.loaded[name]

    def keep(self, names) -> None:
        for name in [n for n in self.loaded if n not in set(names)]:
            del self.loaded[name]


class MergeJob:
    """The merge and rendering state of one run: settings -> ratios -> incremental merge -> image.

    A cell may also carry `Extras` (merge_core.plot.axes): other checkpoints for some model inputs (the merge is
    rebuilt for each distinct set, and the models' CLIPs replace those inputs' CLIPs where they are
    connected), an Adjust after the merge, and its own seed and positive prompt (re-sampled, not re-merged)."""

    labels: dict = {}  # input name -> a name for errors (set per job by __init__; never changed in place)

    def __init__(self, kw: dict, loaded: dict | None = None, labels: dict | None = None):
        """`loaded`: input name -> checkpoint file the graph wires straight into it (plot_labels.
        loaded_checkpoints), so model axes reuse those models. `labels`: input name -> Load Diffusion Model's
        file wired into it (plot_labels.loaded_diffusion_models), a name for errors only."""
        self.kw = kw
        self.loaded = loaded or {}
        self.labels = labels or {}
        self.checkpoints = CheckpointCache()
        self.inputs = self._inputs(())
        self.method, self.arch, self.names = self.inputs.method, self.inputs.arch, self.inputs.names
        texts = {k: kw.get(k) for k in ("block_weights_alpha", "block_weights_beta", "elemental_alpha",
                                        "elemental_beta")}
        # The architecture each connected text was written for, checked by the resolver as ElementalMerge does.
        self.tags = {k: v.architecture if v else AUTO for k, v in texts.items()}
        text = lambda name, missing: texts[name].text if texts[name] else missing  # noqa: E731
        self.base = Settings(float(kw["alpha"]), float(kw["beta"]), text("block_weights_alpha", None),
                             text("block_weights_beta", None), text("elemental_alpha", ""),
                             text("elemental_beta", ""), kw.get("calc_mode", NORMAL),
                             float(kw.get("calc_option", GAMMA.default)),
                             **{p.name: kw.get(p.name, p.default) for p in TASK_ONLY_PARAMS},
                             task_params=tuple(p.name for p in task_only(self.method.params)))
        # A task-vector method's per-key texts and model weights: the node's, the same in every cell.
        self.task_texts = {name: kw.get(name) for name in text_socket_names()}
        self.model_weights = kw.get(MODEL_WEIGHTS, "")
        self.model_set = ()
        self.merge = AdjustedMerge.from_inputs(self.inputs)
        latent = kw.get("latent") or empty_latent(kw["width"], kw["height"], kw["batch_size"])
        self.steps = kw["steps"]
        self.renderer = CellRenderer(self.merge, kw["vae"], kw["positive"], kw["negative"], latent, kw["seed"],
                                     kw["steps"], kw["cfg"], kw["sampler_name"], kw["scheduler"])

    def _inputs(self, model_set: tuple) -> MergeInputs:
        """MergeInputs with the node's models, some replaced by checkpoints: (("B", name), ...), and its merge
        method, or the one of a ("mode", name) entry."""
        kw = self.kw
        mode = dict(model_set).get("mode", kw["mode"])
        model_set = tuple((slot, name) for slot, name in model_set if slot != "mode")
        models = {s: kw.get(f"model_{s.lower()}") for s in "ABCDE"}
        clips = {s: kw.get(f"clip_{s.lower()}") for s in "ABCDE"}
        files = dict(self.loaded)  # input -> the checkpoint file its model is, as loaded
        for slot, name in model_set:
            model, clip = self._input_named(name) or self.checkpoints.get(name)
            models[slot] = model
            files[f"model_{slot.lower()}"] = name  # an input's own model may now sit in another slot
            if slot == "A" or clips[slot] is not None:
                clips[slot] = clip
        return MergeInputs(mode, models["A"], models["B"], models["C"], clips["A"], clips["B"], clips["C"],
                           kw.get("calc_mode", NORMAL), kw.get("calc_option", GAMMA.default), graph_names=files,
                           model_d=models["D"], model_e=models["E"], clip_d=clips["D"], clip_e=clips["E"],
                           graph_labels=self.labels)

    def _input_named(self, name: str):
        """(model, clip) of a node input that is checkpoint `name` as loaded and unpatched (named by Load
        Checkpoint (Merge), or wired straight from a checkpoint loader in the graph), so a model axis value
        equal to an input is not loaded a second time."""
        for s in "ABCDE":
            slot = f"model_{s.lower()}"
            model = self.kw.get(slot)
            named = model is not None and name in (model_info.model_name(model), self.loaded.get(slot))
            recipe = model_info.recipe_of(model) if named else None
            as_loaded = recipe is None or (recipe.get("kind") == "checkpoint" and not recipe.get("apply"))
            if named and as_loaded and not comfy_internals.patch_lists(model):
                return model, self.kw.get(f"clip_{s.lower()}") or self.checkpoints.get(name)[1]
        return None

    def use_models(self, model_set: tuple) -> bool:
        """Switches to another set of checkpoints (a full merge on the next apply); False when unchanged."""
        if tuple(model_set) == self.model_set:
            return False
        self.checkpoints.keep(name for slot, name in model_set if slot != "mode")
        self.inputs = self._inputs(tuple(model_set))
        self.method = self.inputs.method
        self.merge = AdjustedMerge.from_inputs(self.inputs)
        self.renderer.use_merge(self.merge)
        self.model_set = tuple(model_set)
        return True

    def ratios(self, s: Settings):
        """(ratio_a, ratio_b) callables for `s`, exactly as ElementalMerge resolves them."""
        return settings_ratios(self.method, self.arch, self.merge.keys, s, self.tags)

    def task(self, s: Settings):
        """The engine's task-vector settings for cell settings `s` (None for the other modes)."""
        return self.inputs.task({**s.task_values(), MODEL_WEIGHTS: self.model_weights}, self.task_texts)

    def calc(self, s: Settings):
        """The engine's calc settings for cell settings `s` (its calc mode, e.g. from a `calc mode` axis)."""
        return self.merge.calc_for(s.calc_mode, s.calc_option)

    def render(self, s: Settings, progress: PlotProgress | None = None, extras=None):
        """(images, keys changed, merge seconds) for settings `s` (and a cell's `extras`) on top of whatever the
        last cell left."""
        if extras is not None:
            self.use_models(extras.merge_set())
            self.merge.set_adjust(extras.adjust)
        ra, rb = self.ratios(s)
        changed = self.merge.apply(ra, rb, calc=self.calc(s), task=self.task(s))
        seconds = self.merge.last.seconds
        on_step = progress.on_step if progress else None
        if extras is None:
            images = self.renderer.render(changed, on_step)
        else:
            images = self.renderer.render(changed, on_step, seed=extras.seed, positive=extras.positive)
        return images, changed, seconds


def settings_ratios(method, arch, keys, s: Settings, tags: dict | None = None):
    """(ratio_a, ratio_b) key -> ratio callables for settings `s`, through ElementalMerge's own resolver
    (`tags`: input name -> the architecture that connected text was written for, checked as ElementalMerge
    does)."""
    tags = tags or {}
    tagged = lambda text, name: TextInput(text, tags.get(name, AUTO)) if text else None  # noqa: E731
    with_beta = uses_beta(method, getattr(s, "calc_mode", NORMAL))
    r = resolve(arch, keys, s.alpha, s.beta, with_beta, tagged(s.block_weights_alpha, "block_weights_alpha"),
                tagged(s.block_weights_beta, "block_weights_beta"), tagged(s.elemental_alpha, "elemental_alpha"),
                tagged(s.elemental_beta, "elemental_beta"))
    return r.a, r.b

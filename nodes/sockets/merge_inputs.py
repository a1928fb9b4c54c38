"""What a merge needs, decided once for every merging node (ElementalMerge, the XY plot, the diff checker):
the sockets, which models and text encoders take part, the checks, the names, and the targets
`(patcher, shapes, sources)` the engine patches.

Rules (the same for every node):
- mode: a merge_core method; a method that needs C stops without model_c.
- all models given to the method must be one architecture (the error names both).
- the text encoders merge when clip_a and clip_b (and clip_c for a method that needs C) are connected;
  otherwise clip_a passes through unmerged and `clip_reason` says why.
- ratios: merge_core.merge.merge_ratios (alpha/beta, then block weights, then the elemental spec).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from ...merge_core import get_merge_method
from ...merge_core.merge.methods import MERGE_METHODS, TASK_METHODS
from ...merge_core.recipes import recipe as recipes
from ...merge_core.merge.merge_ratios import Ratios, resolve
from ...merge_core.merge.merge_checks import check_calc
from ...merge_core.merge.calc_modes import (CALC_MODE_NAMES, NORMAL, get_calc_mode,
                                     uses_beta)
from ...merge_core.merge.params import ALPHA, BETA, GAMMA, TASK_ONLY_PARAMS, Param
from ...merge_core.merge.task_params import (MODEL_WEIGHTS, MODEL_WEIGHTS_MEANING, resolve_task_values,
                                             text_of_input, text_socket_names)
from ..engine import model_info
from ..engine.comfy_internals import key_patches
from ..engine.merge_adapter import cosine_stat, pair_token
from ..engine.merge_patches import CalcSettings, TaskSettings
from .common import MODES, BlockWeightsType, ElementalSpecType, io


def merge_sockets(clip_a_tooltip: str | None = None, clip_a_optional: bool = True, after_clips=()) -> list:
    """The merge inputs in the order saved workflows have them: models, text encoders, `after_clips` (the XY
    plot's VAE), mode, alpha, beta, block weights, elemental specs. The XY plot needs clip_a to encode its
    prompts, so it asks for it as required."""
    return [
        io.Model.Input("model_a"),
        io.Model.Input("model_b"),
        io.Model.Input("model_c", optional=True),
        io.Clip.Input("clip_a", optional=clip_a_optional, tooltip=clip_a_tooltip),
        io.Clip.Input("clip_b", optional=True),
        io.Clip.Input("clip_c", optional=True),
        *after_clips,
        io.Combo.Input("mode", options=MODES, default="Weight sum", tooltip=MODE_TOOLTIP),
        param_socket(ALPHA),
        param_socket(BETA),
        BlockWeightsType.Input("block_weights_alpha", optional=True),
        BlockWeightsType.Input("block_weights_beta", optional=True),
        ElementalSpecType.Input("elemental_alpha", optional=True),
        ElementalSpecType.Input("elemental_beta", optional=True),
    ]


MODE_TOOLTIP = "\n".join(f"{m.name}: {m.summary}" for m in MERGE_METHODS.values())


def param_socket(param: Param, optional: bool = False):
    """A float widget with the declared default, range, step and meaning."""
    return io.Float.Input(param.name, default=param.default, min=param.lo, max=param.hi, step=param.step,
                          optional=optional, tooltip=param.meaning)


def calc_sockets() -> list:
    """calc_mode and calc_option: appended after every other widget of a merging node (saved workflows store
    widget values by position), optional with defaults that keep old results, so API prompts written before
    them still validate."""
    return [
        io.Combo.Input("calc_mode", options=list(CALC_MODE_NAMES), default=NORMAL, optional=True,
                       tooltip="SuperMerger's calculation mode (docs/calc-modes.md). cosineA, cosineB, tensor, "
                               "tensor2, self need Weight sum; trainDifference, smoothAdd, extract need Add "
                               "difference"),
        param_socket(GAMMA, optional=True),
    ]


def task_sockets() -> list:
    """The task-vector methods' inputs, appended after calc_mode/calc_option (saved workflows store widget
    values by position): further models and their text encoders, then `task_value_sockets`. None of them
    changes what the SuperMerger modes compute."""
    out = [io.Model.Input(f"model_{s}", optional=True, tooltip="a further model for the task-vector methods")
           for s in ("d", "e")]
    out += [io.Clip.Input(f"clip_{s}", optional=True) for s in ("d", "e")]
    return out + task_value_sockets()


def task_value_sockets() -> list:
    """Each TASK_ONLY_PARAMS widget (optional, its default; merge_seed an Int), model_weights, and each
    per-key parameter's block weights and elemental spec."""
    out = []
    for p in TASK_ONLY_PARAMS:
        if p.integer:
            out.append(io.Int.Input(p.name, default=int(p.default), min=int(p.lo), max=int(p.hi), optional=True,
                                    tooltip=p.meaning))
        else:
            out.append(param_socket(p, optional=True))
    out.append(io.String.Input(MODEL_WEIGHTS, default="", optional=True, tooltip=MODEL_WEIGHTS_MEANING))
    for name in text_socket_names():
        kind = BlockWeightsType if name.startswith("block_weights_") else ElementalSpecType
        out.append(kind.Input(name, optional=True))
    return out


@dataclass
class MergeTarget:
    """One patcher the merge writes to (the UNet's or the text encoder's) and what it merges from."""
    name: str        # "unet" or "clip"
    patcher: object  # a clone of A's ModelPatcher (for the text encoder: the CLIP clone's patcher)
    shapes: dict     # key -> shape of A's weight, for every key to merge
    sources: dict    # "a"/"b"/"c" -> that model's get_key_patches() dict ("a": A's own, for fused q/k/v)


class MergeInputs:
    """The models, text encoders and method of one merge, checked; builds targets and resolves ratios."""

    def __init__(self, mode, model_a, model_b, model_c=None, clip_a=None, clip_b=None, clip_c=None,
                 calc_mode: str = NORMAL, calc_option: float = GAMMA.default, graph_names: dict | None = None,
                 model_d=None, model_e=None, clip_d=None, clip_e=None, graph_labels: dict | None = None):
        """`graph_names`: input name -> checkpoint file wired straight into it (merge_core.plot_labels.
        loaded_checkpoints), for models whose loader recorded no name (ComfyUI's stock loader).
        `graph_labels`: input name -> a name for reports and errors only (Load Diffusion Model's file,
        merge_core.plot_labels.loaded_diffusion_models), for models with no recipe of their own.
        model_d/model_e (and their CLIPs): further models, read by the task-vector methods only."""
        self.graph_names = graph_names or {}
        self.graph_labels = graph_labels or {}
        self.method = get_merge_method(mode) if isinstance(mode, str) else mode
        check_calc(self.method.name, calc_mode, calc_option)
        self.calc_mode, self.calc_option = calc_mode, float(calc_option)
        further = {"model_c": model_c, "model_d": model_d, "model_e": model_e}
        self.models = {"model_a": model_a, "model_b": model_b}
        if self.method.task:
            self.models.update({k: m for k, m in further.items() if m is not None})
            self._check_count()
        else:
            unused = [k for k in ("model_d", "model_e") if further[k] is not None]
            if unused:
                raise ValueError(f"mode '{self.method.name}' reads model_a, model_b"
                                 f"{' and model_c' if self.method.needs_c else ''} only; disconnect "
                                 f"{' and '.join(unused)} or pick a task-vector method ({', '.join(TASK_METHODS)})")
            if self.method.needs_c and model_c is None:
                raise ValueError(f"mode '{self.method.name}' needs model_c")
            if self.method.needs_c:
                self.models["model_c"] = model_c
        self.arch = model_info.check_same_architecture(self.models, {k: self._label(k) for k in self.models})
        self.clip_a = clip_a
        clips = {"b": clip_b, "c": clip_c, "d": clip_d, "e": clip_e}
        if self.method.task:
            self.clip_sources = {k[-1]: clips[k[-1]] for k in self.models if k != "model_a"}
            needed = [f"clip_{s}" for s, c in self.clip_sources.items() if c is None]
        else:
            self.clip_sources = {"b": clip_b, "c": clip_c if self.method.needs_c else None}
            needed = [f"clip_{s}" for s, c in self.clip_sources.items()
                      if c is None and (s == "b" or self.method.needs_c)]
        if clip_a is None:
            self.clip_reason = "clip_a not connected: no CLIP output"
        elif needed:
            self.clip_reason = f"{' and '.join(needed)} not connected: text encoder passed through from clip_a unmerged"
        else:
            self.clip_reason = None
        self.unet_shapes = model_info.unet_shapes(model_a)
        self.clip_shapes = model_info.clip_shapes(clip_a) if self.clip_merged else {}
        self.keys = list(self.unet_shapes) + list(self.clip_shapes)

    def _check_count(self) -> None:
        """A task-vector method's model count: at least its minimum, at most its maximum."""
        method, n = self.method, len(self.models) - 1
        problem = method.count_problem(n)
        if problem:
            raise ValueError(problem)
        if method.max_models is not None and n > method.max_models:
            extra = [k for k in self.models if k != "model_a"][method.max_models:]
            raise ValueError(f"mode '{method.name}' reads model_a and model_b only; disconnect {', '.join(extra)}")

    @property
    def task_sources(self) -> tuple:
        """The sources a task-vector method reads, in order: "b", then the connected "c", "d", "e"."""
        return tuple(k[-1] for k in self.models if k != "model_a")

    @property
    def clip_merged(self) -> bool:
        return self.clip_reason is None

    @property
    def uses_beta(self) -> bool:
        """Whether beta decides any weight: the method's or the calc mode's use of it."""
        return uses_beta(self.method, self.calc_mode)

    def calc(self, targets, calc_mode: str | None = None, calc_option: float | None = None) -> CalcSettings:
        """The engine's CalcSettings for this merge (or for another calc mode/option, an XY cell's), with the
        cosine statistic of A and B over every target (UNet, and the text encoder when merged), cached per
        pair of source models."""
        mode = self.calc_mode if calc_mode is None else calc_mode
        gamma = self.calc_option if calc_option is None else float(calc_option)
        check_calc(self.method.name, mode, gamma)
        stat = None
        if get_calc_mode(mode).uses_stat:
            clips = (self.clip_a.patcher, self.clip_sources["b"].patcher) if self.clip_merged else ()
            token = pair_token(self.models["model_a"], self.models["model_b"], *clips)
            parts = [(self.arch, t.sources["a"], t.sources["b"]) for t in targets]
            stat = cosine_stat(mode, token, parts)
        return CalcSettings(mode, gamma, stat, self.arch)

    def _graph_name(self, slot: str) -> str | None:
        """The checkpoint the graph wires straight into `slot`, when the model itself records no origin."""
        if slot in self.graph_names and model_info.recipe_of(self.models[slot]) is None:
            return self.graph_names[slot]
        return None

    def _label(self, slot: str) -> str:
        if self._graph_name(slot):
            return self._graph_name(slot)
        if slot in self.graph_labels and model_info.recipe_of(self.models[slot]) is None:
            return self.graph_labels[slot]
        return model_info.model_name(self.models[slot])

    @property
    def names(self) -> dict:
        """"A"/"B"/"C" -> the model's name, for reports, titles, recipes and errors."""
        return {k[-1].upper(): self._label(k) for k in self.models}

    def targets(self) -> tuple[object, object, list[MergeTarget]]:
        """(merged model, merged or passed-through CLIP, targets): fresh clones of A to patch."""
        model = self.models["model_a"].clone()
        unet_sources = {k[-1]: key_patches(m, model_info.UNET_PREFIX) for k, m in self.models.items()}
        targets = [MergeTarget("unet", model, self.unet_shapes, unet_sources)]
        clip = self.clip_a
        if self.clip_merged:
            clip = self.clip_a.clone()
            sources = {s: key_patches(c.patcher) for s, c in self.clip_sources.items() if c is not None}
            sources["a"] = key_patches(self.clip_a.patcher)
            targets.append(MergeTarget("clip", clip.patcher, self.clip_shapes, sources))
        return model, clip, targets

    def task(self, values: dict, texts: dict) -> TaskSettings | None:
        """A task-vector method's per-key parameters (`values`: name -> the socket's value; `texts`:
        block_weights_<p> / elemental_<p> -> the linked text or None), or None for the other modes."""
        if not self.method.task:
            return None
        resolved = resolve_task_values(self.arch, self.keys, self.method, values,
                                       {k: text_of_input(v) for k, v in texts.items()}, len(self.models))
        return TaskSettings(resolved, self.task_sources, self.arch)

    def ratios(self, alpha: float, beta: float, block_weights_alpha=None, block_weights_beta=None,
               elemental_alpha=None, elemental_beta=None) -> Ratios:
        """Every key's alpha (and beta, for methods and calc modes that use it)."""
        return resolve(self.arch, self.keys, alpha, beta, self.uses_beta, block_weights_alpha, block_weights_beta,
                       elemental_alpha, elemental_beta)

    def recipe_sources(self) -> dict:
        """"A"/"B"/"C" -> each input's recipe node: a merge's, a checkpoint's (read from the graph for the
        stock loader's unnamed models, each file's header read once), or an unknown source by its name."""
        out = {}
        for slot, model in self.models.items():
            name = self._graph_name(slot)
            node = model_info.checkpoint_recipe(name) if name else model_info.recipe_of(model)
            letter = slot[-1].upper()
            out[letter] = copy.deepcopy(node) if node is not None else recipes.unknown_node(self.names[letter])
        return out

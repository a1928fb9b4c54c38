"""What a merge needs, decided once for every merging node (ElementalMerge, the XY plot, the diff checker):
the sockets, which models and text encoders take part, the checks, the names, and the targets
`(patcher, shapes, sources)` the engine patches.

Rules (the same for every node):
- mode: a merge_core method; a method that needs C stops without model_c.
- all models given to the method must be one architecture (the error names both).
- the text encoders merge when clip_a and clip_b (and clip_c for a method that needs C) are connected;
  otherwise clip_a passes through unmerged and `clip_reason` says why.
- ratios: alpha/beta, then block weights, then the elemental spec (merge_core.resolve_ratios); keys outside
  every block merge at the plain ratio, as SuperMerger does.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..merge_core import ARCHITECTURES, MergeSpecError, get_merge_method, parse_block_weights, parse_spec, \
    resolve_ratios
from . import model_info
from .common import AUTO, MODES, BlockWeightsType, ElementalSpecType, TextInput, io


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
        io.Combo.Input("mode", options=MODES, default="Weight sum"),
        io.Float.Input("alpha", default=0.5, min=-1.0, max=2.0, step=0.01,
                       tooltip="B's share (Add difference: the multiplier of B-C)"),
        io.Float.Input("beta", default=0.25, min=-1.0, max=2.0, step=0.01,
                       tooltip="C's share (Triple sum, Sum twice); unused by the other modes"),
        BlockWeightsType.Input("block_weights_alpha", optional=True),
        BlockWeightsType.Input("block_weights_beta", optional=True),
        ElementalSpecType.Input("elemental_alpha", optional=True),
        ElementalSpecType.Input("elemental_beta", optional=True),
    ]


@dataclass
class MergeTarget:
    """One patcher the merge writes to (the UNet's or the text encoder's) and what it merges from."""
    name: str        # "unet" or "clip"
    patcher: object  # a clone of A's ModelPatcher (for the text encoder: the CLIP clone's patcher)
    shapes: dict     # key -> shape of A's weight, for every key to merge
    sources: dict    # "b"/"c" -> that model's get_key_patches() dict


def _check_written_for(what: str, given: TextInput | None, arch) -> None:
    if given is not None and given.architecture not in (AUTO, arch.name):
        raise ValueError(f"{what} was written for {ARCHITECTURES[given.architecture].label} "
                         f"but the models are {arch.label}")


def _parse(what: str, fn, *a, **kw):
    try:
        return fn(*a, **kw)
    except MergeSpecError as exc:
        raise ValueError(f"{what}: {exc}") from None


def resolve_side(keys, arch, ratio, weights: TextInput | None, spec: TextInput | None, label: str):
    """merge_core's Resolution for one ratio (alpha or beta), after checking the texts against `arch`."""
    _check_written_for(f"block_weights_{label}", weights, arch)
    _check_written_for(f"elemental_{label}", spec, arch)
    bw = None
    if weights is not None:
        bw = _parse(f"block_weights_{label}", parse_block_weights, weights.text, arch, alpha=ratio)
    parsed = None
    if spec is not None and spec.text.strip():
        parsed = _parse(f"elemental_{label}", parse_spec, spec.text, arch, keys=keys)
    return resolve_ratios(keys, arch, ratio, block_weights=bw, spec=parsed)


def ratio_lookup(resolution, default: float):
    """key -> ratio; keys outside every block merge at the plain ratio, as SuperMerger does."""
    ratios = resolution.ratios if resolution is not None else {}
    return lambda key: ratios.get(key, default)


@dataclass(frozen=True)
class Ratios:
    """The per-key ratios of one set of merge settings."""
    a: object          # key -> alpha
    b: object          # key -> beta
    resolution_a: object
    resolution_b: object  # None when the method does not use beta


def resolve(method, arch, keys, alpha: float, beta: float, block_weights_alpha=None, block_weights_beta=None,
            elemental_alpha=None, elemental_beta=None) -> Ratios:
    """Every key's alpha (and beta, for methods that use it) from the merge settings: the one resolver of
    ElementalMerge, the XY plot's cells and the diff checker's targets."""
    res_a = resolve_side(keys, arch, alpha, block_weights_alpha, elemental_alpha, "alpha")
    res_b = None
    if method.uses_beta:
        res_b = resolve_side(keys, arch, beta, block_weights_beta, elemental_beta, "beta")
    return Ratios(ratio_lookup(res_a, alpha), ratio_lookup(res_b, beta), res_a, res_b)


class MergeInputs:
    """The models, text encoders and method of one merge, checked; builds targets and resolves ratios."""

    def __init__(self, mode, model_a, model_b, model_c=None, clip_a=None, clip_b=None, clip_c=None):
        self.method = get_merge_method(mode) if isinstance(mode, str) else mode
        if self.method.needs_c and model_c is None:
            raise ValueError(f"mode '{self.method.name}' needs model_c")
        self.models = {"model_a": model_a, "model_b": model_b}
        if self.method.needs_c:
            self.models["model_c"] = model_c
        self.arch = model_info.check_same_architecture(self.models)
        self.clip_a = clip_a
        self.clip_sources = {"b": clip_b, "c": clip_c if self.method.needs_c else None}
        needed = [f"clip_{s}" for s, c in self.clip_sources.items() if c is None and (s == "b" or self.method.needs_c)]
        if clip_a is None:
            self.clip_reason = "clip_a not connected: no CLIP output"
        elif needed:
            self.clip_reason = f"{' and '.join(needed)} not connected: text encoder passed through from clip_a unmerged"
        else:
            self.clip_reason = None
        self.unet_shapes = model_info.unet_shapes(model_a)
        self.clip_shapes = model_info.clip_shapes(clip_a) if self.clip_merged else {}
        self.keys = list(self.unet_shapes) + list(self.clip_shapes)

    @property
    def clip_merged(self) -> bool:
        return self.clip_reason is None

    @property
    def names(self) -> dict:
        """"A"/"B"/"C" -> the model's name, for reports, titles and recipes."""
        return {k[-1].upper(): model_info.model_name(m) for k, m in self.models.items()}

    def targets(self) -> tuple[object, object, list[MergeTarget]]:
        """(merged model, merged or passed-through CLIP, targets): fresh clones of A to patch."""
        model = self.models["model_a"].clone()
        unet_sources = {k[-1]: m.get_key_patches(model_info.UNET_PREFIX)
                        for k, m in self.models.items() if k != "model_a"}
        targets = [MergeTarget("unet", model, self.unet_shapes, unet_sources)]
        clip = self.clip_a
        if self.clip_merged:
            clip = self.clip_a.clone()
            sources = {s: c.get_key_patches() for s, c in self.clip_sources.items() if c is not None}
            targets.append(MergeTarget("clip", clip.patcher, self.clip_shapes, sources))
        return model, clip, targets

    def ratios(self, alpha: float, beta: float, block_weights_alpha=None, block_weights_beta=None,
               elemental_alpha=None, elemental_beta=None) -> Ratios:
        """Every key's alpha (and beta, for methods that use it)."""
        return resolve(self.method, self.arch, self.keys, alpha, beta, block_weights_alpha, block_weights_beta,
                       elemental_alpha, elemental_beta)

    def recipe_models(self) -> dict:
        """Recipes of inputs that are themselves merges, as `<input>_recipe` entries of this merge's recipe."""
        return {f"{k}_recipe": model_info.recipe_of(m) for k, m in self.models.items()
                if model_info.recipe_of(m) is not None}

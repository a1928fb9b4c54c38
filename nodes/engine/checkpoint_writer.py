"""Save a (merged) MODEL + CLIP + VAE as a checkpoint, one tensor at a time, with ComfyUI's own names.

Why not `comfy.sd.save_checkpoint`: it patches the whole model (`force_patch_weights`), builds the full
state dict and serializes it in one buffer, so a save needs the sources, the merged copy and the file's
bytes in memory together. Here each merged weight is computed only when the streaming writer asks for it,
written, and dropped.

What stays ComfyUI's:
- the weights: each key is computed exactly as `ModelPatcher.patch_weight_to_device` computes the live
  weight (float32 copy of the unpatched weight, `comfy.lora.calculate_weight`, rounded to the weight's own
  dtype), so an fp32 save holds the live weights bit for bit. The unpatched weight and the patch list come
  from the public `ModelPatcher.get_key_patches()`, which reads the shared backup when a clone has the
  model loaded with its patches applied.
- the names and layout: each part's `process_*_state_dict_for_saving` of the model config, run first on
  meta tensors. An output that is the very input object is a rename; any other output (SD2/SDXL's fused
  q/k/v `in_proj`, the transposed `text_projection`, new `position_ids`) is rebuilt by running the same
  function on the patched inputs it is made of (found by tracing that meta run), a few such outputs at a
  time in file order, with every other input left on the meta device.
- except Flux's q/k RMSNorms: ComfyUI 0.33 holds them as ``_norm.weight`` and its own save writes that, which
  0.3.75 cannot load; they are written under their file names ``_norm.scale`` (`merge_core.flux_names`), which
  every ComfyUI loads, whenever this ComfyUI's own loader (`process_unet_state_dict`) renames that name back.
- except quantized weights (ComfyUI 0.33's QuantizedTensor, from fp8-scaled or `comfy_quant` files): written
  plain, as the dequantized values the live model computes with, without their scale/config keys
  (`quantized_weights`, docs/saving.md); 0.3.75's scaled-fp8 models are refused.
- the extra keys of `comfy_extras/nodes_model_merging.save_checkpoint` and `BaseModel.state_dict_for_saving`
  (ComfyUI 0.3.75): `v_pred`, `ztsnr`, `edm_vpred.sigma_min/max`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import comfy.float
import comfy.lora
import comfy.model_base
import comfy.model_management
import comfy.model_sampling
import torch
from torch.overrides import TorchFunctionMode

from ...merge_core.arch.flux_names import file_name as flux_file_name
from ...merge_core.files.safetensors_stream import plan_file, write_planned
from ...merge_core.files.save_dtypes import cast_for_save, stored_dtype
from . import model_info
from .comfy_internals import key_patches, string_to_seed
from .quantized_weights import companion_keys, dequantized, is_quantized, requantized_like

UNET_PREFIX = "diffusion_model."
# Derived outputs are rebuilt in batches whose patched inputs take at most this many bytes (or one output's,
# if larger): rebuilding all of SDXL's at once held 1.0-1.5 GiB (OpenCLIP-G's patched q/k/v, their fused
# copies, and the heap pages the float32 temporaries between them left resident).
DERIVED_BATCH_BYTES = 64 * 2 ** 20


def _tensors(value):
    """The tensors in a call's arguments or result (nested in lists, tuples and dicts)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


class _Lineage(TorchFunctionMode):
    """Records, for every tensor a traced function makes or writes into, the input keys it was computed from
    (an in-place operation or `out[i] = t`, as ComfyUI's `cat_tensors` does, adds to the tensor written)."""

    def __init__(self, roots: dict):
        super().__init__()
        self.deps = {id(t): frozenset((k,)) for k, t in roots.items()}
        self.keep = list(roots.values())  # every traced tensor stays alive: no id is reused while tracing

    def _add(self, t: torch.Tensor, found: frozenset) -> None:
        self.deps[id(t)] = self.deps.get(id(t), frozenset()) | found
        self.keep.append(t)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        given = list(_tensors((args, kwargs)))
        found = frozenset().union(*(self.deps.get(id(a), ()) for a in given))
        name = getattr(func, "__name__", "")
        if "out" in kwargs or name == "__setitem__" or name.startswith("__i") or \
                (name.endswith("_") and not name.startswith("__")):
            for t in given:  # written in place (over-approximated: every tensor the call was given)
                for w in (t, t._base):
                    if w is not None:
                        self._add(w, found)
        for t in _tensors(out):
            self._add(t, found)
        return out


@dataclass
class Part:
    """One component (UNet, text encoder, VAE): its inputs, its config's saving function, and the mapping."""
    name: str
    process: Callable[[dict], dict]
    compute: Callable[[str], torch.Tensor]   # input key -> the tensor as the live model holds it
    inputs: dict                             # input key -> tensor (unpatched; only dtype/shape are read)
    renamed: dict | None = None              # output key -> input key
    derived: dict | None = None              # output key -> (dtype, shape), rebuilt by `process`
    consumed: list | None = None             # input keys that are not renamed (feed derived outputs)
    lineage: dict | None = None              # derived output key -> the input keys it is made of; None: unknown
    _cache: dict = field(default_factory=dict)  # derived outputs rebuilt and not yet written

    def plan(self) -> dict:
        """Runs `process` on meta tensors: output key -> (dtype, shape); fills renamed/derived/consumed and,
        where the run could be traced, the lineage of each derived output."""
        meta = {k: _meta(v) if isinstance(v, torch.Tensor) else v for k, v in self.inputs.items()}
        by_id = {id(v): k for k, v in meta.items()}
        trace = _Lineage({k: v for k, v in meta.items() if isinstance(v, torch.Tensor)})
        try:
            with trace:
                out = self.process(dict(meta))
            traced = True
        except Exception:  # noqa: BLE001 - tracing is an optimization: the untraced run decides
            out, traced = self.process(dict(meta)), False
        self.renamed, self.derived, layout = {}, {}, {}
        for k, v in out.items():
            if not isinstance(v, torch.Tensor):
                raise ValueError(f"{self.name}: '{k}' is not a tensor ({type(v).__name__}); quantized models "
                                 "cannot be saved by this node")
            layout[k] = (v.dtype, tuple(v.shape))
            if id(v) in by_id:
                self.renamed[k] = by_id[id(v)]
            else:
                self.derived[k] = layout[k]
        used = set(self.renamed.values())
        self.consumed = [k for k in self.inputs if k not in used]
        self.lineage = {k: trace.deps.get(id(out[k]), frozenset()) for k in self.derived} if traced else None
        return layout

    def rebuild_derived(self, keys=None) -> dict:
        """The derived outputs `keys` (default: all) from the patched inputs they are made of, as `process`
        makes them; with a lineage, the inputs none of them is made of stay on the meta device."""
        keys = list(self.derived if keys is None else keys)
        if self.lineage is None:
            needed = set(self.consumed)
        else:
            needed = set().union(*(self.lineage[k] for k in keys))
        real = {k: (self.compute(k) if k in needed else v.to("meta")) for k, v in self.inputs.items()}
        out = self.process(real)
        return {k: out[k] for k in keys}

    def derived_output(self, key: str, order: dict) -> torch.Tensor:
        """Derived output `key`, rebuilt together with the next ones in file order (`order`: output key ->
        position) up to DERIVED_BATCH_BYTES of patched inputs; those are kept until they are written."""
        if key not in self._cache:
            self._cache.update(self._rebuilt(self._batch(key, order), order[key], order))
        return self._cache.pop(key)

    def _batch(self, key: str, order: dict) -> list:
        if self.lineage is None:
            return [key]
        pending = sorted((k for k in self.derived if k not in self._cache and order[k] >= order[key]),
                         key=order.__getitem__)
        keys, inputs, size = [], set(), 0
        for k in pending:
            new = self.lineage[k] - inputs
            extra = sum(_nbytes(self.inputs[i]) for i in new)
            if keys and size + extra > DERIVED_BATCH_BYTES:
                break
            keys.append(k)
            inputs |= new
            size += extra
        return keys

    def _rebuilt(self, keys: list, at: int, order: dict) -> dict:
        """`rebuild_derived(keys)`; where the traced lineage proves wrong (an output left on the meta device,
        or an operation given a meta and a real input), every derived output not yet written, at once."""
        if self.lineage is not None:
            try:
                out = self.rebuild_derived(keys)
                if all(t.device.type != "meta" for t in out.values()):
                    return out
            except Exception:  # noqa: BLE001 - e.g. a meta and a CPU tensor in one operation: rebuilt below
                pass
            self.lineage = None
        return self.rebuild_derived([k for k in self.derived if order[k] >= at and k not in self._cache])


def _nbytes(t) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


def _meta(t: torch.Tensor) -> torch.Tensor:
    """`t` on the meta device; a quantized weight as the plain tensor it is written as (its compute dtype)."""
    if is_quantized(t):
        return torch.empty(tuple(t.shape), dtype=t.dtype, device="meta")
    return t.to("meta")


def live_weight(entry: list, key: str, device) -> torch.Tensor:
    """What `patch_weight_to_device` makes of a `get_key_patches()` entry `[(weight, convert), *patches]`;
    a quantized weight as the plain values the model computes with (requantized by the layer's own rule
    first when it is patched, as the live model holds it)."""
    (weight, convert), patches = entry[0], entry[1:]
    if not patches:
        return dequantized(weight, key)
    temp = comfy.model_management.cast_to_device(weight, device, torch.float32, copy=True)
    temp = convert(temp, inplace=True)
    out = comfy.lora.calculate_weight(patches, dequantized(temp, key), key)
    if is_quantized(weight):
        return dequantized(requantized_like(weight, out, key, string_to_seed(key)), key).to("cpu")
    out = comfy.float.stochastic_rounding(out, weight.dtype, seed=string_to_seed(key))
    return out.to("cpu")


def _patcher_part(name: str, patcher, prefix: str, process, extra: dict | None = None) -> Part:
    entries = key_patches(patcher, prefix or None)
    device = patcher.load_device
    strip = len(prefix)
    dropped = companion_keys({k: e[0][0] for k, e in entries.items()})  # written plain: no scales, no config
    entries = {k: e for k, e in entries.items() if k not in dropped}
    inputs = {k[strip:]: e[0][0] for k, e in entries.items()}
    for k, v in (extra or {}).items():
        inputs.setdefault(k, v)

    def compute(k):
        if prefix + k in entries:
            return live_weight(entries[prefix + k], prefix + k, device)
        return inputs[k]
    return Part(name, process, compute, inputs)


def with_file_names(config, saving: Callable[[dict], dict]) -> Callable[[dict], dict]:
    """The UNet saving function `saving`, with each Flux q/k norm under its file name where this ComfyUI's
    loader turns that name back into the one the model holds (0.33); other keys (and 0.3.75's) unchanged."""
    def process(sd: dict) -> dict:
        out = {}
        for k, v in saving(sd).items():
            name = flux_file_name(k)
            if name != k and list(config.process_unet_state_dict({name: v})) != [k]:
                name = k
            out[name] = v
        return out
    return process


def sampling_extras(model) -> tuple[dict, dict]:
    """(metadata, extra tensors) that tell a loader how the model samples, as ComfyUI's own save writes them
    (`comfy_extras/nodes_model_merging.save_checkpoint`, 0.3.75): v-prediction, zero terminal SNR, EDM sigmas."""
    metadata, extra = {}, {}
    sampling = model.get_model_object("model_sampling")
    if isinstance(sampling, comfy.model_sampling.ModelSamplingContinuousEDM) and \
            isinstance(sampling, comfy.model_sampling.V_PREDICTION):
        extra["edm_vpred.sigma_max"] = torch.tensor(sampling.sigma_max).float()
        extra["edm_vpred.sigma_min"] = torch.tensor(sampling.sigma_min).float()
    if model.model.model_type == comfy.model_base.ModelType.EPS:
        metadata["modelspec.predict_key"] = "epsilon"
    elif model.model.model_type == comfy.model_base.ModelType.V_PREDICTION:
        metadata["modelspec.predict_key"] = "v"
        extra["v_pred"] = torch.tensor([])
        if getattr(sampling, "zsnr", False):
            extra["ztsnr"] = torch.tensor([])
    return metadata, extra


def checkpoint_parts(model, clip=None, vae=None) -> list[Part]:
    """The parts of the checkpoint ComfyUI would save for (model, clip, vae), in its update order."""
    config = model.model.model_config
    quant = model_info.quantization(model)
    if quant is not None and quant[0] != "quant_config":  # ComfyUI 0.3.75's formats: fp8 weights, scales apart
        raise ValueError(f"{model_info.model_name(model)}: the model is stored as {quant[1]}, which this ComfyUI "
                         "holds as fp8 weights with separate scales; the pack saves quantized models on ComfyUI "
                         "0.33 and later: save it with ComfyUI's CheckpointSave")
    parts = [_patcher_part("UNet", model, UNET_PREFIX, config.process_unet_state_dict_for_saving)]
    if clip is not None:
        parts.append(_patcher_part("text encoder", clip.patcher, "", config.process_clip_state_dict_for_saving,
                                   extra=clip.tokenizer.state_dict()))
    if vae is not None:
        vae_sd = vae.get_sd()
        parts.append(Part("VAE", config.process_vae_state_dict_for_saving, vae_sd.__getitem__, vae_sd))
    return parts


def save_checkpoint_streaming(path: str, model, clip, vae, precision: str, metadata: dict,
                              on_tensor: Callable[[int, str], None] | None = None) -> dict:
    """Writes the checkpoint; returns {output key: stored dtype}. Peak extra memory: one weight's float32
    temporaries and one batch of derived outputs (DERIVED_BATCH_BYTES of patched inputs)."""
    parts = checkpoint_parts(model, clip, vae)
    parts[0].process = with_file_names(model.model.model_config, parts[0].process)  # the UNet part
    source: dict[str, tuple] = {}   # output key -> (part, input key or None for derived)
    layout: dict[str, tuple] = {}
    for part in parts:  # later parts overwrite earlier keys, as state_dict_for_saving's dict.update does
        for k, (dtype, shape) in part.plan().items():
            source[k] = (part, part.renamed.get(k))
            layout[k] = (dtype, shape)
    for k, t in sampling_extras(model)[1].items():
        source[k], layout[k] = (None, t), (t.dtype, tuple(t.shape))
    targets = {k: stored_dtype(k, dt, shape, precision) for k, (dt, shape) in layout.items()}
    plan = plan_file({k: (targets[k], layout[k][1]) for k in layout}, metadata)
    order = {name: i for i, name in enumerate(plan.order)}

    def produce(key: str) -> torch.Tensor:
        part, ref = source[key]
        if part is None:
            t = ref
        elif ref is not None:
            t = part.compute(ref)
        else:
            t = part.derived_output(key, order)
        return cast_for_save(t, targets[key])

    write_planned(path, plan, produce, on_tensor)
    return targets


# (model_base class name, modelspec.architecture), first match wins: subclasses before their bases.
MODELSPEC_ARCHITECTURES = (
    ("SDXL_instructpix2pix", "stable-diffusion-xl-v1-edit"),
    ("SDXL", "stable-diffusion-xl-v1-base"),
    ("SDXLRefiner", "stable-diffusion-xl-v1-refiner"),
    ("SVD_img2vid", "stable-video-diffusion-img2vid-v1"),
    ("SD3", "stable-diffusion-v3-medium"),
)


def modelspec(model, title: str) -> dict:
    """The modelspec metadata entries stock Save Checkpoint writes for this model's class (none for others)."""
    for class_name, architecture in MODELSPEC_ARCHITECTURES:
        cls = getattr(comfy.model_base, class_name, None)
        if cls is not None and isinstance(model.model, cls):
            return {"modelspec.architecture": architecture, "modelspec.sai_model_spec": "1.0.0",
                    "modelspec.implementation": "sgm", "modelspec.title": title}
    return {}

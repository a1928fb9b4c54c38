"""The graph-facing merge nodes (issue 3): thin V3 adapters over merge_core and nodes/patching.py.

What is decided where:
- merge_core: what a spec / weight string means, every key's ratio, the change report, each mode's patch steps.
- nodes/patching.py: how those steps become ModelPatcher patches (shapes, missing keys).
- here: ComfyUI types and widgets, queue-time validation, loading and saving files, the recipe.

Queue-time validation (`validate_inputs`) cannot see the models, so ElementalSpec and BlockWeights carry an
`architecture` choice: a named one is checked fully; `auto` accepts text that is valid for at least one
architecture. The full check, against the real models' architecture and keys, runs again when the merge
executes, before any patch is added.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import comfy.model_base
import comfy.model_management
import comfy.sd
import comfy.utils
import folder_paths
import torch
from comfy.cli_args import args
from comfy_api.latest import io

from ..merge_core import (ARCHITECTURES, MergeSpecError, format_change_report, get_merge_method,
                          MERGE_METHODS, parse_block_weights, parse_spec, resolve_ratios)
from . import model_info
from .patching import MergeNotes, apply_merge
from .text_checks import errors_per_architecture, spec_errors, weights_errors

log = logging.getLogger("elemental_merge")

CATEGORY = "advanced/model_merging/elemental"
AUTO = "auto"
ARCH_CHOICES = [AUTO] + list(ARCHITECTURES)
MODES = list(MERGE_METHODS)  # "Weight sum", "Add difference", "Triple sum", "Sum twice"
SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
RECIPE_METADATA_KEY = "elemental_merge_recipe"
RECIPE_VERSION = 1

ElementalSpecType = io.Custom("ELEMENTAL_SPEC")
BlockWeightsType = io.Custom("BLOCK_WEIGHTS")


@dataclass(frozen=True)
class TextInput:
    """What ELEMENTAL_SPEC and BLOCK_WEIGHTS carry: the text and the architecture it was written for."""
    text: str
    architecture: str = AUTO


# ---- queue-time validation --------------------------------------------------------------------------------

def validate_text(kind: str, text: str, architecture: str, check) -> bool | str:
    """True, or a readable message naming line and column, for `check(text, arch) -> errors`.

    With `auto`, text valid for any architecture passes; otherwise the architecture with the fewest errors is
    the one reported (the user most likely meant that one)."""
    if not text.strip():
        return True
    archs = list(ARCHITECTURES.values()) if architecture == AUTO else [ARCHITECTURES[architecture]]
    found = errors_per_architecture(text, archs, check)
    if found is None:
        return True
    name = min(found, key=lambda n: len(found[n]))
    label = ARCHITECTURES[name].label
    if architecture == AUTO:
        lines = [f"invalid {kind}: valid for no architecture; as {label}:"]
    else:
        lines = [f"invalid {kind} for {label}:"]
    lines += [d.format() if hasattr(d, "format") else str(d) for d in found[name]]
    return "\n".join(lines)


# ---- nodes --------------------------------------------------------------------------------------------------

class MergeCheckpointLoader(io.ComfyNode):
    """The stock checkpoint loader plus the checkpoint's name and architecture, for labels and recipes."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MergeCheckpointLoader", display_name="Load Checkpoint (Merge)", category=CATEGORY,
            description="Loads a checkpoint like Load Checkpoint and also outputs its name and architecture.",
            inputs=[io.Combo.Input("ckpt_name", options=folder_paths.get_filename_list("checkpoints"))],
            outputs=[io.Model.Output(display_name="MODEL"), io.Clip.Output(display_name="CLIP"),
                     io.Vae.Output(display_name="VAE"), io.String.Output(display_name="name"),
                     io.String.Output(display_name="architecture")],
        )

    @classmethod
    def execute(cls, ckpt_name):
        path = folder_paths.get_full_path_or_raise("checkpoints", ckpt_name)
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
            path, output_vae=True, output_clip=True,
            embedding_directory=folder_paths.get_folder_paths("embeddings"))
        model_info.set_source_name(model, ckpt_name)
        try:
            arch = model_info.architecture_of(model).name
        except ValueError:
            arch = "unknown"
        return io.NodeOutput(model, clip, vae, ckpt_name, arch)


class ElementalSpec(io.ComfyNode):
    """A SuperMerger elemental spec, checked when the prompt is queued."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ElementalSpec", display_name="Elemental Spec", category=CATEGORY,
            description="Elemental merge entries, one per line or comma-separated, e.g. "
                        "'IN04:NOT:attn1:0.3' or 'OUT03-OUT05::0'.",
            inputs=[io.String.Input("spec", multiline=True, default=""),
                    io.Combo.Input("architecture", options=ARCH_CHOICES, default=AUTO,
                                   tooltip="auto: accepted if valid for some architecture; the merge checks it "
                                           "against the real models.")],
            outputs=[ElementalSpecType.Output(display_name="ELEMENTAL_SPEC")],
        )

    @classmethod
    def validate_inputs(cls, spec=None, architecture=AUTO):
        # `spec` is None when it comes from a link: then only the merge can check it.
        if spec is None:
            return True
        return validate_text("elemental spec", spec, architecture or AUTO, spec_errors)

    @classmethod
    def execute(cls, spec, architecture):
        return io.NodeOutput(TextInput(spec, architecture))


class BlockWeights(io.ComfyNode):
    """Per-block ratios: a preset name or a comma-separated weight string, checked when queued."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="BlockWeights", display_name="Block Weights", category=CATEGORY,
            description="A preset name or one weight per block (BASE first for SD1/SD2/SDXL).",
            inputs=[io.String.Input("weights", default=""),
                    io.Combo.Input("architecture", options=ARCH_CHOICES, default=AUTO)],
            outputs=[BlockWeightsType.Output(display_name="BLOCK_WEIGHTS")],
        )

    @classmethod
    def validate_inputs(cls, weights=None, architecture=AUTO):
        if weights is None:  # linked: checked by the merge
            return True
        if not weights.strip():
            return "block weights: empty (give a preset name or one weight per block)"
        return validate_text("block weights", weights, architecture or AUTO, weights_errors)

    @classmethod
    def execute(cls, weights, architecture):
        return io.NodeOutput(TextInput(weights, architecture))


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
    """Keys outside every block merge at the plain ratio, as SuperMerger does."""
    ratios = resolution.ratios if resolution is not None else {}
    return lambda key: ratios.get(key, default)


def _clip_state(method, clip_a, clip_b, clip_c):
    """(text-encoder shapes, sources) when the text encoders can be merged, else ({}, reason)."""
    if clip_a is None:
        return {}, "clip_a not connected: no CLIP output"
    missing = [n for n, c in (("clip_b", clip_b), ("clip_c", clip_c if method.needs_c else True)) if c is None]
    if missing:
        return {}, f"{', '.join(missing)} not connected: text encoder passed through from clip_a unmerged"
    sources = {"b": clip_b.get_key_patches()}
    if method.needs_c:
        sources["c"] = clip_c.get_key_patches()
    return model_info.clip_shapes(clip_a), sources


class ElementalMerge(io.ComfyNode):
    """Merges models A, B (and C) with per-key ratios from alpha/beta, block weights and elemental specs."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ElementalMerge", display_name="Elemental Merge", category=CATEGORY,
            description="SuperMerger-style merge: Weight sum A(1-a)+Ba, Add difference A+(B-C)a, Triple sum "
                        "A(1-a-b)+Ba+Cb, Sum twice (A(1-a)+Ba)(1-b)+Cb; a and b per key from alpha/beta, "
                        "block weights and elemental specs. Text encoders merge at the BASE ratio.",
            inputs=[
                io.Model.Input("model_a"),
                io.Model.Input("model_b"),
                io.Model.Input("model_c", optional=True),
                io.Clip.Input("clip_a", optional=True),
                io.Clip.Input("clip_b", optional=True),
                io.Clip.Input("clip_c", optional=True),
                io.Combo.Input("mode", options=MODES, default="Weight sum"),
                io.Float.Input("alpha", default=0.5, min=-1.0, max=2.0, step=0.01,
                               tooltip="B's share (Add difference: the multiplier of B-C)"),
                io.Float.Input("beta", default=0.25, min=-1.0, max=2.0, step=0.01,
                               tooltip="C's share (Triple sum, Sum twice); unused by the other modes"),
                BlockWeightsType.Input("block_weights_alpha", optional=True),
                BlockWeightsType.Input("block_weights_beta", optional=True),
                ElementalSpecType.Input("elemental_alpha", optional=True),
                ElementalSpecType.Input("elemental_beta", optional=True),
                io.Boolean.Input("print_change", default=False,
                                 tooltip="log the change report and show it on the node"),
            ],
            outputs=[io.Model.Output(display_name="MODEL"), io.Clip.Output(display_name="CLIP"),
                     io.String.Output(display_name="report")],
        )

    @classmethod
    def execute(cls, model_a, model_b, mode, alpha, beta, print_change, model_c=None, clip_a=None,
                clip_b=None, clip_c=None, block_weights_alpha=None, block_weights_beta=None,
                elemental_alpha=None, elemental_beta=None):
        method = get_merge_method(mode)
        if method.needs_c and model_c is None:
            raise ValueError(f"mode '{mode}' needs model_c")
        models = {"model_a": model_a, "model_b": model_b}
        if method.needs_c:
            models["model_c"] = model_c
        arch = model_info.check_same_architecture(models)

        unet_shapes = model_info.unet_shapes(model_a)
        clip_shapes, clip_sources = _clip_state(method, clip_a, clip_b, clip_c)
        keys = list(unet_shapes) + list(clip_shapes)
        res_a = resolve_side(keys, arch, alpha, block_weights_alpha, elemental_alpha, "alpha")
        res_b = resolve_side(keys, arch, beta, block_weights_beta, elemental_beta, "beta") if method.uses_beta else None
        ratio_a, ratio_b = ratio_lookup(res_a, alpha), ratio_lookup(res_b, beta)

        merged = model_a.clone()
        unet_sources = {"b": model_b.get_key_patches(model_info.UNET_PREFIX)}
        if method.needs_c:
            unet_sources["c"] = model_c.get_key_patches(model_info.UNET_PREFIX)
        unet_notes = apply_merge(merged, unet_shapes, unet_sources, method, ratio_a, ratio_b)

        clip_out, clip_text = clip_a, None
        if clip_shapes:
            clip_out = clip_a.clone()
            clip_text = apply_merge(clip_out, clip_shapes, clip_sources, method, ratio_a, ratio_b).summary("text encoder")
        elif isinstance(clip_sources, str):
            clip_text = "text encoder: " + clip_sources

        recipe = {
            "version": RECIPE_VERSION, "mode": mode, "alpha": alpha,
            "beta": beta if method.uses_beta else None, "architecture": arch.name,
            "block_weights_alpha": block_weights_alpha.text if block_weights_alpha else None,
            "block_weights_beta": block_weights_beta.text if block_weights_beta and method.uses_beta else None,
            "elemental_alpha": elemental_alpha.text if elemental_alpha else None,
            "elemental_beta": elemental_beta.text if elemental_beta and method.uses_beta else None,
            "models": {k[-1].upper(): model_info.model_name(m) for k, m in models.items()},
            "text_encoder_merged": bool(clip_shapes),
        }
        for k, m in models.items():  # a merged input keeps its own recipe inside this one
            if model_info.recipe_of(m) is not None:
                recipe[f"{k}_recipe"] = model_info.recipe_of(m)
        model_info.attach_recipe(merged, recipe)

        report = build_report(recipe, arch, res_a, res_b, unet_notes, clip_text)
        if not print_change:
            return io.NodeOutput(merged, clip_out, report)
        log.info("[Elemental Merge]\n%s", report)
        return io.NodeOutput(merged, clip_out, report, ui={"text": [report]})


def build_report(recipe: dict, arch, res_a, res_b, unet_notes: MergeNotes, clip_text: str | None) -> str:
    models = ", ".join(f"{k}={v}" for k, v in recipe["models"].items())
    head = f"{recipe['mode']} ({arch.label}) alpha={recipe['alpha']}"
    if recipe["beta"] is not None:
        head += f" beta={recipe['beta']}"
    parts = [head + f": {models}", format_change_report(res_a, title="alpha")]
    if res_b is not None:
        parts.append(format_change_report(res_b, title="beta"))
    parts.append(unet_notes.summary("UNet"))
    if clip_text:
        parts.append(clip_text)
    return "\n".join(p for p in parts if p)


# ---- saving -------------------------------------------------------------------------------------------------

def unused_checkpoint_path(filename_prefix: str, output_dir: str) -> str:
    """`<prefix>_00001_.safetensors`-style name like the stock node, never one that exists."""
    folder, filename, counter, _, _ = folder_paths.get_save_image_path(filename_prefix, output_dir)
    os.makedirs(folder, exist_ok=True)
    while True:
        path = os.path.join(folder, f"{filename}_{counter:05}_.safetensors")
        if not os.path.exists(path):
            return path
        counter += 1


def checkpoint_metadata(model, prompt=None, extra_pnginfo=None) -> dict:
    """safetensors metadata: the recipe always; the prompt and workflow unless ComfyUI disables metadata."""
    metadata = {"format": "pt"}
    recipe = model_info.recipe_of(model)
    if recipe is not None:
        metadata[RECIPE_METADATA_KEY] = json.dumps(recipe, sort_keys=True)
    if model.model.model_type == comfy.model_base.ModelType.V_PREDICTION:
        metadata["modelspec.predict_key"] = "v"
    elif model.model.model_type == comfy.model_base.ModelType.EPS:
        metadata["modelspec.predict_key"] = "epsilon"
    if not args.disable_metadata:
        if prompt is not None:
            metadata["prompt"] = json.dumps(prompt)
        for k, v in (extra_pnginfo or {}).items():
            metadata[k] = json.dumps(v)
    return metadata


def save_merged(path: str, model, clip, vae, dtype: torch.dtype, metadata: dict) -> None:
    """Computes the patched weights (ComfyUI's own patch path, forced) and writes one safetensors file."""
    to_load = [model]
    clip_sd = None
    if clip is not None:
        to_load.append(clip.load_model())
        clip_sd = clip.get_sd()
    vae_sd = vae.get_sd() if vae is not None else None
    comfy.model_management.load_models_gpu(to_load, force_patch_weights=True)
    sd = model.model.state_dict_for_saving(clip_sd, vae_sd, None)
    if model.model.model_type == comfy.model_base.ModelType.V_PREDICTION:
        sd["v_pred"] = torch.tensor([])
    out = {k: (t.to(dtype) if t.is_floating_point() else t).contiguous() for k, t in sd.items()}
    comfy.utils.save_torch_file(out, path, metadata=metadata)


class SaveMergedCheckpoint(io.ComfyNode):
    """Saves MODEL (+ CLIP, VAE) as safetensors with the merge recipe in the file's metadata."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SaveMergedCheckpoint", display_name="Save Merged Checkpoint", category=CATEGORY,
            description="Saves a checkpoint with the elemental merge recipe in its metadata "
                        f"('{RECIPE_METADATA_KEY}'); never overwrites a file.",
            inputs=[io.Model.Input("model"), io.Clip.Input("clip", optional=True),
                    io.Vae.Input("vae", optional=True),
                    io.String.Input("filename_prefix", default="checkpoints/ElementalMerge"),
                    io.Combo.Input("precision", options=list(SAVE_DTYPES), default="fp16")],
            outputs=[],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, filename_prefix, precision, clip=None, vae=None):
        output_dir = folder_paths.get_output_directory()
        path = unused_checkpoint_path(filename_prefix, output_dir)
        metadata = checkpoint_metadata(model, cls.hidden.prompt, cls.hidden.extra_pnginfo)
        save_merged(path, model, clip, vae, SAVE_DTYPES[precision], metadata)
        rel = os.path.relpath(path, output_dir)
        log.info("[Elemental Merge] saved %s", path)
        return io.NodeOutput(ui={"text": [rel]})


NODES = [MergeCheckpointLoader, ElementalSpec, BlockWeights, ElementalMerge, SaveMergedCheckpoint]

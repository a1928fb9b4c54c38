"""`ElementalLoRA`: a LoRA applied block by block and element by element.

Each key's LoRA strength is ``strength_model`` (UNet) or ``strength_clip`` (text encoder) times that key's
ratio, and the ratio is resolved exactly as the merge resolves alpha, with 1 in alpha's place: the block
weights (`block_weights`, SuperMerger strings, BASE = 1 when left out; or `lbw_weights`, LoRA Block Weight
lists, see merge_core.lbw), then the elemental spec, last entry winning. Keys outside every block keep 1.
The blocks are the model's, found from ComfyUI's own key names after ComfyUI parsed the LoRA, so the LoRA's
file format does not matter.
"""
from __future__ import annotations

import logging

import folder_paths

from ..merge_core import (ARCHITECTURES, format_change_report, get_architecture,
                          parse_block_weights, parse_spec, resolve_ratios)
from ..merge_core.merge.lbw import LBW_FORMS, lbw_errors, resolve_lbw
from .engine import model_info
from .sockets.common import CATEGORY, BlockWeightsType, ElementalSpecType, TextInput, io
from .engine.lora_patches import add_scaled_patches, attach_metadata, parse_lora, read_lora
from ..merge_core.text.written import check_written_for, parse_text

log = logging.getLogger("elemental_merge")

NO_BLOCK = "(none)"


def validate_lbw(text: str) -> bool | str:
    """True when ``text`` is a valid LoRA Block Weight list for some architecture, else the closest errors."""
    if not text.strip():
        return True
    found = {name: lbw_errors(text, name) for name in LBW_FORMS}
    if any(not errs for errs in found.values()):
        return True
    name = min(found, key=lambda n: len(found[n]))
    return "\n".join([f"invalid lbw_weights: valid for no architecture; as {ARCHITECTURES[name].label}:"]
                     + [d.format() for d in found[name]])


def resolve_lora_ratios(lora_keys, model_keys, arch, block_weights: TextInput | None, lbw: str,
                        elemental: TextInput | None):
    """merge_core's Resolution for the LoRA's keys, with 1 where the merge would use alpha."""
    check_written_for("block_weights", block_weights, arch, "the model is")
    check_written_for("elemental", elemental, arch, "the model is")
    if block_weights is not None and lbw.strip():
        raise ValueError("give block_weights or lbw_weights, not both")
    spec = None
    if elemental is not None and elemental.text.strip():
        spec = parse_text("elemental", parse_spec, elemental.text, arch, keys=model_keys)
    if lbw.strip():
        return parse_text("lbw_weights", resolve_lbw, lora_keys, arch, lbw, spec)
    weights = None
    if block_weights is not None:
        weights = parse_text("block_weights", parse_block_weights, block_weights.text, arch, alpha=1.0)
    return resolve_ratios(lora_keys, arch, 1.0, block_weights=weights, spec=spec)


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def strength_table(applied: dict, blocks: dict, order: list[str]) -> list[str]:
    """One line per block: how many LoRA keys it holds and the strength(s) they got."""
    per_block: dict[str, list[float]] = {}
    for key, s in applied.items():
        per_block.setdefault(blocks.get(key, NO_BLOCK), []).append(s)
    rank = {b: i for i, b in enumerate(order)}
    lines = [f"{'block':<6} {'keys':>5}  strength"]
    for block in sorted(per_block, key=lambda b: (rank.get(b, len(rank)), b)):
        values = per_block[block]
        lo, hi = min(values), max(values)
        text = _fmt(lo) if lo == hi else f"{_fmt(lo)}..{_fmt(hi)} ({len(set(values))} values)"
        lines.append(f"{block:<6} {len(values):>5}  {text}")
    return lines


class ElementalLoRA(io.ComfyNode):
    """Applies a LoRA with a strength per block and per element."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ElementalLoRA", display_name="Elemental LoRA", category=CATEGORY,
            description="Applies a LoRA like Load LoRA, each key at strength x its ratio from block weights "
                        "(or a LoRA Block Weight list) and an elemental spec; keys outside every block at "
                        "strength x 1.",
            inputs=[
                io.Model.Input("model"),
                io.Clip.Input("clip", optional=True),
                io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras")),
                io.Float.Input("strength_model", default=1.0, min=-100.0, max=100.0, step=0.01),
                io.Float.Input("strength_clip", default=1.0, min=-100.0, max=100.0, step=0.01),
                BlockWeightsType.Input("block_weights", optional=True,
                                       tooltip="SuperMerger block weights; a BASE left out counts as 1"),
                ElementalSpecType.Input("elemental", optional=True),
                io.String.Input("lbw_weights", default="", optional=True,
                                tooltip="a LoRA Block Weight list or preset (SD1/SD2: 17 or 26 values, SDXL: "
                                        "12 or 20, Flux: 61; blocks a short list leaves out get 0), instead "
                                        "of block_weights; other models (SD3, Wan, Qwen-Image, Z-Image, ...) "
                                        "have none: use block_weights"),
            ],
            outputs=[io.Model.Output(display_name="MODEL"), io.Clip.Output(display_name="CLIP"),
                     io.String.Output(display_name="report")],
        )

    @classmethod
    def validate_inputs(cls, lbw_weights=None):
        if lbw_weights is None:  # linked: checked when the node runs
            return True
        return validate_lbw(lbw_weights)

    @classmethod
    def execute(cls, model, lora_name, strength_model, strength_clip, clip=None, block_weights=None,
                elemental=None, lbw_weights=""):
        arch = model_info.architecture_of(model)
        lora_sd, metadata = read_lora(folder_paths.get_full_path_or_raise("loras", lora_name))
        lora = parse_lora(lora_sd, model, clip)
        lora_keys = lora.model_keys()
        model_keys = list(model.model_state_dict()) + (list(clip.patcher.model_state_dict()) if clip else [])
        res = resolve_lora_ratios(lora_keys, model_keys, arch, block_weights, lbw_weights or "", elemental)
        ratio_of = lambda key: res.ratios.get(key, 1.0)  # noqa: E731 - keys outside every block: 1

        new_model = model.clone()
        applied = add_scaled_patches(new_model, lora.unet, strength_model, ratio_of)
        attach_metadata(new_model, metadata)
        new_clip = clip
        if clip is not None:
            new_clip = clip.clone()
            applied.update(add_scaled_patches(new_clip, lora.clip, strength_clip, ratio_of))
            attach_metadata(new_clip.patcher, metadata)
        entry = {"lora": lora_name, "strength_model": strength_model,
                 "strength_clip": strength_clip if clip is not None else None,
                 "block_weights": block_weights.text if block_weights is not None else None,
                 "lbw_weights": lbw_weights or None, "elemental": elemental.text if elemental else None}
        # model_info folds these entries, in order, into the model's recipe (a `lora` operation each).
        key = model_info.LORAS_KEY
        new_model.model_options[key] = list(model.model_options.get(key, [])) + [entry]
        report = build_report(entry, arch, lora, applied, res)
        return io.NodeOutput(new_model, new_clip, report, ui={"text": [report]})


def build_report(entry: dict, arch, lora, applied: dict, res) -> str:
    head = (f"Elemental LoRA {entry['lora']} ({arch.label}): strength_model={entry['strength_model']}"
            + (f" strength_clip={entry['strength_clip']}" if entry["strength_clip"] is not None else ""))
    weights = (f"lbw_weights '{entry['lbw_weights']}'" if entry["lbw_weights"] else
               f"block_weights '{entry['block_weights']}'" if entry["block_weights"] else "no block weights")
    lines = [head, f"{weights}; {'elemental spec given' if entry['elemental'] else 'no elemental spec'}",
             f"{len(lora.unet)} UNet and {len(lora.clip)} text-encoder patches; "
             f"{sum(1 for s in applied.values() if s == 0)} at strength 0 (not patched)"]
    if lora.unmatched:
        lines.append(f"{len(lora.unmatched)} LoRA keys match neither the model nor the CLIP given (not loaded)")
    lines += strength_table(applied, res.blocks, list(get_architecture(arch).blocks))
    if entry["elemental"]:
        lines += ["", format_change_report(res, title="elemental (ratios before strength)")]
    return "\n".join(lines)


NODES = [ElementalLoRA]

"""Checkpoint layout for OpenCLIP text encoders: fuse ComfyUI's split q/k/v, undo its text_projection transpose.

Why: SuperMerger's calc modes work on checkpoint tensors. SD2's OpenCLIP-H and SDXL's OpenCLIP-G store the
attention input projection fused (``attn.in_proj_weight`` = q, k, v stacked on dim 0) and ``text_projection``
as (width, embed), while ComfyUI holds q/k/v as three keys and ``text_projection.weight`` transposed. Modes
whose result depends on the layout (cosine, tensor/tensor2, smoothAdd, extract) must see the checkpoint form,
or their statistics, slices and filters differ from SuperMerger's.

A `LayoutUnit` is one checkpoint tensor and the ComfyUI keys it is made of. `to_checkpoint` builds the
checkpoint tensor from the unit's ComfyUI tensors; `from_checkpoint` splits a result back. Every other key
(UNet, CLIP-L, keys already in checkpoint form) is a "plain" unit of one key.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from ..arch.keys import canonical_key

PLAIN = "plain"
FUSED = "fused"            # q, k, v stacked on dim 0 into in_proj_weight / in_proj_bias
TRANSPOSED = "transposed"  # ComfyUI's text_projection.weight is the checkpoint's text_projection, transposed

_QKV_ORDER = ("q_proj", "k_proj", "v_proj")


@dataclass(frozen=True)
class LayoutUnit:
    """One checkpoint tensor: its canonical name, the ComfyUI keys it is made of (q, k, v order), the kind."""
    name: str
    keys: tuple[str, ...]
    kind: str


def _qkv_rank(key: str) -> int:
    for i, part in enumerate(_QKV_ORDER):
        if f".{part}." in key:
            return i
    raise ValueError(f"{key!r} maps to a fused in_proj tensor but names none of {', '.join(_QKV_ORDER)}")


def _is_transposed(key: str, canon: str) -> bool:
    """ComfyUI's OpenCLIP text_projection: stored as ``.weight`` (transposed), canonical name without it."""
    return key.endswith("transformer.text_projection.weight") and canon.endswith("model.text_projection")


def layout_units(keys: Iterable[str], arch) -> list[LayoutUnit]:
    """Groups ``keys`` (any accepted form) into checkpoint tensors, in the order their first key appears."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(canonical_key(key, arch), []).append(key)
    units = []
    for canon, members in groups.items():
        if canon.endswith(("attn.in_proj_weight", "attn.in_proj_bias")) and len(members) > 1:
            ordered = tuple(sorted(members, key=_qkv_rank))
            if [_qkv_rank(k) for k in ordered] != [0, 1, 2]:
                raise ValueError(f"{canon}: expected q, k and v projections, got {', '.join(ordered)}")
            units.append(LayoutUnit(canon, ordered, FUSED))
        elif len(members) > 1:
            raise ValueError(f"keys {', '.join(members)} all map to {canon!r}; only q/k/v may be fused")
        elif _is_transposed(members[0], canon):
            units.append(LayoutUnit(canon, tuple(members), TRANSPOSED))
        else:
            units.append(LayoutUnit(canon, tuple(members), PLAIN))
    return units


def to_checkpoint(unit: LayoutUnit, tensors) -> torch.Tensor:
    """The checkpoint tensor of ``unit`` from its ComfyUI tensors (same order as ``unit.keys``)."""
    tensors = list(tensors)
    if unit.kind == FUSED:
        return torch.cat(tensors, dim=0)
    if unit.kind == TRANSPOSED:
        return tensors[0].transpose(0, 1)
    return tensors[0]


def from_checkpoint(unit: LayoutUnit, tensor: torch.Tensor, shapes=None) -> list[torch.Tensor]:
    """Splits a checkpoint-layout result back into the unit's ComfyUI tensors (``shapes``: their shapes, for
    a fused unit; equal thirds of dim 0 when omitted)."""
    if unit.kind == FUSED:
        sizes = [s[0] for s in shapes] if shapes is not None else [tensor.shape[0] // 3] * 3
        return list(torch.split(tensor, sizes, dim=0))
    if unit.kind == TRANSPOSED:
        return [tensor.transpose(0, 1)]
    return [tensor]


def part_of(unit: LayoutUnit, key: str, tensor: torch.Tensor, shapes=None) -> torch.Tensor:
    """The slice of a checkpoint-layout result that belongs to ComfyUI key ``key`` of ``unit``."""
    return from_checkpoint(unit, tensor, shapes)[unit.keys.index(key)]

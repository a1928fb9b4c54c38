"""Quantized weights (ComfyUI 0.33's `comfy.quant_ops.QuantizedTensor`) as the plain tensors a save writes.

A model loaded from an fp8-scaled or mixed-precision (`comfy_quant`) file holds each quantized layer's weight
as a QuantizedTensor (comfy_kitchen): the stored values plus a layout (`TensorCoreFP8E4M3Layout`, ...) and
its parameters (the per-tensor scale). Its state dict spreads one layer over several keys: ``L.weight`` (the
stored values), ``L.weight_scale`` and ``L.comfy_quant`` (the layer's format as JSON bytes), sometimes
``L.input_scale``. What ComfyUI computes with is the dequantized weight; a merged quantized layer is
requantized by the layer's own `set_weight` (`MixedPrecisionOps.Linear`: a fresh per-tensor scale,
``scale="recalculate"``, stochastic rounding seeded by the key), which `requantized_like` repeats.

The save writes every weight plain (docs/saving.md): the dequantized live weight at the chosen precision, and
none of a quantized layer's extra keys (`companion_keys`), so the file loads as an ordinary model.
"""
from __future__ import annotations

import torch

try:
    from comfy.quant_ops import QuantizedTensor
except ImportError:  # a ComfyUI without quant_ops: nothing is quantized
    class QuantizedTensor:  # type: ignore[no-redef]
        pass

# State-dict names a quantized layer may hold besides its weight's own (QuantizedTensor.state_dict) keys:
# the per-layer config and the activation parameters of comfy.quant_ops.QUANT_ALGOS.
LAYER_EXTRAS = ("comfy_quant", "input_scale", "pre_quant_scale", "weight_scale", "weight_scale_2")


class QuantizedWeightError(ValueError):
    """A quantized weight this ComfyUI cannot turn into plain values (or back)."""


def is_quantized(t) -> bool:
    return isinstance(t, QuantizedTensor)


def layout_name(t) -> str:
    """The layout of a quantized weight, as ComfyUI names it (e.g. TensorCoreFP8E4M3Layout)."""
    return str(getattr(t, "_layout_cls", type(t).__name__))


def dequantized(t: torch.Tensor, key: str) -> torch.Tensor:
    """The plain values of `t` (itself when it is not quantized), in the dtype the model computes with."""
    if not is_quantized(t):
        return t
    try:
        return t.dequantize()
    except Exception as e:  # noqa: BLE001 - the layout's own error, re-raised with the key and the format
        raise QuantizedWeightError(f"'{key}': cannot dequantize its {layout_name(t)} weight on this machine "
                                   f"({type(e).__name__}: {e})") from e


def requantized_like(weight: torch.Tensor, value: torch.Tensor, key: str, seed: int) -> torch.Tensor:
    """`value` (float) quantized as the layer holding `weight` stores a patched weight (its `set_weight`)."""
    try:
        return weight.requantize_from_float(value, scale="recalculate", stochastic_rounding=seed,
                                            inplace_ops=True).to(weight.dtype)
    except Exception as e:  # noqa: BLE001
        raise QuantizedWeightError(f"'{key}': cannot requantize the merged weight as {layout_name(weight)} "
                                   f"({type(e).__name__}: {e})") from e


def companion_keys(weights: dict) -> set:
    """The keys of `weights` (state-dict key -> tensor) that belong to a quantized weight's layer and are not
    that weight: its scales and config, dropped when the weight is written plain."""
    out = set()
    for key, t in weights.items():
        if not (is_quantized(t) and key.endswith(".weight")):
            continue
        layer = key[:-len("weight")]
        names = {k for k in t.state_dict(key) if k != key}
        names |= {layer + extra for extra in LAYER_EXTRAS}
        out |= {k for k in names if k in weights}
    return out

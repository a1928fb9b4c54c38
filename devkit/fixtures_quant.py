"""Seeded quantized diffusion models in ComfyUI's own formats, for the quantized-merge tests.

The model is the reduced SD3 of devkit.fixtures_arch (hidden 128, 2 joint blocks, 13 MiB in fp16), as a
diffusion-model-only file (no prefix) that `comfy.sd.load_diffusion_model` detects as SD3. Its seeded
fp16 values are those of `fixtures_arch.fixture_value`, so a plain file and a quantized file of the same
seed differ only by the quantization. Only the weights of `Linear` modules are quantized (the layers
ComfyUI's `mixed_precision_ops` can hold quantized); conv weights, biases, norms and `pos_embed` stay fp16.

Formats (ComfyUI 0.33, comfy/ops.py `_load_quantized_module`, comfy/utils.py `convert_old_quants`):

==============  ==========================================================================================
format          what a quantized layer ``L`` holds
==============  ==========================================================================================
``plain``       ``L.weight`` fp16 (no quantization: the reference)
``comfy_quant`` ``L.weight`` float8_e4m3fn, ``L.weight_scale`` float32 scalar, ``L.comfy_quant`` the uint8
                JSON ``{"format": "float8_e4m3fn"}``: the keys ComfyUI's own quantized state dict writes
                (`QuantizedTensor.state_dict` plus the per-layer config)
``scaled_fp8``  the older scaled-fp8 layout: a top-level ``scaled_fp8`` marker (empty float8_e4m3fn),
                ``L.weight`` float8_e4m3fn and ``L.scale_weight`` float32 scalar; ComfyUI converts it to the
                ``comfy_quant`` form when it loads the file
==============  ==========================================================================================

Quantizing is ComfyUI's: `comfy.quant_ops.TensorCoreFP8E4M3Layout.quantize(w, scale="recalculate")`
(per-tensor absmax scale, amax / 448) and `QuantizedTensor.state_dict` for the stored tensors.

Run as a script:  python -m devkit.fixtures_quant OUT_DIR comfy_quant:A plain:B scaled_fp8:A ...
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import sys

import torch

from merge_core.files.safetensors_stream import write_streaming
from devkit.checkpoints import SEEDS
from devkit.fixtures_arch import VALUES_VERSION, fixture_value, sd3_config

FORMATS = ("plain", "comfy_quant", "scaled_fp8")
FP8_FORMAT = "float8_e4m3fn"
FP8_LAYOUT = "TensorCoreFP8E4M3Layout"
SD3_DEPTH = 2
# Bump when the quantized layout written here changes: every cached quantized fixture is rebuilt.
QUANT_VERSION = "1"


def _mmdit():
    from devkit.comfy_env import import_comfy
    import_comfy()
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT
    return MMDiT(**sd3_config(SD3_DEPTH), device="meta", operations=comfy.ops.disable_weight_init)


def plain_layout() -> tuple[dict, list]:
    """(key -> shape of the fp16 model, the layer names whose weight is quantized: every Linear)."""
    model = _mmdit()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    linears = sorted(name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                     and f"{name}.weight" in shapes)
    return shapes, linears


def plain_value(key: str, shape, seed: int) -> torch.Tensor:
    """The fp16 value of `key` in every format's source (the `plain` file holds exactly this)."""
    return fixture_value("model.diffusion_model." + key, shape, seed, torch.float16)


def quantize(weight: torch.Tensor):
    """ComfyUI's per-tensor fp8 quantization of `weight`: a QuantizedTensor (layout TensorCoreFP8E4M3Layout)."""
    from comfy.quant_ops import QuantizedTensor
    return QuantizedTensor.from_float(weight, FP8_LAYOUT, scale="recalculate")


def quant_config_tensor(conf: dict) -> torch.Tensor:
    """A `.comfy_quant` entry: the layer's JSON config as uint8 bytes, as ComfyUI stores it."""
    return torch.tensor(list(json.dumps(conf).encode("utf-8")), dtype=torch.uint8)


def layer_tensors(fmt: str, layer: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """The stored tensors of one quantized layer's weight in format `fmt`."""
    if fmt == "plain":
        return {f"{layer}.weight": weight}
    qt = quantize(weight)
    stored = qt.state_dict(f"{layer}.weight")   # {"L.weight": fp8, "L.weight_scale": float32 scalar}
    if fmt == "comfy_quant":
        return {**stored, f"{layer}.comfy_quant": quant_config_tensor({"format": FP8_FORMAT})}
    return {f"{layer}.weight": stored[f"{layer}.weight"], f"{layer}.scale_weight": stored[f"{layer}.weight_scale"]}


def state_dict(fmt: str, seed: int) -> dict[str, torch.Tensor]:
    """The whole file of format `fmt` (13 MiB in fp16: built in memory)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown quantized fixture format '{fmt}' (valid: {', '.join(FORMATS)})")
    shapes, linears = plain_layout()
    quantized = {f"{name}.weight": name for name in linears}
    out = {}
    for key, shape in shapes.items():
        value = plain_value(key, shape, seed)
        if key in quantized:
            out.update(layer_tensors(fmt, quantized[key], value))
        else:
            out[key] = value
    if fmt == "scaled_fp8":
        out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return out


def dequantized(fmt: str, seed: int) -> dict[str, torch.Tensor]:
    """Key -> float32 weight as the stock loader's model computes with it (weight * scale for quantized ones)."""
    sd = state_dict(fmt, seed)
    out = {}
    for key, value in sd.items():
        if key == "scaled_fp8" or key.endswith((".comfy_quant", ".weight_scale", ".scale_weight")):
            continue
        scale = sd.get(key + "_scale", sd.get(key[:-len("weight")] + "scale_weight"))
        out[key] = value.float() * scale if scale is not None else value.float()
    return out


def ensure_quant_fixture(out_dir: str, fmt: str, name: str = "A") -> str:
    """Path of the `fmt` fixture with seed `name` in out_dir, written if no file of this content exists."""
    seed = SEEDS[name]
    os.makedirs(out_dir, exist_ok=True)
    sd = state_dict(fmt, seed)
    h = hashlib.sha256(f"sd3q:{fmt}:{seed}:{VALUES_VERSION}:{QUANT_VERSION}".encode())
    for key in sorted(sd):
        h.update(f"{key}:{tuple(sd[key].shape)}:{sd[key].dtype}\n".encode())
    path = os.path.join(out_dir, f"sd3q_{fmt}_{name}_{h.hexdigest()[:10]}.safetensors")
    if os.path.exists(path):
        return path
    for old in glob.glob(os.path.join(out_dir, f"sd3q_{fmt}_{name}_*.safetensors")):
        os.remove(old)
    write_streaming(path, {k: (v.dtype, tuple(v.shape)) for k, v in sd.items()}, sd.__getitem__,
                    {"format": "pt", "elemental_test_seed": str(seed), "elemental_fixture": f"sd3q_{fmt}"})
    print(f"[fixtures] wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB)", file=sys.stderr)
    return path


def main() -> None:
    from devkit.fixtures_arch import fixture_cli

    fixture_cli(__doc__.splitlines()[0], ensure_quant_fixture, "format", "comfy_quant:A plain:B", FORMATS)


if __name__ == "__main__":
    main()

"""Which dtype each tensor of a saved checkpoint gets, per `precision` choice (fp8 keeps some keys wider).

fp16 / bf16 / fp32: every floating-point tensor is cast to that dtype (integer tensors and ComfyUI's empty
marker tensors such as `v_pred` are written as they are, as ComfyUI's own save does).

fp8 (`fp8_e4m3fn`, `fp8_e5m2`): ComfyUI 0.3.75 loads plain fp8 tensors with no extra metadata. Its loader
takes the UNet's dominant dtype (by element count) as the file's weight dtype and either keeps fp8 storage
with on-the-fly casts (GPUs with fp8 compute, or too little memory) or casts every tensor to the compute dtype
while copying it into the model (`load_state_dict` converts dtypes). A `scaled_fp8` marker key or
`_quantization_metadata` would instead announce per-tensor scales, which plain casting does not produce, so
neither is written.

What stays wider: ComfyUI's own choices differ by path. `--fp8_e4m3fn-unet` builds every UNet layer in fp8,
norms and biases included; its mixed-precision checkpoint format (QUANTIZATION.md, `MixedPrecisionOps`)
quantizes only linear-layer weights and keeps everything else in the compute dtype. We follow the second
where it matters for quality and costs little in size: 1-D tensors (biases, norm weights), embedding tables
(token and position embeddings) and the VAE (never merged; its decoder loses visible quality in fp8) are
stored in fp16. Every other tensor with two or more dimensions (linear and convolution weights of the UNet
and text encoders) is stored in fp8: on SD1.5 that is 96 % of the UNet and text-encoder parameters (the
token embedding is most of the rest). fp16 rather than bf16 for the wide part: those values are small (norm
weights near 1, biases), where fp16's 10-bit mantissa is 8 times finer than bf16's.
"""
from __future__ import annotations

import torch

PRECISIONS: dict[str, torch.dtype] = {
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp32": torch.float32,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
FP8_WIDE_DTYPE = torch.float16
VAE_PREFIXES = ("first_stage_model.", "vae.")
# Name parts of embedding tables in ComfyUI's checkpoint key forms (CLIP, OpenCLIP, T5, SD3's pos_embed).
EMBEDDING_PARTS = ("token_embedding.", "position_embedding.", "positional_embedding", "embed_tokens.",
                   ".shared.weight", "pos_embed")


def is_fp8(precision: str) -> bool:
    return PRECISIONS[precision] in (torch.float8_e4m3fn, torch.float8_e5m2)


def keeps_wide(key: str, shape: tuple[int, ...]) -> bool:
    """True for the tensors an fp8 save stores in FP8_WIDE_DTYPE instead (see the module docstring)."""
    return (len(shape) < 2 or key.startswith(VAE_PREFIXES)
            or any(part in key for part in EMBEDDING_PARTS))


def stored_dtype(key: str, dtype: torch.dtype, shape: tuple[int, ...], precision: str) -> torch.dtype:
    """The dtype `key` (currently `dtype`, `shape`) is written in for `precision`."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}' (valid: {', '.join(PRECISIONS)})")
    if not dtype.is_floating_point or (len(shape) > 0 and 0 in shape):
        return dtype  # integer buffers and empty marker tensors (v_pred, ztsnr) stay as they are
    if is_fp8(precision) and keeps_wide(key, shape):
        return FP8_WIDE_DTYPE
    return PRECISIONS[precision]


def cast_for_save(t: torch.Tensor, target: torch.dtype) -> torch.Tensor:
    """Round-to-nearest cast (torch's `.to`), the same as casting the live weights; contiguous for writing."""
    return t.to(target).contiguous() if t.dtype != target else t.contiguous()

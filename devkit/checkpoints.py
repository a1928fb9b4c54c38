"""Seeded random-weight checkpoints with the exact SD1.5 key layout.

No real SD model can be fetched on CI, so the tests make their own. The modules are built from ComfyUI's own
classes on the meta device, so every key name and shape is the real one; the values come from a generator
seeded per key, so a file is the same whatever order it is written in and whichever machine writes it.
Values are scaled like a fan-in initialisation (norms at 1, biases small) so that sampling and decoding stay
finite.

Run as a script:  python -m devkit.checkpoints OUT_DIR [--names A B C]
(with ComfyUI's folder importable: COMFYUI_DIR on sys.path).
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time

import torch

# SD1.5 UNet as ComfyUI's own model detection describes it (comfy/model_detection.py, SD15).
SD15_UNET_CONFIG = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4],
    "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "use_temporal_attention": False,
    "use_temporal_resblock": False,
}
SD15_VAE_DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
                     "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [],
                     "dropout": 0.0}

# The seeds of the standard test models: A, B and C differ only here.
SEEDS = {"A": 1, "B": 2, "C": 3}


def sd15_meta_state_dict() -> dict[str, torch.Tensor]:
    """Checkpoint-form keys -> meta tensors of the real shapes (UNet, CLIP-L, VAE)."""
    from devkit.comfy_env import import_comfy

    import_comfy()
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from comfy.ldm.models.autoencoder import AutoencoderKL
    import comfy.sd1_clip

    ops = comfy.ops.disable_weight_init
    out: dict[str, torch.Tensor] = {}
    unet = UNetModel(**SD15_UNET_CONFIG, device="meta", operations=ops)
    for k, v in unet.state_dict().items():
        out["model.diffusion_model." + k] = v
    clip = comfy.sd1_clip.SDClipModel(device="meta")
    for k, v in clip.transformer.state_dict().items():
        if k.startswith("text_model."):
            out["cond_stage_model.transformer." + k] = v
    with torch.device("meta"):
        vae = AutoencoderKL(ddconfig=SD15_VAE_DDCONFIG, embed_dim=4)
    for k, v in vae.state_dict().items():
        out["first_stage_model." + k] = v
    return out


def _key_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


def random_value(key: str, shape: torch.Size, seed: int, dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(_key_seed(seed, key))
    name = key.rsplit(".", 1)[-1]
    if key.endswith("position_ids"):
        return torch.arange(shape[-1], dtype=torch.int64).reshape(shape)
    is_norm = any(s in key for s in ("norm", "ln_", "layer_norm")) and len(shape) == 1
    if is_norm and name == "weight":
        return (1.0 + 0.05 * torch.randn(shape, generator=gen)).to(dtype)
    if len(shape) == 1:
        return (0.02 * torch.randn(shape, generator=gen)).to(dtype)
    fan_in = math.prod(shape[1:]) if "embedding" not in key else 1
    std = 1.0 / math.sqrt(max(fan_in, 1)) if fan_in > 1 else 0.02
    return (std * torch.randn(shape, generator=gen)).to(dtype)


def write_checkpoint(path: str, seed: int, dtype: torch.dtype = torch.float16) -> None:
    from safetensors.torch import save_file

    meta = sd15_meta_state_dict()
    sd = {k: random_value(k, v.shape, seed, dtype).contiguous() for k, v in meta.items()}
    tmp = path + ".partial"
    save_file(sd, tmp, metadata={"elemental_test_seed": str(seed), "format": "pt"})
    os.replace(tmp, path)


def ensure_checkpoints(out_dir: str, names=("A", "B", "C")) -> dict[str, str]:
    """Writes the missing test checkpoints (test_A.safetensors ...) into out_dir; returns name -> path."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for name in names:
        path = os.path.join(out_dir, f"test_{name}.safetensors")
        if not os.path.exists(path):
            t = time.time()
            write_checkpoint(path, SEEDS[name])
            print(f"[checkpoints] wrote {path} in {time.time() - t:.1f} s", file=sys.stderr)
        paths[name] = path
    return paths


def sha256_hex(path: str) -> str:
    """The file's SHA-256 by hashlib, independent of the pack's cached hashing (what a recipe must record)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out_dir")
    ap.add_argument("--names", nargs="+", default=["A", "B", "C"])
    args = ap.parse_args()
    for name, path in ensure_checkpoints(args.out_dir, args.names).items():
        print(path)


if __name__ == "__main__":
    main()

"""Small LTXV model files (a family with no record: its blocks are derived from its keys) for the editor's
route and browser tests: ComfyUI's own LTXVModel built on the meta device (ComfyUI's detection reads depth and
width from the keys), 128 wide, filled from a seeded generator and written as safetensors (~13 MiB in float16
at 28 layers). `checkpoint=True` writes the checkpoint form (``model.diffusion_model.…``) that Load
Checkpoint's folder holds; otherwise the bare keys of a Load Diffusion Model file."""
from __future__ import annotations

import torch
from safetensors.torch import save_file

from devkit.comfy_env import import_comfy

LAYERS = 28
BLOCKS = ["IN", *(f"T{i:02d}" for i in range(LAYERS)), "OUT"]


def write_ltxv(path: str, seed: int = 1, layers: int = LAYERS, checkpoint: bool = False) -> None:
    import_comfy()
    import comfy.ops
    from comfy.ldm.lightricks.model import LTXVModel

    meta = LTXVModel(attention_head_dim=4, cross_attention_dim=128, num_layers=layers, device="meta",
                     operations=comfy.ops.disable_weight_init).state_dict()
    g = torch.Generator().manual_seed(seed)
    prefix = "model.diffusion_model." if checkpoint else ""
    save_file({prefix + k: (torch.randn(v.shape, generator=g) * 0.05).half() for k, v in meta.items()}, path)

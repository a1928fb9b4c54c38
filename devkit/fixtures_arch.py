"""Seeded random-weight models of SD2.x-v, SDXL, SD3 and Flux that ComfyUI's stock loaders detect as such.

Like the SD1.5 writer (devkit.checkpoints), every model is built from ComfyUI's own classes on the meta device,
so names and shapes are the real ones, and converted to checkpoint form by ComfyUI's own
`process_*_state_dict_for_saving`; values come from `devkit.checkpoints.random_value`, seeded per key.

What each fixture is, and why (ComfyUI 0.3.75 detection, comfy/model_detection.py and supported_models.py):

=============  ==========================================================================================
fixture        layout
=============  ==========================================================================================
``sd2v``       full-size SD2.x 768-v: UNet (context 1024, linear transformers), OpenCLIP-H in OpenCLIP
               names, VAE. ComfyUI reads no v-prediction key for SD2: it calls the model v-prediction when
               std(output_blocks.11.1.transformer_blocks.0.norm1.bias) > 0.09, so that tensor gets std 0.3
               (a 50/50 merge of two such tensors still has std ~0.21).
``sdxl``       full-size SDXL base: UNet, CLIP-L, OpenCLIP-G, VAE (6.9 GB in fp16; the heavy one).
``sd3``        SD3 with hidden 128 (ComfyUI derives depth = hidden / 64 = 2 joint blocks), CLIP-L and
               CLIP-G (full size: ComfyUI builds them from a fixed config), no T5, 16-channel VAE.
``flux_dev``   Flux with 1 double and 1 single block, hidden 3072 (fixed by detection's 24 heads x 128 rope
``flux_schnell`` dims), context_in_dim and vec_in_dim 768 so that a CLIP-L's conditioning drives it; dev has
               ``guidance_in``, schnell has not. Diffusion-model-only files (no prefix) for UNETLoader.
``flux_ae``    the 16-channel Flux/SD3 VAE alone (``encoder.``/``decoder.``), for VAELoader.
=============  ==========================================================================================

Files are written one tensor at a time (merge_core.files.safetensors_stream), so even SDXL is built in well under 1 GB, and are
cached by content: the file name carries a hash of the fixture's key layout, seed and value rules, so a changed
writer or ComfyUI gives a new file and an unchanged one is never rebuilt.

Run as a script:  python -m devkit.fixtures_arch OUT_DIR sd2v:A sd3:B flux_dev:A ...
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

from merge_core.arch.flux_names import file_name as flux_file_name
from merge_core.files.safetensors_stream import write_streaming
from devkit.checkpoints import SD15_UNET_CONFIG, SD15_VAE_DDCONFIG, SEEDS, _key_seed, random_value

# Bump when the value rules change (random_value, OVERRIDES): every cached fixture is rebuilt.
VALUES_VERSION = "1"

SD21_UNET = {**SD15_UNET_CONFIG, "use_linear_in_transformer": True, "context_dim": 1024, "num_heads": -1,
             "num_head_channels": 64}
SDXL_UNET = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
             "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4,
             "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
             "channel_mult": [1, 2, 4], "transformer_depth_middle": 10, "use_linear_in_transformer": True,
             "context_dim": 2048, "num_head_channels": 64,
             "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
             "use_temporal_attention": False, "use_temporal_resblock": False}


def sd3_config(depth: int, **extra) -> dict:
    """MMDiT arguments of an SD3 with `depth` joint blocks (hidden 64 * depth), as detection reads them."""
    return {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": depth, "input_size": None,
            "adm_in_channels": 2048, "num_patches": 36864, "pos_embed_max_size": 192,
            "pos_embed_scaling_factor": None, "x_block_self_attn_layers": [],
            "context_embedder_config": {"target": "torch.nn.Linear",
                                        "params": {"in_features": 4096, "out_features": 64 * depth}}, **extra}


SD3_MEDIUM = sd3_config(24)
SD35_LARGE = sd3_config(38, qk_norm="rms")


def flux_config(double: int, single: int, guidance: bool, text_dim: int = 4096, vec_dim: int = 768) -> dict:
    """Flux arguments (comfy.ldm.flux.model.Flux) as detection builds them for a 'flux' image model."""
    return {"in_channels": 16, "out_channels": 16, "vec_in_dim": vec_dim, "context_in_dim": text_dim,
            "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": double,
            "depth_single_blocks": single, "axes_dim": [16, 56, 56], "theta": 10000, "patch_size": 2,
            "qkv_bias": True, "guidance_embed": guidance}


FLUX_DEV = flux_config(19, 38, True)
FLUX_SCHNELL = flux_config(19, 38, False)
VAE16_DDCONFIG = {**SD15_VAE_DDCONFIG, "z_channels": 16}

SD2_VPRED_KEY = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"
# key -> std of a normal fill, replacing random_value's rule for that key.
OVERRIDES = {SD2_VPRED_KEY: 0.3}


# ---- meta state dicts, checkpoint form ------------------------------------------------------------------

def _comfy():
    from devkit.comfy_env import import_comfy
    import_comfy()
    import comfy.ops
    return comfy.ops.disable_weight_init


def _prefixed(prefix: str, module) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in module.state_dict().items()}


def meta_unet(config: dict, prefix: str = "model.diffusion_model.") -> dict[str, torch.Tensor]:
    ops = _comfy()
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    return _prefixed(prefix, UNetModel(**config, device="meta", operations=ops))


def meta_mmdit(config: dict, prefix: str = "model.diffusion_model.") -> dict[str, torch.Tensor]:
    ops = _comfy()
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT
    return _prefixed(prefix, MMDiT(**config, device="meta", operations=ops))


def flux_runtime_config(config: dict) -> dict:
    """`config` with what this ComfyUI's Flux also requires: 0.33 added txt_ids_dims, which detection sets to []
    for Flux dev/schnell."""
    _comfy()
    from comfy.ldm.flux.model import FluxParams
    if "txt_ids_dims" in FluxParams.__dataclass_fields__:
        return {"txt_ids_dims": [], **config}
    return dict(config)


def meta_flux(config: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flux's keys as Flux files name them: the q/k norms ``.scale`` whatever this ComfyUI calls them."""
    ops = _comfy()
    from comfy.ldm.flux.model import Flux
    module = Flux(**flux_runtime_config(config), device="meta", operations=ops)
    return {flux_file_name(k): v for k, v in _prefixed(prefix, module).items()}


def meta_vae(ddconfig: dict, prefix: str) -> dict[str, torch.Tensor]:
    _comfy()
    from comfy.ldm.models.autoencoder import AutoencoderKL
    with torch.device("meta"):
        vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=ddconfig["z_channels"])
    return _prefixed(prefix, vae)


def _clip_for_saving(model_config, clip_module) -> dict[str, torch.Tensor]:
    """A text encoder's keys in checkpoint form, converted by the model config ComfyUI saves with."""
    sd = dict(clip_module.state_dict())
    return dict(model_config.process_clip_state_dict_for_saving(sd))


def sd2v_meta() -> dict[str, torch.Tensor]:
    _comfy()
    import comfy.supported_models as sm
    import comfy.text_encoders.sd2_clip as sd2c
    out = meta_unet(SD21_UNET)
    out.update(_clip_for_saving(sm.SD20({}), sd2c.SD2ClipModel(device="meta")))
    out.update(meta_vae(SD15_VAE_DDCONFIG, "first_stage_model."))
    return out


def sdxl_meta() -> dict[str, torch.Tensor]:
    _comfy()
    import comfy.sdxl_clip
    import comfy.supported_models as sm
    out = meta_unet(SDXL_UNET)
    out.update(_clip_for_saving(sm.SDXL({}), comfy.sdxl_clip.SDXLClipModel(device="meta")))
    out.update(meta_vae(SD15_VAE_DDCONFIG, "first_stage_model."))
    return out


def sd3_meta(depth: int = 2) -> dict[str, torch.Tensor]:
    _comfy()
    import comfy.text_encoders.sd3_clip as t3
    out = meta_mmdit(sd3_config(depth))
    te = t3.sd3_clip(clip_l=True, clip_g=True, t5=False)(device="meta")
    out.update({"text_encoders." + k: v for k, v in te.state_dict().items() if not k.endswith("logit_scale")})
    out.update(meta_vae(VAE16_DDCONFIG, "first_stage_model."))
    return out


def flux_meta(guidance: bool) -> dict[str, torch.Tensor]:
    return meta_flux(flux_config(1, 1, guidance, text_dim=768, vec_dim=768))


def flux_ae_meta() -> dict[str, torch.Tensor]:
    return meta_vae(VAE16_DDCONFIG, "")


@dataclass(frozen=True)
class Fixture:
    kind: str
    build: Callable[[], dict]
    folder: str          # ComfyUI model folder the file belongs in
    detected_as: str     # ComfyUI supported_models class name the stock loader picks


FIXTURES = {f.kind: f for f in (
    Fixture("sd2v", sd2v_meta, "checkpoints", "SD20"),
    Fixture("sdxl", sdxl_meta, "checkpoints", "SDXL"),
    Fixture("sd3", sd3_meta, "checkpoints", "SD3"),
    Fixture("flux_dev", lambda: flux_meta(True), "diffusion_models", "Flux"),
    Fixture("flux_schnell", lambda: flux_meta(False), "diffusion_models", "FluxSchnell"),
    Fixture("flux_ae", flux_ae_meta, "vae", ""),
)}


# ---- values and writing ---------------------------------------------------------------------------------

def fixture_value(key: str, shape, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """random_value, except for the keys in OVERRIDES (a normal fill of the given std)."""
    if key in OVERRIDES:
        gen = torch.Generator().manual_seed(_key_seed(seed, key))
        return (OVERRIDES[key] * torch.randn(tuple(shape), generator=gen)).to(dtype)
    return random_value(key, torch.Size(shape), seed, dtype)


def layout(kind: str, dtype: torch.dtype = torch.float16) -> dict:
    """key -> (shape, dtype) of a fixture: integer buffers (position_ids) stay int64, the rest `dtype`."""
    meta = FIXTURES[kind].build()
    return {k: (tuple(v.shape), v.dtype if not v.is_floating_point() else dtype) for k, v in meta.items()}


def content_hash(kind: str, seed: int, shapes: dict) -> str:
    """What the file's bytes depend on: layout, seed and the value rules."""
    h = hashlib.sha256(f"{kind}:{seed}:{VALUES_VERSION}:{sorted(OVERRIDES.items())}".encode())
    for key in sorted(shapes):
        h.update(f"{key}:{shapes[key][0]}:{shapes[key][1]}\n".encode())
    return h.hexdigest()[:10]


def file_name(kind: str, name: str, digest: str) -> str:
    return f"{kind}_{name}_{digest}.safetensors"


def ensure_fixture(out_dir: str, kind: str, name: str = "A", seed: int | None = None) -> str:
    """Path of fixture `kind` with seed `name` (A/B/C) in out_dir, written if no file of this content exists.

    Older files of the same kind and name (another hash) are removed: they can never be used again."""
    seed = SEEDS[name] if seed is None else seed
    os.makedirs(out_dir, exist_ok=True)
    shapes = layout(kind)
    digest = content_hash(kind, seed, shapes)
    path = os.path.join(out_dir, file_name(kind, name, digest))
    if os.path.exists(path):
        return path
    for old in glob.glob(os.path.join(out_dir, f"{kind}_{name}_*.safetensors")):
        os.remove(old)
    t = time.time()
    write_streaming(path, {k: (dt, shape) for k, (shape, dt) in shapes.items()},
                    lambda k: fixture_value(k, shapes[k][0], seed, shapes[k][1]),
                    {"format": "pt", "elemental_test_seed": str(seed), "elemental_fixture": kind})
    print(f"[fixtures] wrote {path} ({os.path.getsize(path) / 2**30:.2f} GiB) in {time.time() - t:.1f} s",
          file=sys.stderr)
    return path


def checkpoints_dir() -> str:
    """Where fixtures are cached: $ELEMENTAL_CHECKPOINTS, as for the SD1.5 test checkpoints."""
    cache = os.environ.get("ELEMENTAL_CACHE", os.path.expanduser("~/.cache/comfyui-elemental-merge"))
    return os.environ.get("ELEMENTAL_CHECKPOINTS", os.path.join(cache, "checkpoints"))


def fixture_cli(description: str, ensure, label: str, example: str, choices) -> None:
    """The command line of a fixture module: OUT_DIR and items ``<label>:<name>``; prints each file's path."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("out_dir")
    ap.add_argument("items", nargs="+", help=f"{label}:name, e.g. {example} ({label}s: {', '.join(choices)})")
    args = ap.parse_args()
    for item in args.items:
        kind, _, name = item.partition(":")
        print(ensure(args.out_dir, kind, name or "A"))


def main() -> None:
    fixture_cli(__doc__.splitlines()[0], ensure_fixture, "kind", "sd3:A flux_dev:B", FIXTURES)


if __name__ == "__main__":
    main()

"""Seeded diffusion models of Wan 2.1/2.2, Qwen-Image, Krea 2, AuraFlow, Cosmos Predict2, Anima, Flux.2, Chroma and Z-Image, built from ComfyUI's
own classes, in memory (no files), for the in-process family tests.

Each family has two configurations, both handed to ComfyUI's own model-config class
(`comfy.supported_models.<config_class>(unet_config).get_model`), so names and shapes are ComfyUI's:

* ``full``: the published layout (all blocks, real widths), built on the meta device only (no memory). It
  gives the key list (merge_core/arch/keylists/<family>.txt.gz) and is what ComfyUI's detection is asked about.
* ``tiny``: a few blocks at small widths, filled with seeded fp16 values (devkit.checkpoints.random_value),
  for merges. Where ComfyUI's detection reads every size it needs from the keys (Wan, Krea 2, Flux.2), the tiny
  state dict is loaded by ComfyUI's own `comfy.sd.load_diffusion_model_state_dict`, so detection decides what it
  is. Where detection fixes a width (Qwen-Image 3072 / text 3584, AuraFlow 3072, Chroma's 5120-wide guidance
  approximator, Z-Image 3840: 0.5-1.7 GiB at the smallest, RUNTIME.md), the tiny model is built by the same model-config class
  directly and wrapped in ComfyUI's ModelPatcher: the layout is the family's, only the widths are smaller.

Run as a script to rewrite the key lists:  python -m devkit.fixtures_families --keylists merge_core/arch/keylists
"""
from __future__ import annotations

import argparse
import gzip
import os
from dataclasses import dataclass, field

import torch

from devkit.checkpoints import SEEDS, random_value

_WAN = dict(image_model="wan2.1", patch_size=(1, 2, 2), freq_dim=256, window_size=(-1, -1), qk_norm=True,
            cross_attn_norm=True, eps=1e-6, text_dim=4096)
_FLUX2 = dict(image_model="flux2", axes_dim=[32, 32, 32, 32], mlp_ratio=3.0, theta=2000, out_channels=128,
              global_modulation=True, mlp_silu_act=True, qkv_bias=False, ops_bias=False,
              default_ref_method="index", ref_index_scale=10.0, txt_ids_dims=[3], patch_size=1, in_channels=128,
              vec_in_dim=None, guidance_embed=True)
_ZIMAGE = dict(image_model="lumina2", patch_size=2, in_channels=16, qk_norm=True, axes_dims=[32, 48, 48],
               axes_lens=[1536, 512, 512], rope_theta=256.0, ffn_dim_multiplier=8.0 / 3.0, z_image_modulation=True,
               time_scale=1000.0, pad_tokens_multiple=32)
# Cosmos Predict2 / Anima, as ComfyUI's detection fills it (comfy/model_detection.py) for 16 input channels.
_COSMOS2 = dict(image_model="cosmos_predict2", max_img_h=240, max_img_w=240, max_frames=128, in_channels=16,
                out_channels=16, patch_spatial=2, patch_temporal=1, concat_padding_mask=True,
                crossattn_emb_channels=1024, pos_emb_cls="rope3d", pos_emb_learnable=True,
                pos_emb_interpolation="crop", min_fps=1, max_fps=30, use_adaln_lora=True, adaln_lora_dim=256,
                extra_per_block_abs_pos_emb=False, rope_h_extrapolation_ratio=4.0, rope_w_extrapolation_ratio=4.0,
                rope_t_extrapolation_ratio=1.0, extra_h_extrapolation_ratio=1.0, extra_w_extrapolation_ratio=1.0,
                extra_t_extrapolation_ratio=1.0, rope_enable_fps_modulation=False)
_CHROMA = dict(image_model="chroma", axes_dim=[16, 56, 56], mlp_ratio=4.0, theta=10000, out_channels=64,
               qkv_bias=True, txt_ids_dims=[], in_channels=64, patch_size=2, vec_in_dim=None, in_dim=64)


@dataclass(frozen=True)
class Family:
    name: str                 # merge_core architecture
    config_class: str         # comfy.supported_models class ComfyUI's detection picks
    full: dict                # published layout (meta only)
    tiny: dict                # reduced layout, for seeded merges
    detected_tiny: bool       # whether ComfyUI's detection reads every size of the tiny layout from its keys
    native_node: str | None   # comfy_extras block-merge node with the same blocks, if any
    extra: dict = field(default_factory=dict)  # other configurations: name -> (config class, layout)
    # The smallest layout ComfyUI's detection reads back from a file as this family (for the server tests); None:
    # the tiny one is (detected_tiny). Widths detection fixes stay full (RUNTIME.md: 0.5-1.7 GiB).
    served: dict | None = None

    def served_layout(self) -> dict:
        return self.tiny if self.served is None else self.served


FAMILIES = {f.name: f for f in (
    Family("wan", "WAN21_I2V",
           full=dict(_WAN, dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=36, out_dim=16,
                     model_type="i2v"),
           tiny=dict(_WAN, dim=128, ffn_dim=64, num_heads=1, num_layers=3, in_dim=36, out_dim=16, model_type="i2v"),
           detected_tiny=True, native_node="ModelMergeWAN2_1",
           extra={"wan21_t2v": ("WAN21_T2V", dict(_WAN, dim=1536, ffn_dim=8960, num_heads=12, num_layers=30,
                                                  in_dim=16, out_dim=16, model_type="t2v")),
                  "wan22_t2v": ("WAN22_T2V", dict(_WAN, dim=3072, ffn_dim=14336, num_heads=24, num_layers=30,
                                                  in_dim=48, out_dim=48, model_type="t2v"))}),
    Family("qwen_image", "QwenImage",
           full=dict(image_model="qwen_image", in_channels=64, num_layers=60),
           tiny=dict(image_model="qwen_image", in_channels=64, num_layers=3, attention_head_dim=32,
                     num_attention_heads=2, joint_attention_dim=64, axes_dims_rope=(8, 12, 12)),
           detected_tiny=False, native_node="ModelMergeQwenImage",
           served=dict(image_model="qwen_image", in_channels=64, num_layers=1)),
    Family("krea2", "Krea2",
           full=dict(image_model="krea2", features=6144, channels=16, patch=2, layers=28, heads=48, kvheads=12,
                     txtlayers=12, txtdim=2560),
           tiny=dict(image_model="krea2", features=256, channels=16, patch=2, layers=3, heads=2, kvheads=1,
                     txtlayers=2, txtdim=160),  # txtdim: a multiple of its 20 text heads
           detected_tiny=True, native_node="ModelMergeKrea2"),
    Family("auraflow", "AuraFlow",
           full=dict(max_seq=1024, cond_seq_dim=2048, n_double_layers=4, n_layers=36),
           tiny=dict(max_seq=16, cond_seq_dim=32, n_double_layers=2, n_layers=4, dim=64, n_heads=2,
                     global_conddim=64),
           detected_tiny=False, native_node="ModelMergeAuraflow",
           served=dict(max_seq=16, cond_seq_dim=2048, n_double_layers=1, n_layers=2)),
    Family("flux2", "Flux2",
           full=dict(_FLUX2, hidden_size=6144, num_heads=48, context_in_dim=15360, depth=8, depth_single_blocks=48),
           tiny=dict(_FLUX2, hidden_size=256, num_heads=2, context_in_dim=64, depth=2, depth_single_blocks=2),
           detected_tiny=True, native_node=None,
           extra={"klein_4b": ("Flux2", dict(_FLUX2, hidden_size=3072, num_heads=24, context_in_dim=7680, depth=5,
                                             depth_single_blocks=20))}),
    Family("chroma", "Chroma",
           full=dict(_CHROMA, hidden_size=3072, num_heads=24, context_in_dim=4096, depth=19,
                     depth_single_blocks=38, out_dim=3072, hidden_dim=5120, n_layers=5),
           tiny=dict(_CHROMA, hidden_size=128, num_heads=1, context_in_dim=64, depth=2, depth_single_blocks=2,
                     out_dim=128, hidden_dim=64, n_layers=2),
           detected_tiny=False, native_node=None,
           served=dict(_CHROMA, hidden_size=128, num_heads=1, context_in_dim=64, depth=1, depth_single_blocks=1,
                       out_dim=3072, hidden_dim=5120, n_layers=5)),
    # The 14B layout (ModelMergeCosmosPredict2_14B's 36 blocks) and the 2B one (28 blocks, B28-B35 empty).
    Family("cosmos_predict2", "CosmosT2IPredict2",
           full=dict(_COSMOS2, model_channels=5120, num_blocks=36, num_heads=40),
           tiny=dict(_COSMOS2, model_channels=256, num_blocks=3, num_heads=16),
           detected_tiny=True, native_node="ModelMergeCosmosPredict2_14B",
           extra={"cosmos_predict2_2b": ("CosmosT2IPredict2",
                                         dict(_COSMOS2, model_channels=2048, num_blocks=28, num_heads=16))}),
    # Anima: Cosmos Predict2 2B and its LLM adapter (fixed at width 1024, 6 blocks: 266 MiB of the tiny model).
    Family("anima", "Anima",
           full=dict(_COSMOS2, image_model="anima", model_channels=2048, num_blocks=28, num_heads=16),
           tiny=dict(_COSMOS2, image_model="anima", model_channels=256, num_blocks=2, num_heads=16),
           detected_tiny=True, native_node=None),
    # Z-Image with the SigLIP image-conditioning modules, so every block has keys; Turbo has none of them.
    Family("zimage", "ZImage",
           full=dict(_ZIMAGE, dim=3840, n_heads=30, n_kv_heads=30, cap_feat_dim=2560, n_layers=30,
                     siglip_feat_dim=1152),
           tiny=dict(_ZIMAGE, dim=128, n_heads=1, n_kv_heads=1, cap_feat_dim=64, n_layers=2, siglip_feat_dim=32),
           detected_tiny=False, native_node=None,
           served=dict(_ZIMAGE, dim=3840, n_heads=30, n_kv_heads=30, cap_feat_dim=64, n_layers=1),
           extra={"zimage_turbo": ("ZImage", dict(_ZIMAGE, dim=3840, n_heads=30, n_kv_heads=30, cap_feat_dim=2560,
                                                  n_layers=30))}),
)}


def _comfy():
    from devkit.comfy_env import import_comfy
    import_comfy()
    import comfy.supported_models
    return comfy.supported_models


def meta_state_dict(config_class: str, unet_config: dict) -> dict[str, torch.Tensor]:
    """The diffusion model's state dict (its own names, no prefix) on the meta device."""
    sm = _comfy()
    model = getattr(sm, config_class)(dict(unet_config)).get_model({}, device="meta")
    return dict(model.diffusion_model.state_dict())


def seeded_state_dict(meta: dict, seed: int, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """Values for every key of `meta`, seeded per key (the same rules as the SD1.5 test checkpoints)."""
    return {k: random_value(k, v.shape, seed, dtype).contiguous() for k, v in meta.items()}


def tiny_state_dict(name: str, who: str = "A") -> dict[str, torch.Tensor]:
    fam = FAMILIES[name]
    return seeded_state_dict(meta_state_dict(fam.config_class, fam.tiny), SEEDS[who])


def tiny_model(name: str, who: str = "A"):
    """A ComfyUI ModelPatcher of family `name`'s tiny layout with seed `who` (A/B/C), fp16 on the CPU."""
    fam = FAMILIES[name]
    sm = _comfy()
    import comfy.model_management
    import comfy.model_patcher
    import comfy.sd
    sd = tiny_state_dict(name, who)
    if fam.detected_tiny:
        patcher = comfy.sd.load_diffusion_model_state_dict(dict(sd), model_options={"dtype": torch.float16})
        got = type(patcher.model.model_config).__name__
        assert got == fam.config_class, f"{name}: ComfyUI detected {got}, not {fam.config_class}"
        return patcher
    config = getattr(sm, fam.config_class)(dict(fam.tiny))
    config.set_inference_dtype(torch.float16, None)
    model = config.get_model(sd, "", device=torch.device("cpu"))
    model.load_model_weights(sd, "")
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def ensure_family_file(out_dir: str, name: str, who: str = "A") -> str:
    """A diffusion-model file (the published names, no prefix, fp16, seeded `who`) of family `name`'s served
    layout in out_dir, for Load Diffusion Model; written once per content (older versions removed)."""
    import glob
    import sys
    import time
    from devkit.fixtures_arch import content_hash, file_name
    from merge_core.arch.flux_names import file_name as flux_file_name
    from merge_core.files.safetensors_stream import write_streaming
    fam = FAMILIES[name]
    seed = SEEDS[who]
    meta = meta_state_dict(fam.config_class, fam.served_layout())
    # published names: Flux.2's and Chroma's q/k norms are `.scale` in files (`.weight` inside ComfyUI 0.33)
    shapes = {flux_file_name(k): (tuple(v.shape), torch.float16 if v.is_floating_point() else v.dtype)
              for k, v in meta.items()}
    kind = f"family_{name}"
    path = os.path.join(out_dir, file_name(kind, who, content_hash(kind, seed, shapes)))
    if os.path.exists(path):
        return path
    os.makedirs(out_dir, exist_ok=True)
    for old in glob.glob(os.path.join(out_dir, f"{kind}_{who}_*.safetensors")):
        os.remove(old)
    t = time.time()
    write_streaming(path, {k: (dt, shape) for k, (shape, dt) in shapes.items()},
                    lambda k: random_value(k, torch.Size(shapes[k][0]), seed, shapes[k][1]),
                    {"format": "pt", "elemental_test_seed": str(seed), "elemental_fixture": kind})
    print(f"[fixtures] wrote {path} ({os.path.getsize(path) / 2**30:.2f} GiB) in {time.time() - t:.1f} s",
          file=sys.stderr)
    return path


def full_keys(name: str) -> list[str]:
    """The published layout's keys in checkpoint form (``model.diffusion_model.``), ComfyUI's order."""
    fam = FAMILIES[name]
    return ["model.diffusion_model." + k for k in meta_state_dict(fam.config_class, fam.full)]


def write_keylists(out_dir: str) -> None:
    for name in FAMILIES:
        path = os.path.join(out_dir, f"{name}.txt.gz")
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:  # reproducible bytes
            f.write(("\n".join(full_keys(name)) + "\n").encode("utf-8"))
        print(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keylists", metavar="DIR", required=True, help="write <family>.txt.gz key lists here")
    write_keylists(ap.parse_args().keylists)


if __name__ == "__main__":
    main()

"""Seeded random LoRA files in real key layouts, named from ComfyUI's own LoRA key maps.

No real LoRA can be fetched on CI, so the tests write their own. Module names and shapes come from ComfyUI:
the UNet's diffusers names from `comfy.utils.unet_to_diffusers` on the SD1.5 config, the text encoder's from
`comfy.lora.LORA_CLIP_MAP`, shapes from the real modules built on the meta device; every LoRA name written is
checked to be in `comfy.lora.model_lora_keys_unet` / `model_lora_keys_clip`, i.e. one ComfyUI loads.

Layouts (SD1.5):
* ``kohya``: ``lora_unet_<diffusers name>`` / ``lora_te_text_model_encoder_layers_<n>_<module>`` with
  ``lora_down.weight``, ``lora_up.weight`` and ``alpha`` (kohya sd-scripts; conv layers as LoCon).
* ``peft``: ``unet.<diffusers name>`` / ``text_encoder.text_model.encoder.layers.<n>.<module>`` with
  ``lora_A.weight`` / ``lora_B.weight`` and no alpha (diffusers/PEFT; attention projections under the
  ``processor.`` names ComfyUI maps).
* ``loha``: LyCORIS LoHa, kohya names with ``hada_w1_a``, ``hada_w1_b``, ``hada_w2_a``, ``hada_w2_b``, ``alpha``.
* ``lokr``: LyCORIS LoKr, kohya names with a full ``lokr_w1`` and ``alpha``; the output and input dimensions
  are split as LyCORIS's ``factorization(dim, 8)`` does (8 x dim/8, else the divisor pair nearest the square
  root), ``lokr_w1`` being the small (out1, in1) factor. Linear modules have a factorised
  ``lokr_w2_a`` (out2, rank) / ``lokr_w2_b`` (rank, in2), so ComfyUI scales the whole ``kron(w1, w2)`` by
  alpha/rank; the convolutions have a full 4-D ``lokr_w2`` (out2, in2, kh, kw), for which ComfyUI applies
  no alpha (scale 1, as in LyCORIS, which stores alpha = rank for a full pair; here it stays 2 so that a
  wrong scale shows).

Flux (``flux``, for devkit.fixtures_arch's ``flux_dev``: 1 double and 1 single block): diffusers names
``transformer.<name>.lora_A.weight`` / ``lora_B.weight`` for every 2-D weight ComfyUI's Flux key map names,
including the fused projections it maps to a slice of one weight (``attn.to_q/to_k/to_v`` of
``img_attn.qkv``, ``proj_mlp`` of ``linear1``) and ``norm_out.linear`` with its scale/shift swap.

SDXL (``sdxl``, for devkit.fixtures_arch's full-size ``sdxl``): one kohya file (``lora_unet_<diffusers name>``,
``lora_te1_text_model_encoder_layers_<n>_<module>`` for CLIP-L, ``lora_te2_...`` for CLIP-G, with
``lora_up``/``lora_down``/``alpha`` as ``kohya``), kept small: in each attention block (IN04, IN05, IN07, IN08,
M00, OUT00-OUT05) the first transformer block's attn1/attn2 ``to_q/to_k/to_v/to_out.0`` and the block's
``proj_in``/``proj_out``, plus ``conv_in`` and ``conv_out``; layers 0 and 10 of CLIP-L, 0 and 30 of CLIP-G.
Names and shapes from ComfyUI's SDXL classes on the meta device, every kohya and diffusers name checked as
above.

Qwen-Image, Wan 2.1/2.2 and Z-Image (``FAMILY_FORMATS``, for the in-memory models of
devkit.fixtures_families): one file per format ComfyUI 0.33's loader reads for the family, over every 2-D
weight its key map names in that format, every name taken from `comfy.lora.model_lora_keys_unet` of the model
given (Wan Fun's ``lora_unet__`` names are the kohya ones, which `comfy.lora_convert` renames back):

* ``wan_comfy``: ``diffusion_model.blocks.N.self_attn.q.lora_down.weight`` / ``lora_up`` / ``alpha``;
* ``wan_kohya``: ``lora_unet_blocks_N_self_attn_q.lora_down.weight`` / ``lora_up`` / ``alpha`` (musubi-tuner);
* ``wan_fun``: ``lora_unet__blocks_N_self_attn_q...`` (VideoX-Fun);
* ``qwen_diffusers``: ``transformer.transformer_blocks.N.attn.to_q.lora_A.weight`` / ``lora_B`` (no alpha);
* ``qwen_kohya``: ``lora_unet_transformer_blocks_N_attn_to_q.lora_down.weight`` / ``lora_up`` / ``alpha``;
* ``zimage_diffusers``: ``transformer.layers.N.attention.to_q.lora_A.weight`` / ``lora_B``, the diffusers
  names, ``to_q``/``to_k``/``to_v`` patching a third of ComfyUI's fused ``attention.qkv`` each;
* ``zimage_comfy``: ``diffusion_model.layers.N.attention.qkv.lora_down.weight`` / ``lora_up`` / ``alpha``
  (ComfyUI's own names).

The SD1.5 UNet modules are those a kohya LoRA trains (transformer projections, attention, feed-forward) plus
``conv_in``, the down/upsampler convolutions, ``time_embedding`` and ``conv_out``: every block but the
resnet-only IN10, IN11, OUT00 and OUT01 has keys, and so do the keys LoRA Block Weight assigns no block.
Values are seeded per tensor name (the same file on every machine) and stored in fp16 like real LoRAs;
rank 4 and alpha 2 make the LoRA scale alpha/rank = 0.5, exact in binary.

Run as a script:  python -m devkit.loras OUT_DIR [--layouts kohya peft loha lokr] [--sdxl] [--flux]
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass

import torch

from devkit.checkpoints import SD15_UNET_CONFIG, _key_seed

RANK = 4
# Bump when what a layout writes changes: cached files of another version are rewritten.
VERSION = "2"
ALPHA = 2.0
LAYOUTS = ("kohya", "peft", "loha", "lokr")
SEEDS = {"kohya": 11, "peft": 12, "loha": 13, "lokr": 14}
LOKR_FACTOR = 8

# Diffusers UNet module names the layouts train, as regexes on the name without ".weight": kohya's default
# LoRA modules (transformer projections, attention, feed-forward) plus a few convolutions so that every block
# and the keys LoRA Block Weight leaves alone get a patch (resnet convolutions, most of a LoCon's size, are
# left out to keep the key-by-key tests fast).
UNET_MODULES = (
    r"^(?:down_blocks|up_blocks)\.\d+\.attentions\.\d+\.(?:proj_in|proj_out)$",
    r"^mid_block\.attentions\.0\.(?:proj_in|proj_out)$",
    r"\.transformer_blocks\.\d+\.(?:attn[12]\.to_(?:q|k|v|out\.0)|ff\.net\.0\.proj|ff\.net\.2)$",
    r"\.(?:downsamplers|upsamplers)\.0\.conv$",
    r"^(?:conv_in|conv_out|time_embedding\.linear_[12])$",
)
TEXT_MODULES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1",
                "mlp.fc2")

# SDXL (one kohya file): in every attention block (IN04, IN05, IN07, IN08, M00, OUT00-OUT05) the first
# transformer block's attn1/attn2 projections and the block's proj_in/proj_out; conv_in (IN00) and conv_out
# (``out.2``: no LoRA Block Weight block); 2 layers of each text encoder.
SDXL_SEED = 22
SDXL_UNET_MODULES = (
    r"\.attentions\.\d+\.(?:proj_in|proj_out)$",
    r"\.attentions\.\d+\.transformer_blocks\.0\.attn[12]\.to_(?:q|k|v|out\.0)$",
    r"^(?:conv_in|conv_out)$",
)
# kohya prefix -> (ComfyUI encoder, diffusers prefix, layers)
SDXL_TEXT = {"te1": ("clip_l", "text_encoder", (0, 10)), "te2": ("clip_g", "text_encoder_2", (0, 30))}


def _comfy_parts(config_class: str = "SD15", unet_config: dict | None = None,
                 clip_class: str = "sd1_clip.SD1ClipModel"):
    """(UNet BaseModel on meta, CLIP model on meta, unet_to_diffusers map) from ComfyUI's own classes."""
    import importlib

    from devkit.comfy_env import import_comfy

    import_comfy()
    import comfy.supported_models
    import comfy.utils

    config = getattr(comfy.supported_models, config_class)(dict(unet_config or SD15_UNET_CONFIG))
    unet = config.get_model({}, device="meta")
    module, name = clip_class.rsplit(".", 1)
    clip = getattr(importlib.import_module(f"comfy.{module}"), name)(device="meta")
    return unet, clip, comfy.utils.unet_to_diffusers(config.unet_config)


def sd15_targets() -> list[tuple[str, str, tuple[int, ...], str]]:
    """(kohya name, PEFT name, weight shape, ComfyUI key) for every module the layouts train."""
    unet, clip, diffusers = _comfy_parts()
    import comfy.lora

    clip_sd = clip.state_dict()
    out = _unet_targets(unet, diffusers, UNET_MODULES)
    for layer in range(12):
        for m in TEXT_MODULES:
            key = f"clip_l.transformer.text_model.encoder.layers.{layer}.{m}.weight"
            out.append((f"lora_te_text_model_encoder_layers_{layer}_{comfy.lora.LORA_CLIP_MAP[m]}",
                        f"text_encoder.text_model.encoder.layers.{layer}.{m}", tuple(clip_sd[key].shape), key))
    _check_names(out, unet, clip)
    return out


def _unet_targets(unet, diffusers: dict, patterns) -> list[tuple[str, str, tuple[int, ...], str]]:
    """(kohya name, PEFT name, shape, ComfyUI key) of the UNet modules whose diffusers name matches a pattern."""
    unet_sd = unet.state_dict()
    compiled = [re.compile(p) for p in patterns]
    out = []
    for dname, cname in sorted(diffusers.items()):
        module = dname[:-len(".weight")] if dname.endswith(".weight") else None
        if module is None or not any(p.search(module) for p in compiled):
            continue
        key = "diffusion_model." + cname
        if key not in unet_sd:  # the diffusers map is generic (SD1.5 has no 4th downsampler)
            continue
        peft = "unet." + module.replace(".to_", ".processor.to_")
        peft = peft[:-2] if peft.endswith(".to_out.0") else peft
        out.append(("lora_unet_" + module.replace(".", "_"), peft, tuple(unet_sd[key].shape), key))
    return out


def _check_names(targets, unet, clip) -> None:
    """Every kohya and PEFT name in `targets` is one ComfyUI's key maps send to the target's key."""
    import comfy.lora

    key_map = comfy.lora.model_lora_keys_clip(clip, comfy.lora.model_lora_keys_unet(unet, {}))
    for kohya, peft, _, key in targets:
        for name in (kohya, peft):
            if key_map.get(name) != key:
                raise AssertionError(f"ComfyUI does not map LoRA name {name} to {key}")


def _sdxl_parts():
    """(SDXL UNet BaseModel on meta, SDXL CLIP-L + CLIP-G model on meta, unet_to_diffusers map)."""
    from devkit.fixtures_arch import SDXL_UNET

    return _comfy_parts("SDXL", SDXL_UNET, "sdxl_clip.SDXLClipModel")


def sdxl_targets() -> list[tuple[str, str, tuple[int, ...], str]]:
    """(kohya name, diffusers name, weight shape, ComfyUI key) for the SDXL layout: the UNet modules of
    SDXL_UNET_MODULES and the SDXL_TEXT layers of CLIP-L (``lora_te1_``) and CLIP-G (``lora_te2_``)."""
    unet, clip, diffusers = _sdxl_parts()
    import comfy.lora

    clip_sd = clip.state_dict()
    out = _unet_targets(unet, diffusers, SDXL_UNET_MODULES)
    for te, (encoder, diffusers_te, layers) in SDXL_TEXT.items():
        for layer in layers:
            for m in TEXT_MODULES:
                key = f"{encoder}.transformer.text_model.encoder.layers.{layer}.{m}.weight"
                out.append((f"lora_{te}_text_model_encoder_layers_{layer}_{comfy.lora.LORA_CLIP_MAP[m]}",
                            f"{diffusers_te}.text_model.encoder.layers.{layer}.{m}", tuple(clip_sd[key].shape),
                            key))
    _check_names(out, unet, clip)
    return out


def write_sdxl_lora(path: str, seed: int | None = None) -> None:
    """The SDXL kohya LoRA (lora_up/lora_down/alpha per module, as the SD1.5 ``kohya`` layout) at `path`."""
    from safetensors.torch import save_file

    seed = SDXL_SEED if seed is None else seed
    sd = {k: v.contiguous() for k, v in lora_state_dict("kohya", seed, sdxl_targets()).items()}
    tmp = path + ".partial"
    save_file(sd, tmp, metadata={"elemental_test_layout": "sdxl", "format": "pt",
                                 "elemental_lora_version": VERSION})
    os.replace(tmp, path)


def ensure_sdxl_lora(out_dir: str) -> str:
    """test_lora_sdxl.safetensors in out_dir, written when missing or stale; returns its path."""
    path = os.path.join(out_dir, "test_lora_sdxl.safetensors")
    if not _current(path):
        os.makedirs(out_dir, exist_ok=True)
        write_sdxl_lora(path)
        print(f"[loras] wrote {path}", file=sys.stderr)
    return path


def flux_targets() -> list[tuple[str, tuple[int, ...], object]]:
    """(LoRA name, shape of the part it patches, ComfyUI patch key: a key or (key, offset[, function])) for
    the flux_dev fixture's layout, from ComfyUI's own Flux key map."""
    from devkit.comfy_env import import_comfy
    from devkit.fixtures_arch import flux_config, flux_runtime_config

    import_comfy()
    import comfy.lora
    import comfy.supported_models

    config = flux_runtime_config(flux_config(1, 1, guidance=True, text_dim=768, vec_dim=768))  # as flux_meta
    model = comfy.supported_models.Flux(config).get_model({}, device="meta")
    sd = model.state_dict()
    out = []
    for name, target in sorted(comfy.lora.model_lora_keys_unet(model, {}).items()):
        key = target if isinstance(target, str) else target[0]
        if not name.startswith("transformer.") or key not in sd or sd[key].ndim != 2:
            continue
        shape = list(sd[key].shape)
        offset = None if isinstance(target, str) else target[1]
        if offset is not None:
            shape[offset[0]] = offset[2]
        out.append((name, tuple(shape), target))
    return out


def write_flux_lora(path: str, seed: int = 21) -> None:
    from safetensors.torch import save_file

    sd = {}
    for name, shape, _ in flux_targets():
        sd[f"{name}.lora_B.weight"], sd[f"{name}.lora_A.weight"] = _factors(seed, name, shape, "")
    tmp = path + ".partial"
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp,
              metadata={"elemental_test_layout": "flux", "elemental_lora_version": VERSION})
    os.replace(tmp, path)


@dataclass(frozen=True)
class FamilyFormat:
    """One LoRA key format ComfyUI reads for a family of devkit.fixtures_families."""
    family: str           # devkit.fixtures_families family
    prefix: str           # the key-map names' prefix
    names: str            # "dots": prefix + the model key (no ``diffusion_model.``, no ``.weight``);
    #                       "underscores": the same with "." as "_" (kohya); "mapped": every name under prefix
    factors: str          # "kohya" (lora_up, lora_down, alpha) or "peft" (lora_B, lora_A, no alpha)
    written_prefix: str = ""  # the prefix the file has instead of `prefix` ("" = the same)


FAMILY_FORMATS = {
    "wan_comfy": FamilyFormat("wan", "diffusion_model.", "dots", "kohya"),
    "wan_kohya": FamilyFormat("wan", "lora_unet_", "underscores", "kohya"),
    "wan_fun": FamilyFormat("wan", "lora_unet_", "underscores", "kohya", written_prefix="lora_unet__"),
    "qwen_diffusers": FamilyFormat("qwen_image", "transformer.", "dots", "peft"),
    "qwen_kohya": FamilyFormat("qwen_image", "lora_unet_", "underscores", "kohya"),
    "zimage_diffusers": FamilyFormat("zimage", "transformer.", "mapped", "peft"),
    "zimage_comfy": FamilyFormat("zimage", "diffusion_model.", "dots", "kohya"),
}
FAMILY_SEED = 31


def _model_name(fmt: FamilyFormat, key: str) -> str:
    """The LoRA module name `fmt` gives the model key ``diffusion_model.<stem>.weight``."""
    stem = key[len("diffusion_model."):-len(".weight")]
    return fmt.prefix + (stem.replace(".", "_") if fmt.names == "underscores" else stem)


def _part_shape(weight_shape, target) -> tuple[int, ...]:
    """The shape a patch covers: the whole weight, or the slice a (key, (dim, start, size)) target names."""
    shape = list(weight_shape)
    if not isinstance(target, str) and target[1] is not None:
        dim, _start, size = target[1]
        shape[dim] = size
    return tuple(shape)


def family_targets(model, format_name: str) -> list[tuple[str, tuple[int, ...], object]]:
    """(LoRA module name as written, shape of the part it patches, ComfyUI patch key: a key or (key, offset))
    for every 2-D weight ComfyUI's key map for `model` (a ModelPatcher) names in `format_name`."""
    import comfy.lora

    fmt = FAMILY_FORMATS[format_name]
    weights = {k: v for k, v in model.model_state_dict().items() if k.endswith(".weight") and v.ndim == 2}
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    out = []
    for name, target in sorted(key_map.items()):
        key = target if isinstance(target, str) else target[0]
        if not name.startswith(fmt.prefix) or key not in weights:
            continue
        if fmt.names != "mapped" and name != _model_name(fmt, key):
            continue
        written = fmt.written_prefix + name[len(fmt.prefix):] if fmt.written_prefix else name
        out.append((written, _part_shape(weights[key].shape, target), target))
    if not out:
        raise AssertionError(f"ComfyUI's key map names no 2-D weight in format {format_name}")
    return out


def family_lora_state_dict(model, format_name: str, seed: int = FAMILY_SEED) -> dict[str, torch.Tensor]:
    """The tensors of a `format_name` LoRA for `model`: rank RANK, fp16, alpha ALPHA where the format has one."""
    fmt = FAMILY_FORMATS[format_name]
    up_name, down_name = ("lora_up", "lora_down") if fmt.factors == "kohya" else ("lora_B", "lora_A")
    sd = {}
    for name, shape, _ in family_targets(model, format_name):
        sd[f"{name}.{up_name}.weight"], sd[f"{name}.{down_name}.weight"] = _factors(seed, name, shape, "")
        if fmt.factors == "kohya":
            sd[f"{name}.alpha"] = torch.tensor(ALPHA, dtype=torch.float16)
    return sd


def write_family_lora(path: str, model, format_name: str, seed: int = FAMILY_SEED) -> None:
    """A `format_name` LoRA for `model` at `path` (see FAMILY_FORMATS)."""
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in family_lora_state_dict(model, format_name, seed).items()}
    tmp = path + ".partial"
    save_file(sd, tmp, metadata={"elemental_test_layout": format_name, "elemental_lora_version": VERSION})
    os.replace(tmp, path)


def _current(path: str) -> bool:
    """Whether a cached LoRA file exists and was written by this version of the writer."""
    from safetensors import safe_open

    if not os.path.exists(path):
        return False
    with safe_open(path, "pt") as f:
        return (f.metadata() or {}).get("elemental_lora_version") == VERSION


def ensure_flux_lora(out_dir: str) -> str:
    """test_lora_flux.safetensors in out_dir, written when missing or stale; returns its path."""
    path = os.path.join(out_dir, "test_lora_flux.safetensors")
    if not _current(path):
        os.makedirs(out_dir, exist_ok=True)
        write_flux_lora(path)
    return path


def _randn(seed: int, name: str, shape, std: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(_key_seed(seed, name))
    return (std * torch.randn(shape, generator=gen)).to(torch.float16)


def _factors(seed: int, name: str, shape: tuple[int, ...], tag: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(up (out, rank[, 1, 1]), down (rank, in[, kh, kw])) with a modest product (~1e-3 per entry)."""
    out_dim, fan_in = shape[0], 1
    for d in shape[1:]:
        fan_in *= d
    up_shape = (out_dim, RANK) + ((1, 1) if len(shape) == 4 else ())
    down_shape = (RANK,) + tuple(shape[1:])
    return (_randn(seed, f"{name}.{tag}up", up_shape, 0.02),
            _randn(seed, f"{name}.{tag}down", down_shape, fan_in ** -0.5))


def kron_split(dim: int, factor: int = LOKR_FACTOR) -> tuple[int, int]:
    """(m, n), m <= n, m * n = dim: (factor, dim / factor) when factor divides dim and is the smaller,
    else the divisor pair nearest the square root (as LyCORIS's ``factorization``)."""
    if dim % factor == 0 and factor * factor <= dim:
        return factor, dim // factor
    m = max(d for d in range(1, int(dim ** 0.5) + 1) if dim % d == 0)
    return m, dim // m


def _lokr(seed: int, name: str, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """One LoKr module: a full ``lokr_w1`` and, for a linear layer, ``lokr_w2_a`` @ ``lokr_w2_b`` (rank
    RANK), for a convolution a full 4-D ``lokr_w2``; kron(w1, w2) entries are ~1e-3."""
    (o1, o2), (i1, i2) = kron_split(shape[0]), kron_split(shape[1])
    out = {f"{name}.lokr_w1": _randn(seed, f"{name}.w1", (o1, i1), 0.25)}
    if len(shape) == 4:
        out[f"{name}.lokr_w2"] = _randn(seed, f"{name}.w2", (o2, i2) + tuple(shape[2:]), 0.005)
    else:
        out[f"{name}.lokr_w2_a"] = _randn(seed, f"{name}.w2a", (o2, RANK), 0.05)
        out[f"{name}.lokr_w2_b"] = _randn(seed, f"{name}.w2b", (RANK, i2), 0.05)
    return out


def lora_state_dict(layout: str, seed: int | None = None, targets=None) -> dict[str, torch.Tensor]:
    """The tensors of one LoRA file in ``layout`` (see the module docstring)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown LoRA layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    seed = SEEDS[layout] if seed is None else seed
    sd: dict[str, torch.Tensor] = {}
    alpha = torch.tensor(ALPHA, dtype=torch.float16)
    for kohya, peft, shape, _ in targets if targets is not None else sd15_targets():
        if layout == "kohya":
            sd[f"{kohya}.lora_up.weight"], sd[f"{kohya}.lora_down.weight"] = _factors(seed, kohya, shape, "")
            sd[f"{kohya}.alpha"] = alpha.clone()
        elif layout == "peft":
            sd[f"{peft}.lora_B.weight"], sd[f"{peft}.lora_A.weight"] = _factors(seed, peft, shape, "")
        elif layout == "lokr":
            sd.update(_lokr(seed, kohya, shape))
            sd[f"{kohya}.alpha"] = alpha.clone()
        else:
            flat = (shape[0], RANK), (RANK, int(torch.tensor(shape[1:]).prod()))
            for i in (1, 2):
                sd[f"{kohya}.hada_w{i}_a"] = _randn(seed, f"{kohya}.w{i}a", flat[0], 0.15)
                sd[f"{kohya}.hada_w{i}_b"] = _randn(seed, f"{kohya}.w{i}b", flat[1], 0.15)
            sd[f"{kohya}.alpha"] = alpha.clone()
    return sd


def write_lora(path: str, layout: str, seed: int | None = None, targets=None) -> None:
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in lora_state_dict(layout, seed, targets).items()}
    tmp = path + ".partial"
    save_file(sd, tmp, metadata={"elemental_test_layout": layout, "format": "pt",
                                 "elemental_lora_version": VERSION})
    os.replace(tmp, path)


def ensure_loras(out_dir: str, layouts=LAYOUTS) -> dict[str, str]:
    """Writes the missing or stale test LoRAs (test_lora_<layout>.safetensors) into out_dir; returns layout ->
    path."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {layout: os.path.join(out_dir, f"test_lora_{layout}.safetensors") for layout in layouts}
    missing = [layout for layout, p in paths.items() if not _current(p)]
    if missing:
        targets = sd15_targets()
        for layout in missing:
            write_lora(paths[layout], layout, targets=targets)
            print(f"[loras] wrote {paths[layout]}", file=sys.stderr)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    ap.add_argument("--sdxl", action="store_true", help="also the SDXL kohya LoRA")
    ap.add_argument("--flux", action="store_true", help="also the Flux diffusers LoRA")
    args = ap.parse_args()
    for path in ensure_loras(args.out_dir, args.layouts).values():
        print(path)
    if args.sdxl:
        print(ensure_sdxl_lora(args.out_dir))
    if args.flux:
        print(ensure_flux_lora(args.out_dir))


if __name__ == "__main__":
    main()

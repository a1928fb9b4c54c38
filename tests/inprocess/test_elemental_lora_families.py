"""ElementalLoRA on Qwen-Image, Wan 2.1/2.2 and Z-Image: LoRAs in the key formats ComfyUI 0.33's own loader reads
for each family, every key at strength x its block's (or element's) ratio.

Models: devkit.fixtures_families' seeded tiny models built from ComfyUI's own classes (Wan 2.1 I2V, 3 blocks,
detected by ComfyUI; Qwen-Image, 3 blocks, and Z-Image, 2 layers + refiners, built by their config class at
small widths), and a tiny Wan 2.2 T2V (48-channel latent, 2 blocks) detected by ComfyUI from its keys. LoRAs:
devkit.loras.write_family_lora, every 2-D weight ComfyUI's key map names in the format (names from that map):

    model       format             file keys
    wan, wan22  wan_comfy          diffusion_model.blocks.N.<module>.lora_down.weight / lora_up / alpha
    wan         wan_kohya          lora_unet_blocks_N_<module>.lora_down.weight / lora_up / alpha
    wan         wan_fun            lora_unet__blocks_N_<module>... (VideoX-Fun; comfy.lora_convert renames)
    qwen_image  qwen_diffusers     transformer.transformer_blocks.N.<module>.lora_A.weight / lora_B
    qwen_image  qwen_kohya         lora_unet_transformer_blocks_N_<module>.lora_down.weight / lora_up / alpha
    zimage      zimage_diffusers   transformer.layers.N.attention.to_q.lora_A.weight / lora_B (q, k, v: thirds
                                   of ComfyUI's fused attention.qkv)
    zimage      zimage_comfy       diffusion_model.layers.N.attention.qkv.lora_down.weight / lora_up / alpha

Checked, with the block tables, the spec and the formula written out here (independent of merge_core):
* every patched weight, computed by ComfyUI's `calculate_weight` in float64 from the node's patches, equals
  ``W + strength(block, element) * scale * (up @ down)`` in float64 bit for bit (scale alpha/rank = 0.5 with
  an alpha, 1 without; a q/k/v slice adds to its third of the fused weight); a key at strength 0 has no patch;
* the weight the sampler gets (ComfyUI's patch path: fp32, then fp16 with stochastic rounding) is one of the
  fp16 values next to the float64 formula: within one fp16 ulp, plus 2^-10 of an ulp for fp32's rounding;
* with every ratio 1 the node's patches are those of ComfyUI's LoraLoaderModelOnly (comfy.sd.load_lora_for_models)
  and the sampler's weights equal its weights bit for bit.
"""
from __future__ import annotations

import functools
import os
import re

import pytest
import torch

from tests.helpers.arch_checks import dtype_ulp
from tests.helpers.pack import pack_module
from tests.helpers.sd1_sources import merged_weight

STRENGTH = 0.75
CASES = [("wan", "wan_comfy"), ("wan", "wan_kohya"), ("wan", "wan_fun"), ("wan22", "wan_comfy"),
         ("qwen_image", "qwen_diffusers"), ("qwen_image", "qwen_kohya"),
         ("zimage", "zimage_diffusers"), ("zimage", "zimage_comfy")]
ARCH = {"wan": "wan", "wan22": "wan", "qwen_image": "qwen_image", "zimage": "zimage"}
# Blocks in the order a block-weights string lists them (ComfyUI's block-merge node's order for Wan and Qwen).
BLOCKS = {
    "wan": ["IN", "TIME", "TPROJ", "TEXT", "IMG"] + [f"B{i:02d}" for i in range(40)] + ["OUT"],
    "qwen_image": ["POS", "IN", "TXTNORM", "TXT", "TIME"] + [f"T{i:02d}" for i in range(60)] + ["OUT"],
    "zimage": ["IN", "N00", "N01", "C00", "C01", "S00", "S01"] + [f"L{i:02d}" for i in range(30)] + ["OUT"],
}
# (block, element words ("NOT" first: keys with none of them), ratio), in the order the spec lists them.
SPEC_ENTRIES = {
    "wan": [("B01", ("self_attn",), 0.125), ("B01", ("ffn.2",), 0.0), ("TEXT", (), 1.75),
            ("B00", ("NOT", "cross_attn"), 1.5)],
    "qwen_image": [("T01", ("attn",), 0.125), ("T02", ("img_mlp",), 0.0), ("T00", ("txt_mod",), 1.5)],
    "zimage": [("L00", ("attention",), 0.125), ("L01", ("feed_forward.w2",), 0.0), ("N00", ("qkv",), 1.5),
               ("OUT", ("adaLN",), 0.25)],
}
# Wan's OUT: head.head.weight is its one 2-D weight (head.modulation is a 3-D parameter)
WAN_TOP = {"patch_embedding": "IN", "time_embedding": "TIME", "time_projection": "TPROJ", "text_embedding": "TEXT",
           "img_emb": "IMG", "head": "OUT"}
QWEN_TOP = {"img_in": "IN", "txt_norm": "TXTNORM", "txt_in": "TXT", "time_text_embed": "TIME", "proj_out": "OUT",
            "norm_out": "POS"}  # POS: ComfyUI's node's first input, where what no input names goes
ZIMAGE_NUMBERED = {"noise_refiner": "N", "context_refiner": "C", "siglip_refiner": "S", "layers": "L"}


def block_of(arch: str, key: str) -> str:
    """The block of a ComfyUI key (``diffusion_model.…``), written out per family."""
    part = key[len("diffusion_model."):]
    top = part.split(".")[0]
    if arch == "wan":
        m = re.match(r"blocks\.(\d+)\.", part)
        return f"B{int(m.group(1)):02d}" if m else WAN_TOP[top]
    if arch == "qwen_image":
        m = re.match(r"transformer_blocks\.(\d+)\.", part)
        return f"T{int(m.group(1)):02d}" if m else QWEN_TOP[top]
    m = re.match(r"(noise_refiner|context_refiner|siglip_refiner|layers)\.(\d+)\.", part)
    if m:
        return f"{ZIMAGE_NUMBERED[m.group(1)]}{int(m.group(2)):02d}"
    return "OUT" if top == "final_layer" else "IN"


def block_weights(arch: str) -> dict[str, float]:
    """One dyadic ratio per block (0 for every eighth), so strength x ratio stays exact."""
    return {b: ((i * 3) % 8) / 4 for i, b in enumerate(BLOCKS[arch])}


def spec_text(arch: str) -> str:
    return "\n".join(f"{b}:{' '.join(words)}:{r}" for b, words, r in SPEC_ENTRIES[arch])


def element_hit(words: tuple[str, ...], key: str) -> bool:
    """No words: every key of the block; else a key containing any word (``NOT`` first: none of them)."""
    invert = bool(words) and words[0] == "NOT"
    words = words[1:] if invert else words
    return not words or any(w in key for w in words) != invert


def expected_ratio(arch: str, key: str, weights=True, spec=True) -> float:
    block = block_of(arch, key)
    ratio = block_weights(arch)[block] if weights else 1.0
    for blocks, words, value in SPEC_ENTRIES[arch] if spec else ():
        if block == blocks and element_hit(words, key):
            ratio = value
    return ratio


def _comfy_has(config_class: str) -> bool:
    import comfy.supported_models
    return hasattr(comfy.supported_models, config_class)


def _older_than_033() -> bool:
    """Whether this ComfyUI predates 0.33 (the compatibility run's 0.3.75)."""
    import comfyui_version
    return tuple(int(x) for x in comfyui_version.__version__.split(".")[:2]) < (0, 33)


WAN22_CLASS = "WAN22_T2V"


def wan22_model():
    """A tiny Wan 2.2 T2V (48-channel latent), loaded by ComfyUI's own loader, which detects it from its keys."""
    import comfy.sd
    from devkit.checkpoints import SEEDS
    from devkit.fixtures_families import FAMILIES, meta_state_dict, seeded_state_dict

    config = dict(FAMILIES["wan"].tiny, in_dim=48, out_dim=48, model_type="t2v", num_layers=2)
    sd = seeded_state_dict(meta_state_dict(WAN22_CLASS, config), SEEDS["A"])
    patcher = comfy.sd.load_diffusion_model_state_dict(sd, model_options={"dtype": torch.float16})
    assert type(patcher.model.model_config).__name__ == WAN22_CLASS
    return patcher


@functools.lru_cache(maxsize=None)
def model_of(name: str):
    from devkit.fixtures_families import FAMILIES, tiny_model

    config_class = WAN22_CLASS if name == "wan22" else FAMILIES[name].config_class
    if not _comfy_has(config_class):
        pytest.skip(f"this ComfyUI has no {config_class} model")
    try:
        return wan22_model() if name == "wan22" else tiny_model(name)
    except (TypeError, KeyError) as exc:  # 0.3.75's Z-Image model has no SigLIP layers
        if not _older_than_033():
            raise
        pytest.skip(f"this ComfyUI cannot build the tiny {name} model: {exc!r}")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    lora_node = pack_module("nodes.lora_nodes")
    import folder_paths

    folder = str(tmp_path_factory.mktemp("family_loras"))
    folder_paths.add_model_folder_path("loras", folder)
    yield lora_node, folder
    model_of.cache_clear()


def lora_file(env, model_name: str, format_name: str):
    """(file name, file path, [(module name, part shape, ComfyUI patch key)]) of the case's LoRA, written once."""
    from devkit.loras import family_targets, write_family_lora

    _, folder = env
    model = model_of(model_name)
    name = f"family_{model_name}_{format_name}.safetensors"
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        write_family_lora(path, model, format_name)
    return name, path, family_targets(model, format_name)


def run(env, model, arch, name, strength=STRENGTH, weights=None, spec=True):
    lora_node, _ = env
    T = lora_node.TextInput
    if weights is None:
        weights = block_weights(arch)
    text = ",".join(str(weights[b]) for b in BLOCKS[arch])
    return lora_node.ElementalLoRA.execute(
        model=model, lora_name=name, strength_model=strength, strength_clip=1.0, block_weights=T(text, arch),
        elemental=T(spec_text(arch), arch) if spec else None).args


def modules_by_key(path: str, targets) -> dict[str, list]:
    """model key -> [(patch offset or None, up, down, scale)] of the file's modules, in file order."""
    from safetensors.torch import load_file

    sd = load_file(path)
    out: dict[str, list] = {}
    for name, _shape, target in targets:
        kohya = f"{name}.lora_up.weight" in sd
        up, down = (sd[f"{name}.lora_up.weight"], sd[f"{name}.lora_down.weight"]) if kohya else \
            (sd[f"{name}.lora_B.weight"], sd[f"{name}.lora_A.weight"])
        scale = sd[f"{name}.alpha"].item() / down.shape[0] if f"{name}.alpha" in sd else 1.0  # PEFT: none
        key, offset = (target, None) if isinstance(target, str) else (target[0], target[1])
        out.setdefault(key, []).append((offset, up, down, scale))
    return out


def formula64(W: torch.Tensor, modules, s: float) -> torch.Tensor:
    """W + s * scale * (up @ down) in float64, each module on its slice of W (q/k/v thirds of a fused qkv)."""
    want = W.double().clone()
    for offset, up, down, scale in modules:
        part = want.narrow(*offset) if offset is not None else want
        part += (s * scale) * torch.mm(up.double(), down.double())
    return want


@pytest.mark.parametrize("model_name,format_name", CASES, ids=[f"{m}-{f}" for m, f in CASES])
def test_every_patched_weight_equals_formula(env, model_name, format_name):
    import comfy.lora

    arch = ARCH[model_name]
    model = model_of(model_name)
    name, path, targets = lora_file(env, model_name, format_name)
    new_model, _, report = run(env, model, arch, name)
    base = model.model_state_dict()
    modules = modules_by_key(path, targets)
    zero = 0
    for key, entries in modules.items():
        s = STRENGTH * expected_ratio(arch, key)
        if s == 0:
            assert key not in new_model.patches, key
            zero += 1
            continue
        patches = new_model.patches[key]
        assert [p[0] for p in patches] == [s] * len(entries), key
        assert sorted(str(p[3]) for p in patches) == sorted(str(e[0]) for e in entries), key
        want = formula64(base[key], entries, s)
        got = comfy.lora.calculate_weight(patches, base[key].double().clone(), key, intermediate_dtype=torch.float64)
        assert torch.equal(got, want), f"{format_name} {key}: float64 weight differs from the formula"
        sampled = merged_weight(new_model, key)
        assert sampled.dtype == torch.float16
        assert ((sampled.double() - want).abs() <= dtype_ulp(want, torch.float16) * (1 + 2 ** -10)).all(), \
            f"{format_name} {key}: the sampler's weight is more than one fp16 ulp off the formula"
    assert set(new_model.patches) == {k for k in modules if STRENGTH * expected_ratio(arch, k) != 0}
    assert zero > 0 and len(modules) - zero > 10, (zero, len(modules))
    assert f"{len(targets)} UNet and 0 text-encoder patches; " in report and "match neither" not in report
    changed = [k for k in modules if expected_ratio(arch, k) != expected_ratio(arch, k, spec=False)]
    assert changed and all(report.count(f" {k} ") == 1 for k in changed), report  # a fused qkv: one line


def same_value(x, y) -> bool:
    """An adapter's entries: tensors equal to the bit, anything else (alpha, None) equal."""
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        return isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and torch.equal(x, y)
    return x == y


@pytest.mark.parametrize("model_name,format_name", CASES, ids=[f"{m}-{f}" for m, f in CASES])
def test_all_ratios_one_is_lora_loader_model_only(env, model_name, format_name):
    import nodes as comfy_nodes

    arch = ARCH[model_name]
    model = model_of(model_name)
    name, _, targets = lora_file(env, model_name, format_name)
    (ref,) = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(model, name, 1.0)
    ones = {b: 1.0 for b in BLOCKS[arch]}
    mine, _, _ = run(env, model, arch, name, strength=1.0, weights=ones, spec=False)
    assert mine.patches.keys() == ref.patches.keys()
    assert sum(len(p) for p in ref.patches.values()) == len(targets)
    for key, ref_patches in ref.patches.items():
        assert len(mine.patches[key]) == len(ref_patches), key
        for a, b in zip(mine.patches[key], ref_patches):
            assert (a[0], a[2], a[3], a[4]) == (b[0], b[2], b[3], b[4]), key
            assert type(a[1]) is type(b[1]) and all(same_value(x, y) for x, y in zip(a[1].weights, b[1].weights)), key
        assert torch.equal(merged_weight(mine, key), merged_weight(ref, key)), key


@pytest.mark.parametrize("model_name", ["wan", "qwen_image", "zimage"])
def test_lbw_lists_are_refused_with_the_inputs_to_use(env, model_name):
    lora_node, _ = env
    name, _, _ = lora_file(env, model_name, {"wan": "wan_kohya", "qwen_image": "qwen_kohya",
                                             "zimage": "zimage_comfy"}[model_name])
    with pytest.raises(ValueError, match="LoRA Block Weight has no weight lists for .*use block_weights"):
        lora_node.ElementalLoRA.execute(model=model_of(model_name), lora_name=name, strength_model=1.0,
                                        strength_clip=1.0, lbw_weights="1," * 16 + "1")

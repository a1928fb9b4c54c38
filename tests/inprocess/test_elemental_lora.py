"""ElementalLoRA on real ComfyUI objects: every patched weight against the LoRA formula, key by key.

Model A is loaded once with an fp16 UNet (half the RAM; the fp16 text encoder is ComfyUI's CPU default).
The seeded LoRA files come from devkit.loras (kohya, diffusers/PEFT, LyCORIS LoHa and LoKr, SD1.5 layouts).

For every key the LoRA patches, the test checks, with the formula written here:
* the strength ComfyUI got for the key is strength x ratio, the ratio worked out here by hand from the block
  weights and the spec (independent of merge_core);
* ComfyUI's fp32 computation of the patched weight from the key's patches equals
  ``W + s * alpha/rank * (up @ down)`` (LoHa: ``(w1a @ w1b) * (w2a @ w2b)``; PEFT: no alpha, scale 1; LoKr:
  ``kron(w1, w2_a @ w2_b)`` at alpha/rank, and ``kron(w1, w2)`` at scale 1 where both factors are full, as
  ComfyUI applies alpha only with a factorised factor) bit for bit in fp32, and the float64 formula (LoKr's
  Kronecker product written as an outer product) within fp32 rounding (on the first rows of every key: a
  property of the test's arithmetic);
* a key at strength 0 gets no patch (A's weight itself); for one key of every block the weight the sampler
  gets (ComfyUI's patch path, fp16 with its stochastic rounding) is within one fp16 ulp of the formula.
Keys the spec and weights leave at ratio 1 carry exactly the stock LoraLoader's patch (strength, tensors), and
the sampler's weight is bit for bit LoraLoader's (every layout).
"""
from __future__ import annotations

import os

import pytest
import torch

from tests.helpers.arch_checks import dtype_ulp
from tests.helpers.pack import CACHE_DIR, pack_module
from tests.helpers.lora_oracles import assert_float64_close, formula32, lora_modules
from tests.helpers.sd1_sources import merged_weight

STRENGTH_MODEL, STRENGTH_CLIP = 0.75, 0.5
# One dyadic ratio per block, BASE first (26 values): products with the strengths stay exact.
BLOCKS = ["BASE"] + ["IN%02d" % i for i in range(12)] + ["M00"] + ["OUT%02d" % i for i in range(12)]
WEIGHTS = [0.5, 1, 0.25, 0, 0.75, 1.5, 0.125, 1, 0.5, 0.25, 1, 0.375, 0.625, 0.875,
           1, 0.5, 0.25, 0, 1, 0.75, 0.5, 1, 0.25, 1.25, 0.5, 1]
SPEC = "OUT05:attn2:0.25\nBASE:mlp:0\nIN00:time_embed:0.5"
LAYOUTS = ("kohya", "peft", "loha", "lokr")


def block_of(key: str) -> str:
    """Our block of a ComfyUI key, written out for SD1 (text encoder BASE, time_embed IN00, out OUT11)."""
    if key.startswith("clip_l."):
        return "BASE"
    parts = key[len("diffusion_model."):].split(".")
    table = {"input_blocks": lambda: "IN%02d" % int(parts[1]), "time_embed": lambda: "IN00",
             "middle_block": lambda: "M00", "output_blocks": lambda: "OUT%02d" % int(parts[1]),
             "out": lambda: "OUT11"}
    return table[parts[0]]()


def expected_ratio(key: str, weights=True, spec=True) -> float:
    r = dict(zip(BLOCKS, WEIGHTS))[block_of(key)] if weights else 1.0
    if spec:
        for blocks, word, value in (("OUT05", "attn2", 0.25), ("BASE", "mlp", 0.0), ("IN00", "time_embed", 0.5)):
            if block_of(key) == blocks and word in key:
                r = value
    return float(r)


@pytest.fixture(scope="module")
def env(checkpoint_paths):
    lora_node = pack_module("nodes.lora_nodes")
    import comfy.lora
    import comfy.sd
    import folder_paths
    from devkit.loras import ensure_loras

    lora_dir = os.path.join(CACHE_DIR, "loras")
    paths = ensure_loras(lora_dir)
    folder_paths.add_model_folder_path("loras", lora_dir)
    model, clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(
        checkpoint_paths["A"], output_vae=False, output_clip=True, model_options={"dtype": torch.float16})
    pack_module("nodes.engine.model_info").set_source_name(model, "test_A.safetensors")
    key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, comfy.lora.model_lora_keys_unet(model.model, {}))
    yield lora_node, model, clip, paths, key_map


def patcher_of(model, clip, key):
    return clip.patcher if key.startswith("clip_l.") else model


def run(lora_node, model, clip, layout, **kw):
    T = lora_node.TextInput
    args = dict(model=model, clip=clip, lora_name=f"test_lora_{layout}.safetensors",
                strength_model=STRENGTH_MODEL, strength_clip=STRENGTH_CLIP,
                block_weights=T(",".join(str(w) for w in WEIGHTS)), elemental=T(SPEC))
    args.update(kw)
    return lora_node.ElementalLoRA.execute(**args).args


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_patched_weight_equals_formula(env, layout):
    import comfy.lora

    lora_node, model, clip, paths, key_map = env
    new_model, new_clip, report = run(lora_node, model, clip, layout)
    modules = lora_modules(paths[layout], key_map)
    assert len(modules) == 274  # 202 UNet modules, 72 text-encoder ones
    zero, sampled = 0, set()
    for key, (kind, t, alpha) in modules.items():
        s = (STRENGTH_CLIP if key.startswith("clip_l.") else STRENGTH_MODEL) * expected_ratio(key)
        target = patcher_of(new_model, new_clip, key)
        base = patcher_of(model, clip, key).model_state_dict()[key]
        if s == 0:
            assert key not in target.patches, key  # no patch: the sampler gets A's weight itself
            zero += 1
            continue
        (strength, _adapter, strength_model, offset, function), = target.patches[key]
        assert (strength, strength_model, offset, function) == (s, 1.0, None, None), key
        got32 = comfy.lora.calculate_weight(target.patches[key], base.float().clone(), key)
        want32 = formula32(base, kind, t, alpha, s)
        assert torch.equal(got32, want32), f"{layout} {key}: fp32 weight differs from the formula"
        assert_float64_close(base, kind, t, alpha, s, want32, key)
        if block_of(key) not in sampled:
            sampled.add(block_of(key))
            got = merged_weight(target, key)
            assert got.dtype == torch.float16
            assert ((got.float() - want32).abs() <= dtype_ulp(want32, torch.float16)).all(), \
                f"{layout} {key}: > 1 fp16 ulp off"
    assert zero == 12 + 12 + 24  # IN02 and OUT03 (weight 0), BASE:mlp:0
    assert len(sampled) == 26 - 4 - 2  # every block with keys but IN02, OUT03
    assert "OUT05     13  0.1875..0.5625 (2 values)" in report
    assert "BASE      72  0..0.25 (2 values)" in report


def same_patch(a, b) -> bool:
    """Two ModelPatcher patch tuples with the same strengths, offset, function and adapter tensors."""
    return ((a[0], a[2], a[3], a[4]) == (b[0], b[2], b[3], b[4]) and type(a[1]) is type(b[1])
            and all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
                    for x, y in zip(a[1].weights, b[1].weights)))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_keys_at_ratio_one_equal_lora_loader(env, layout):
    lora_node, model, clip, paths, key_map = env
    import nodes as comfy_nodes

    ref_model, ref_clip = comfy_nodes.LoraLoader().load_lora(model, clip, f"test_lora_{layout}.safetensors",
                                                            STRENGTH_MODEL, STRENGTH_CLIP)
    new_model, new_clip, _ = run(lora_node, model, clip, layout, block_weights=None)
    same, differ = [], []
    for key in lora_modules(paths[layout], key_map):
        mine = patcher_of(new_model, new_clip, key).patches.get(key, [])
        (ref,) = patcher_of(ref_model, ref_clip, key).patches[key]
        if expected_ratio(key, weights=False) == 1.0:
            (one,) = mine
            assert same_patch(one, ref), key
            same.append(key)
        else:
            assert not mine or mine[0][0] != ref[0], key
            differ.append(key)
    assert (len(same), len(differ)) == (274 - 30, 4 + 24 + 2)  # OUT05 attn2, BASE mlp, time_embed
    for key in same[::40]:  # the sampler's weights, bit for bit
        assert torch.equal(merged_weight(patcher_of(new_model, new_clip, key), key),
                           merged_weight(patcher_of(ref_model, ref_clip, key), key)), key


@pytest.mark.parametrize("layout", ("loha", "lokr"))
def test_all_ones_has_lora_loaders_patches(env, layout):
    lora_node, model, clip, paths, _ = env
    import nodes as comfy_nodes

    ref_model, ref_clip = comfy_nodes.LoraLoader().load_lora(model, clip, f"test_lora_{layout}.safetensors", 0.75,
                                                            0.5)
    new_model, new_clip, _ = run(lora_node, model, clip, layout, block_weights=lora_node.TextInput("1," * 25 + "1"),
                                 elemental=None)
    for mine, ref in ((new_model, ref_model), (new_clip.patcher, ref_clip.patcher)):
        assert mine.patches.keys() == ref.patches.keys()
        for key in ref.patches:
            (a,), (b,) = mine.patches[key], ref.patches[key]
            assert same_patch(a, b), key


def test_lbw_list_and_keys_it_leaves_at_one(env):
    lora_node, model, clip, paths, key_map = env
    new_model, new_clip, report = run(lora_node, model, clip, "kohya", block_weights=None, elemental=None,
                                      lbw_weights="OUTALL")
    for key in lora_modules(paths["kohya"], key_map):
        block = block_of(key)
        lbw_free = ".time_embed." in key or key.startswith("diffusion_model.out.")
        want = 1.0 if lbw_free or block == "BASE" or block in BLOCKS[17:] else 0.0
        s = (STRENGTH_CLIP if block == "BASE" else STRENGTH_MODEL) * want
        patches = patcher_of(new_model, new_clip, key).patches
        assert (patches[key][0][0] if key in patches else 0.0) == s, key
    assert "IN00       3  0..0.75 (2 values)" in report and "lbw_weights 'OUTALL'" in report


def test_errors(env):
    lora_node, model, clip, _, _ = env
    T = lora_node.TextInput
    with pytest.raises(ValueError, match="give block_weights or lbw_weights, not both"):
        run(lora_node, model, clip, "kohya", lbw_weights="ALL")
    with pytest.raises(ValueError, match="elemental was written for SDXL but the model is SD1.x"):
        run(lora_node, model, clip, "kohya", elemental=T("OUT05:attn2:0", "sdxl"))
    with pytest.raises(ValueError, match="lbw_weights: .*take 17 .* or 26 .*; got 12.*SDXL LoRA form"):
        run(lora_node, model, clip, "kohya", block_weights=None, lbw_weights="1,1,1,1,1,1,1,1,1,1,1,1")
    msg = lora_node.ElementalLoRA.validate_inputs(lbw_weights="1,0,R")
    assert "valid for no architecture" in msg and "'R' is LoRA Block Weight's random value" in msg
    assert lora_node.ElementalLoRA.validate_inputs(lbw_weights="1," * 11 + "0") is True  # SDXL's 12


def test_lora_metadata_attached_as_lora_loader_does(env):
    """The LoRA file's safetensors metadata rides on the patched model and text encoder under the attachment
    name ComfyUI's own LoraLoader uses: the same object LoraLoader attaches on 0.33 (0.3.75's attaches none;
    ours does there too, harmlessly)."""
    import nodes as comfy_nodes
    from safetensors import safe_open

    lora_node, model, clip, paths, _ = env
    new_model, new_clip, _ = run(lora_node, model, clip, "kohya")
    stock_model, stock_clip = comfy_nodes.LoraLoader().load_lora(model, clip, "test_lora_kohya.safetensors",
                                                                 STRENGTH_MODEL, STRENGTH_CLIP)
    with safe_open(paths["kohya"], "pt") as f:
        file_metadata = f.metadata()
    assert file_metadata["elemental_test_layout"] == "kohya"
    for ours, stock in ((new_model, stock_model), (new_clip.patcher, stock_clip.patcher)):
        theirs = stock.get_attachment("lora_metadata") if hasattr(stock, "get_attachment") else None
        assert theirs in (None, file_metadata)
        assert ours.get_attachment("lora_metadata") == file_metadata

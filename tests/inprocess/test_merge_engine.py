"""The ElementalMerge node on real ComfyUI objects: every merged weight against the formula, key by key.

The three test checkpoints are loaded once for the module with ComfyUI's own loader (A at ComfyUI's CPU
defaults: UNet fp32, text encoder fp16; B and C with an fp16 UNet, which holds the file's values exactly and
halves the RAM). The merged weights are computed by ComfyUI's own patch path (`patch_weight_to_device`, what
`patch_model` runs for each key) one key at a time and put back right away, so A is never held twice.

Every key is checked: in full for a sample that holds every layer role (at ratio 0 and not), block and ratio
pair (tests.helpers.calc_oracles.oracle_sample), on 4096 elements spread over the key for the others; the cost is the
float64 formula over 1.1 B values, which made the four modes 8 minutes on a 2-core CPU when every key was
compared in full.

The expected values are computed here from the safetensors files (not from ComfyUI objects) twice:
* with the mode's formula in float64 (independent of how the merge is expressed), within the rounding
  error two or three fp32 operations can make;
* in fp32 in the order ComfyUI applies the patch steps; the UNet (fp32), merged by one fused patch per key,
  must be the float64 formula within fp32 round-off; the fp16 text encoder, which ComfyUI rounds
  stochastically, must be within one fp16 ulp of the fp32 order.
All ratios are dyadic with few bits, so every product is exact and only the additions round.
"""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from tests.helpers.arch_checks import dtype_ulp
from tests.helpers.calc_oracles import assert_sample_covers, oracle_sample
from tests.helpers.pack import pack_module
from tests.helpers.sd1_sources import (ALPHA, BETA, BLOCK_WEIGHTS_ALPHA, BLOCK_WEIGHTS_BETA, UNDEFINED_IN_SD1,
                                         assert_sources_unchanged, file_key, load_models, merged_weight,
                                         reference_ratios)
from tests.helpers.expected_blocks import expected_block

MODES = ["Weight sum", "Add difference", "Triple sum", "Sum twice"]

# The mode formulas in float64, written out here rather than taken from merge_core.
FORMULA = {
    "Weight sum": lambda A, B, C, a, b: A * (1 - a) + B * a,
    "Add difference": lambda A, B, C, a, b: A + (B - C) * a,
    "Triple sum": lambda A, B, C, a, b: A * (1 - a - b) + B * a + C * b,
    "Sum twice": lambda A, B, C, a, b: (A * (1 - a) + B * a) * (1 - b) + C * b,
}
# The same in fp32, rounding where ComfyUI's patch steps round (w = w * strength_model + strength * source).
FP32_ORDER = {
    "Weight sum": lambda A, B, C, a, b: A * (1 - a) + a * B if a != 0 else A,
    "Add difference": lambda A, B, C, a, b: (A + a * B) + (-a) * C if a != 0 else A,
    "Triple sum": lambda A, B, C, a, b: _steps(A, [(B, a, 1 - a - b), (C, b, 1.0)]),
    "Sum twice": lambda A, B, C, a, b: _steps(A, [(B, a, 1 - a), (C, b, 1 - b)]),
}


def _steps(w, steps):
    for src, s, sm in steps:
        if s == 0 and sm == 1:
            continue
        if sm != 1:
            w = w * sm
        w = w + s * src
    return w


# Block weights, NOT on blocks and on elements, ranges, and a later entry overriding an earlier one.
SPEC_ALPHA = """IN01-IN03::0.75
NOT IN04 IN05 M00 BASE:attn1:0.375
OUT03-OUT05:NOT norm:0.625
BASE:layers.1.:0.125
OUT04::1
IN00:time_embed:0"""
SPEC_BETA = """M00::0.5
BASE:NOT mlp:0.125
OUT10-OUT11:proj:0.375"""


@pytest.fixture(scope="module")
def comfy_objects(checkpoint_paths):
    merge_nodes = pack_module("nodes.merge_nodes")
    out = load_models(checkpoint_paths, "ABC", lambda n: {} if n == "A" else {"dtype": torch.float16})
    files = {n: safe_open(checkpoint_paths[n], "pt") for n in "ABC"}
    yield merge_nodes, out, files
    out.clear()


def patched_weights(patcher, prefix):
    """(key, weight as the sampler would see it) for every key under `prefix`, via ComfyUI's patch path."""
    for key in list(patcher.model_state_dict(filter_prefix=prefix).keys()):
        yield key, merged_weight(patcher, key)
    assert not patcher.backup


def run_merge(merge_nodes, objs, mode, **kw):
    T = merge_nodes.TextInput
    (ma, ca), (mb, cb), (mc, cc) = objs["A"], objs["B"], objs["C"]
    args = dict(model_a=ma, model_b=mb, model_c=mc, clip_a=ca, clip_b=cb, clip_c=cc, mode=mode,
                alpha=ALPHA, beta=BETA, print_change=True,
                block_weights_alpha=T(BLOCK_WEIGHTS_ALPHA), block_weights_beta=T(BLOCK_WEIGHTS_BETA),
                elemental_alpha=T(SPEC_ALPHA), elemental_beta=T(SPEC_BETA, "sd1"))
    args.update(kw)
    return merge_nodes.ElementalMerge.execute(**args)


SPREAD = 4096  # elements of every key checked where the full tensor is not: evenly spaced over the whole key


def _spread(t: torch.Tensor) -> torch.Tensor:
    flat = t.reshape(-1)
    return flat[::max(1, flat.numel() // SPREAD)]


def full_check_sample(patcher, prefix, ra, rb) -> set:
    """The keys whose whole tensor is compared with the float64 formula (tests.helpers.calc_oracles.oracle_sample:
    every layer role at ratio 0 and not, every block, a 4-D key of every block, every (alpha, beta) pair,
    every key outside every block); every other key is compared on SPREAD elements spread over it."""
    shapes = {k: tuple(v.shape) for k, v in patcher.model_state_dict(filter_prefix=prefix).items()}
    units = [(k, file_key(k), expected_block("sd1", file_key(k)), shape, ra[k], rb[k])
             for k, shape in shapes.items() if k in ra]
    sample = oracle_sample(units)
    assert_sample_covers(units, sample)
    return sample


def check_patcher(patcher, prefix, files, mode, ra, rb, label):
    """(keys checked, keys checked in full)."""
    checked = full_checks = 0
    sample = full_check_sample(patcher, prefix, ra, rb)
    for key, got in patched_weights(patcher, prefix):
        if not got.is_floating_point() or key.endswith((".position_ids", ".logit_scale")) \
                or key in UNDEFINED_IN_SD1:
            continue
        A, B, C = (files[n].get_tensor(file_key(key)) for n in "ABC")
        a, b = ra[key], rb[key]
        full = key in sample
        if not full:
            A, B, C, got = (_spread(t) for t in (A, B, C, got))
        ordered = FP32_ORDER[mode](A.float(), B.float(), C.float(), a, b)
        # The fp32 order is the formula up to fp32 rounding (checked on a slice of every key: it is a
        # property of the test's arithmetic; the merged weight is compared with the formula below).
        s = [t.flatten()[:4096].double() for t in (A, B, C, ordered)]
        exact = FORMULA[mode](s[0], s[1], s[2], a, b)
        bound = 4 * 2.0 ** -24 * (s[0].abs() + s[1].abs() + s[2].abs())
        assert ((s[3] - exact).abs() <= bound).all(), f"{label} {key}: fp32 order is not the formula"
        if got.dtype == torch.float32:
            # One fused patch per key (in-place lerp_/add_): the formula within fp32 round-off.
            want = FORMULA[mode](A.double(), B.double(), C.double(), a, b)
            tol = 4 * 2.0 ** -24 * (A.double().abs() + B.double().abs() + C.double().abs())
            assert ((got.double() - want).abs() <= tol).all(), \
                f"{label} {key} ({mode}, a={a}, b={b}) differs from the formula by more than fp32 round-off"
        else:
            assert got.dtype == torch.float16
            err = (got.float() - ordered).abs()
            assert (err <= dtype_ulp(ordered, torch.float16)).all(), f"{label} {key}: more than one fp16 ulp off"
        checked += 1
        full_checks += full
    return checked, full_checks


def test_ratios_spot_checks(comfy_objects):
    merge_nodes, objs, _ = comfy_objects
    keys = list(objs["A"][0].model_state_dict(filter_prefix="diffusion_model.").keys())
    keys += list(objs["A"][1].patcher.model_state_dict().keys())
    ra = reference_ratios(keys, SPEC_ALPHA, BLOCK_WEIGHTS_ALPHA, ALPHA)
    assert ra["diffusion_model.input_blocks.1.1.proj_in.weight"] == 0.75            # IN01: range over 0.5
    assert ra["diffusion_model.input_blocks.7.1.transformer_blocks.0.attn1.to_q.weight"] == 0.375  # NOT IN04..
    assert ra["diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"] == 0.125  # block wt
    assert ra["diffusion_model.output_blocks.4.0.in_layers.2.weight"] == 1.0         # overrides OUT03-OUT05
    assert ra["diffusion_model.output_blocks.5.0.in_layers.0.weight"] == 0.625       # NOT norm selects it
    assert ra["diffusion_model.output_blocks.3.1.norm.weight"] == 0.375              # norm: block weight
    assert ra["diffusion_model.time_embed.0.weight"] == 0.0
    assert ra["clip_l.transformer.text_model.encoder.layers.1.mlp.fc1.weight"] == 0.125
    assert ra["clip_l.transformer.text_model.encoder.layers.2.mlp.fc1.weight"] == 0.25  # BASE block weight
    assert ra["clip_l.transformer.text_model.encoder.layers.10.mlp.fc1.weight"] == 0.25


@pytest.mark.parametrize("mode", MODES)
def test_every_weight_equals_formula(comfy_objects, mode):
    merge_nodes, objs, files = comfy_objects
    out = run_merge(merge_nodes, objs, mode)
    model, clip, report = out.args
    assert model is not objs["A"][0] and clip is not objs["A"][1]
    unet_keys = list(objs["A"][0].model_state_dict(filter_prefix="diffusion_model.").keys())
    clip_keys = list(objs["A"][1].patcher.model_state_dict().keys())
    ra = reference_ratios(unet_keys + clip_keys, SPEC_ALPHA, BLOCK_WEIGHTS_ALPHA, ALPHA)
    rb = reference_ratios(unet_keys + clip_keys, SPEC_BETA, BLOCK_WEIGHTS_BETA, BETA)
    n_unet, full_unet = check_patcher(model, "diffusion_model.", files, mode, ra, rb, "UNet")
    n_clip, full_clip = check_patcher(clip.patcher, "clip_l.", files, mode, ra, rb, "text encoder")
    assert 60 < full_unet < 686 // 2 and 10 < full_clip < 196  # the rest on spread elements
    assert n_unet == len(unet_keys) == 686
    assert n_clip == len([k for k in clip_keys if not k.endswith((".position_ids", ".logit_scale"))
                          and k not in UNDEFINED_IN_SD1]) == 196
    # print_change: the report is returned and shown on the node
    assert out.ui == {"text": [report]}
    assert "diffusion_model.output_blocks.4.0.in_layers.2.weight" in report
    recipe = model.model_options["elemental_merge_recipe"]
    assert recipe["mode"] == mode and recipe["sources"]["A"]["name"] == "test_A.safetensors"
    assert recipe["elemental_alpha"] == SPEC_ALPHA


def test_print_change_off_gives_report_without_ui(comfy_objects):
    merge_nodes, objs, _ = comfy_objects
    out = run_merge(merge_nodes, objs, "Weight sum", print_change=False)
    assert out.ui is None and "UNet:" in out.args[2]


@pytest.mark.parametrize("inpaint_side", ["A", "B"])
def test_shape_mismatch_merges_common_channels(comfy_objects, inpaint_side):
    """A 9-channel input conv (inpainting) against a 4-channel one: A 9-channel merges channels 0..3 and
    keeps 4..8; B 9-channel cannot be expressed on A's smaller weight and keeps A's, reported."""
    import comfy.utils

    merge_nodes, objs, files = comfy_objects
    key = "diffusion_model.input_blocks.0.0.weight"
    owner = objs[inpaint_side][0]
    original = comfy.utils.get_attr(owner.model, key)
    extra = torch.linspace(-1, 1, original.shape[0] * 5 * 9).reshape(original.shape[0], 5, 3, 3)
    comfy.utils.set_attr_param(owner.model, key, torch.cat([original, extra.to(original.dtype)], dim=1))
    try:
        out = run_merge(merge_nodes, objs, "Weight sum", elemental_alpha=None, block_weights_alpha=None)
        model, _, report = out.args
        got = dict(patched_weights(model, "diffusion_model.input_blocks.0."))[key]
        A, B = (files[n].get_tensor(file_key(key)).float() for n in "AB")
        if inpaint_side == "A":
            assert got.shape == (320, 9, 3, 3)
            assert torch.equal(got[:, :4], A * (1 - ALPHA) + ALPHA * B)
            assert torch.equal(got[:, 4:], extra)
            assert f"common channels only: {key} (dim 1: 4 of 9)" in report
        else:
            assert torch.equal(got, A)
            assert f"kept from A: {key}" in report and "(320, 9, 3, 3)" in report
    finally:
        comfy.utils.set_attr_param(owner.model, key, original)


def sdxl_model_on_meta():
    """A real ComfyUI SDXL model object, weights on the meta device (no RAM): enough for detection."""
    import comfy.model_patcher
    import comfy.supported_models

    unet_config = {
        "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
        "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4,
        "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
        "channel_mult": [1, 2, 4], "transformer_depth_middle": 10, "use_linear_in_transformer": True,
        "context_dim": 2048, "num_head_channels": 64, "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
        "use_temporal_attention": False, "use_temporal_resblock": False,
    }
    config = comfy.supported_models.SDXL(unet_config)
    config.set_inference_dtype(torch.float16, None)
    model = config.get_model({}, device="meta")
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"),
                                            offload_device=torch.device("cpu"))


def test_mismatched_architectures_name_both(comfy_objects):
    merge_nodes, objs, _ = comfy_objects
    xl = sdxl_model_on_meta()
    with pytest.raises(ValueError) as err:
        run_merge(merge_nodes, objs, "Weight sum", model_b=xl, clip_b=None)
    text = str(err.value)
    assert "SD1.x" in text and "SDXL" in text and "test_A.safetensors" in text and "model_b" in text
    assert not objs["A"][0].patches


def test_sources_unchanged(comfy_objects):
    """Runs last: after every merge above, A, B and C hold their files' values and no patches."""
    _, objs, files = comfy_objects
    assert_sources_unchanged(objs, files, "ABC")

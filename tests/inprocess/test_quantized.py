"""Quantized models in, correct weights out: merges and saves of models ComfyUI 0.33 loads as QuantizedTensor.

Fixtures (devkit.fixtures_quant): the reduced SD3 (2 joint blocks, 13 MiB) as a diffusion model, its Linear
weights quantized by ComfyUI's own fp8 layout, in the per-layer `comfy_quant` format and in the older
scaled-fp8 format, beside plain fp16 files of other seeds. The oracle of every weight is the float64 formula
on the dequantized sources (`fixtures_quant.dequantized`: stored fp8 value times its scale, computed here
from the file, independently of the model). What the live merged key holds (docs/saving.md): A's layer
format; a quantized layer of A is requantized by ComfyUI's `set_weight` (a fresh per-tensor scale, amax /
448, stochastic rounding), so it equals the formula within one fp8 step of its new scale (two just below a power of two, where
ComfyUI's rounding takes the exponent from a float16 log2); a plain layer of A
equals the formula within float32 round-off. The saved file is plain: every weight dequantized.
"""
from __future__ import annotations

import math

import pytest
import torch
from safetensors import safe_open

from tests.helpers.pack import pack_module
from tests.helpers.sd1_sources import merged_weight

ALPHA = 0.25
PREFIX = "diffusion_model."
FP8_MAX = 448.0
FP8_MANTISSA_BITS = 3
FP8_MIN_EXP = -6  # smallest normal exponent of float8_e4m3fn; below it the step is 2**(-6-3)


def _comfy_has_comfy_quant() -> bool:
    pack_module("nodes.engine.model_info")  # imports ComfyUI
    import comfy.utils
    return hasattr(comfy.utils, "detect_layer_quantization")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not _comfy_has_comfy_quant():
        pytest.skip("this ComfyUI (0.3.75) reads no per-layer .comfy_quant keys and loads scaled fp8 as plain fp8 "
                    "weights with separate scales: the QuantizedTensor merge and save need ComfyUI 0.33")
    from devkit import fixtures_quant as fq
    from devkit.checkpoints import SEEDS
    import comfy.sd

    info = pack_module("nodes.engine.model_info")
    out = str(tmp_path_factory.mktemp("quant"))
    files = {("comfy_quant", "A"), ("scaled_fp8", "A"), ("plain", "A"), ("plain", "B"), ("comfy_quant", "B")}
    models, refs = {}, {}
    for fmt, name in sorted(files):
        path = fq.ensure_quant_fixture(out, fmt, name)
        model = comfy.sd.load_diffusion_model(path)
        info.set_source_name(model, f"sd3q_{fmt}_{name}.safetensors")
        models[fmt, name] = model
        refs[fmt, name] = fq.dequantized(fmt, SEEDS[name])
    yield fq, models, refs, out
    models.clear()


def _merge(a, b):
    merge_nodes = pack_module("nodes.merge_nodes")
    return merge_nodes.ElementalMerge.execute(model_a=a, model_b=b, mode="Weight sum", alpha=ALPHA, beta=0.0,
                                              print_change=False).args[0]


def _fp8_step(x: torch.Tensor) -> torch.Tensor:
    """The spacing of float8_e4m3fn values around |x| (x in the quantized units)."""
    exp = torch.floor(torch.log2(x.abs().clamp_min(2.0 ** FP8_MIN_EXP)))
    return torch.pow(2.0, exp - FP8_MANTISSA_BITS)


def _fp8_rounding_bound(x: torch.Tensor) -> torch.Tensor:
    """How far ComfyUI's stochastic fp8 rounding (comfy.float.manual_stochastic_round_to_float8) may land from
    x, in the quantized units: one step of x's binade, since it picks one of the two neighbours. It takes the
    exponent as floor(log2) of x in float16, and that log2 rounds up to the next integer for values just below a
    power of two (255.76 -> log2 8.0): the mantissa is then slightly negative and can floor to one step below
    the lower neighbour (255.76 -> 224). Two steps there."""
    exact = torch.floor(torch.log2(x.abs().clamp_min(2.0 ** FP8_MIN_EXP)))
    as_comfy = torch.floor(torch.log2(x.abs().clamp_min(2.0 ** FP8_MIN_EXP).half())).double()
    return _fp8_step(x) * torch.where(as_comfy > exact, 2.0, 1.0)


def test_fixtures_load_quantized(env):
    fq, models, refs, _ = env
    info = pack_module("nodes.engine.model_info")
    qw = pack_module("nodes.engine.quantized_weights")
    for fmt in ("comfy_quant", "scaled_fp8"):
        model = models[fmt, "A"]
        assert info.quantization(model)[0] == "quant_config", fmt
        entries = pack_module("nodes.engine.comfy_internals").key_patches(model, PREFIX)
        quantized = [k for k, e in entries.items() if qw.is_quantized(e[0][0])]
        assert len(quantized) == len(fq.plain_layout()[1]) > 10, fmt   # every Linear weight
        for k in quantized:
            ref = refs[fmt, "A"][k[len(PREFIX):]]
            assert torch.equal(entries[k][0][0].dequantize().float(), ref), (fmt, k)
    assert info.quantization(models["plain", "A"]) is None


@pytest.mark.parametrize("fmt_a,fmt_b", [("comfy_quant", "plain"), ("plain", "comfy_quant"),
                                         ("scaled_fp8", "plain")])
def test_merge_equals_formula_on_dequantized_sources(env, fmt_a, fmt_b):
    fq, models, refs, _ = env
    qw = pack_module("nodes.engine.quantized_weights")
    a, b = models[fmt_a, "A"], models[fmt_b, "B"]
    merged = _merge(a, b)
    ref_a, ref_b = refs[fmt_a, "A"], refs[fmt_b, "B"]
    counts = {"requantized": 0, "plain": 0}
    for key in merged.patches:
        name = key[len(PREFIX):]
        expect = (ref_a[name].double() * (1 - ALPHA) + ref_b[name].double() * ALPHA)
        got = merged_weight(merged, key)
        if qw.is_quantized(got):
            scale = got.params.scale.double()
            assert math.isclose(scale.item(), expect.abs().max().item() / FP8_MAX, rel_tol=1e-6), key
            err = (got.dequantize().double() - expect).abs()
            bound = _fp8_rounding_bound(expect / scale) * scale + 1e-6 * expect.abs()
            assert (err <= bound).all(), f"{key}: {err.max().item()} off the formula, past ComfyUI's fp8 rounding"
            counts["requantized"] += 1
        else:
            assert got.dtype == torch.float32, key
            tol = 4 * 2.0 ** -24 * (ref_a[name].double().abs() + ref_b[name].double().abs())
            assert ((got.double() - expect).abs() <= tol).all(), f"{key}: not the formula"
            counts["plain"] += 1
    n_linear = len(fq.plain_layout()[1])
    assert counts["requantized"] == (n_linear if fmt_a != "plain" else 0), counts
    assert counts["plain"] + counts["requantized"] == len(merged.patches) and counts["plain"] > 0, counts


def test_merged_quantized_model_samples(env):
    """The live merged model runs its forward pass (the sampler's apply_model) with finite output, and it differs
    from A's: the patches (dequantize, merge, requantize) were applied."""
    import comfy.model_management

    _, models, _, _ = env
    a = models["comfy_quant", "A"]
    merged = _merge(a, models["plain", "B"])
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 16, 16, 16, generator=g)
    t = torch.tensor([0.5])
    cond = {"c_crossattn": torch.randn(1, 8, 4096, generator=g), "y": torch.randn(1, 2048, generator=g)}
    outs = []
    for model in (a, merged):
        comfy.model_management.load_models_gpu([model])
        with torch.no_grad():
            outs.append(model.model.apply_model(x, t, **cond).float())
        comfy.model_management.unload_all_models()
    assert all(torch.isfinite(o).all() for o in outs)
    assert outs[0].shape == x.shape and not torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("fmt_a,fmt_b", [("comfy_quant", "plain"), ("plain", "comfy_quant")])
def test_save_loads_back_plain_with_the_live_weights(env, fmt_a, fmt_b, tmp_path):
    import comfy.sd

    fq, models, _, _ = env
    writer = pack_module("nodes.engine.checkpoint_writer")
    info = pack_module("nodes.engine.model_info")
    qw = pack_module("nodes.engine.quantized_weights")
    merged = _merge(models[fmt_a, "A"], models[fmt_b, "B"])
    path = str(tmp_path / "merged.safetensors")
    writer.save_checkpoint_streaming(path, merged, None, None, "fp32", {})
    plain_keys = sorted("model.diffusion_model." + k for k in fq.plain_layout()[0])
    with safe_open(path, "pt") as f:
        assert sorted(f.keys()) == plain_keys   # no weight_scale / comfy_quant / scale_weight keys
        stored = {k: f.get_tensor(k) for k in f.keys()}
    back = comfy.sd.load_diffusion_model(path)
    assert info.quantization(back) is None
    live = pack_module("nodes.engine.comfy_internals").key_patches(merged, PREFIX)
    back_entries = back.get_key_patches(PREFIX)
    assert sorted(back_entries) == sorted(live)
    for key in live:
        want = merged_weight(merged, key)
        want = qw.dequantized(want, key).float()
        assert stored["model." + key].dtype == torch.float32, key
        assert torch.equal(stored["model." + key], want), f"{key}: the file is not the live weight"
        assert torch.equal(back_entries[key][0][0].float(), want), f"{key}: loaded back differs"


def test_fp16_save_is_the_live_weights_cast(env, tmp_path):
    _, models, _, _ = env
    writer = pack_module("nodes.engine.checkpoint_writer")
    qw = pack_module("nodes.engine.quantized_weights")
    merged = _merge(models["comfy_quant", "A"], models["comfy_quant", "B"])
    path = str(tmp_path / "merged16.safetensors")
    writer.save_checkpoint_streaming(path, merged, None, None, "fp16", {})
    with safe_open(path, "pt") as f:
        for key in pack_module("nodes.engine.comfy_internals").key_patches(merged, PREFIX):
            want = qw.dequantized(merged_weight(merged, key), key).to(torch.float16)
            assert torch.equal(f.get_tensor("model." + key), want), key

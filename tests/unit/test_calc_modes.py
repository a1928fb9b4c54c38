"""Calc modes against independent implementations written here from the formulas of docs/calc-modes.md
(numpy/scipy where those are the definition: percentile "midpoint", scipy.ndimage filters)."""
from __future__ import annotations

import gzip
import itertools
import os

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from merge_core.merge import calc_layout as cl
from merge_core.merge import calc_modes as cm
from merge_core.merge import calc_smooth as cs
from tests.helpers.calc_oracles import (oracle_cosine, oracle_extract, oracle_self, oracle_smooth_add, oracle_stat,
                                oracle_tensor, oracle_train_difference)

KEYLIST_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "merge_core", "arch", "keylists")
SHAPES = [(), (7,), (320,), (5, 3), (12, 130), (130, 12), (6, 5, 3, 3), (8, 4, 1, 1), (2, 1, 5)]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _abc(shape, seed=0, dtype=torch.float32):
    g = _gen(seed)
    A = torch.randn(shape, generator=g)
    B = A + 0.3 * torch.randn(shape, generator=g)
    C = A + 0.2 * torch.randn(shape, generator=g)
    return A.to(dtype), B.to(dtype), C.to(dtype)


def _close(x, y, rtol=2e-6, atol=2e-6):
    assert x.shape == y.shape, (x.shape, y.shape)
    torch.testing.assert_close(x.to(torch.float32), y.to(torch.float32), rtol=rtol, atol=atol)


# ------------------------------------------------------------------ the table and the rules

def test_choices_in_issue_order():
    assert cm.CALC_MODE_NAMES == ("normal", "cosineA", "cosineB", "trainDifference", "smoothAdd", "extract",
                                  "tensor", "tensor2", "self")


VALID = {"normal": {"Weight sum", "Add difference", "Triple sum", "Sum twice"},
         "cosineA": {"Weight sum"}, "cosineB": {"Weight sum"}, "tensor": {"Weight sum"},
         "tensor2": {"Weight sum"}, "self": {"Weight sum"}, "trainDifference": {"Add difference"},
         "smoothAdd": {"Add difference"}, "extract": {"Add difference"}}


@pytest.mark.parametrize("merge_mode,calc", itertools.product(
    ["Weight sum", "Add difference", "Triple sum", "Sum twice"], list(VALID)))
def test_pairs(merge_mode, calc):
    if merge_mode in VALID[calc]:
        cm.check_pair(merge_mode, calc)
        return
    with pytest.raises(ValueError) as exc:
        cm.check_pair(merge_mode, calc)
    text = str(exc.value)
    assert repr(calc) in text and repr(merge_mode) in text
    assert "Weight sum: cosineA, cosineB, tensor, tensor2, self" in text
    assert "Add difference: trainDifference, smoothAdd, extract" in text


def test_table_flags():
    assert {n for n, m in cm.CALC_MODES.items() if m.uses_beta} == {"tensor", "tensor2", "extract"}
    assert {n for n, m in cm.CALC_MODES.items() if m.needs_c} == {"trainDifference", "smoothAdd", "extract"}
    assert {n for n, m in cm.CALC_MODES.items() if m.layout_dependent} == {
        "cosineA", "cosineB", "smoothAdd", "extract", "tensor", "tensor2"}
    with pytest.raises(ValueError, match="unknown calc mode 'cosine'.*normal, cosineA"):
        cm.get_calc_mode("cosine")


@pytest.mark.parametrize("calc", ["tensor", "tensor2", "extract"])
def test_bounds_name_the_block(calc):
    cm.check_ratios(calc, 0.0, 1.0, "block OUT05")
    for a, b in ((-0.1, 0.2), (0.5, 1.5)):
        with pytest.raises(ValueError, match=f"'{calc}'.*within \\[0, 1\\].*block OUT05"):
            cm.check_ratios(calc, a, b, "block OUT05")
    cm.check_ratios("cosineA", -2.0, 3.0, "block OUT05")  # unbounded modes accept anything


def test_gamma_range():
    cm.check_gamma("extract", 0.0)
    cm.check_gamma("extract", 20.0)
    with pytest.raises(ValueError, match="gamma"):
        cm.check_gamma("extract", -0.5)
    cm.check_gamma("tensor", -0.5)  # gamma is extract's only


def test_applies_and_keeps_a():
    mode = cm.CALC_MODES
    key = "model.diffusion_model.output_blocks.5.1.proj_out.weight"
    assert cm.calc_applies(mode["cosineA"], key, "OUT05")
    assert not cm.calc_applies(mode["cosineA"], key, None)  # outside every block
    assert not cm.calc_applies(mode["cosineA"], "cond_stage_model.model.text_projection", "BASE")
    assert not cm.calc_applies(mode["cosineA"], "cond_stage_model.model.positional_embedding", "BASE")
    assert cm.keeps_a(mode["self"], key, "OUT05", 0.5, 0)            # proj_out
    assert not cm.keeps_a(mode["self"], key.replace("proj_out", "proj_in"), "OUT05", 0.5, 0)
    assert cm.keeps_a(mode["self"], key.replace("proj_out", "proj_in"), "OUT05", 0.0, 0)
    assert not cm.keeps_a(mode["cosineA"], key, "OUT05", 0.0, 0)     # ratio 0 changes the key
    assert not cm.keeps_a(mode["cosineB"], key, "OUT05", 0.0, 0)
    assert not cm.keeps_a(mode["extract"], key, "OUT05", 0.0, 0.0)
    assert cm.keeps_a(mode["trainDifference"], key, "OUT05", 0.0, 0.7)
    assert cm.keeps_a(mode["smoothAdd"], key, "OUT05", 0.0, 0.7)
    assert cm.keeps_a(mode["tensor"], key, "OUT05", 0.0, 0.7)
    assert not cm.keeps_a(mode["tensor"], key, "OUT05", 0.1, 0.95)


@pytest.mark.parametrize("calc", [m for m in cm.CALC_MODE_NAMES if m != "normal"])
def test_keeps_a_is_true(calc):
    """Where the table says ratio 0 keeps A, the computed tensor is A bit for bit."""
    mode = cm.CALC_MODES[calc]
    args = cm.CalcArgs(key="x.weight", stat=cm.CosineStat(-0.5, 0.9, 10))
    for shape in SHAPES:
        A, B, C = _abc(shape, 3)
        for a, b in ((0.0, 0.0), (0.0, 0.6), (1.0, 0.0)):
            if mode.keeps_a(a, b):
                assert torch.equal(cm.calc_merge(calc, A, B, C, a, b, args), A), (shape, a, b)


# ------------------------------------------------------------------ per-key exactness

@pytest.mark.parametrize("calc", ["cosineA", "cosineB"])
def test_cosine(calc):
    pairs = [_abc(s, i)[:2] for i, s in enumerate(SHAPES)]
    pairs.append((torch.zeros(4, 3), torch.randn(4, 3, generator=_gen(9))))  # NaN-free zero columns
    stat = cm.cosine_statistic(pairs, calc)
    smin, smax = oracle_stat(pairs, calc)
    assert (stat.smin, stat.smax) == (smin, smax)
    for (A, B), a in itertools.product(pairs[:-1], (0.0, 0.3, -0.4, 1.2)):
        got = cm.calc_merge(calc, A, B, None, a, 0.0, cm.CalcArgs(stat=stat))
        _close(got, oracle_cosine(A, B, a, smin, smax, calc))
    A, B = pairs[-1]  # all zeros in A: the formula's NaN is replaced by A's weight
    assert torch.isnan(oracle_cosine(A, B, 0.3, smin, smax, calc)).all()
    assert torch.equal(cm.calc_merge(calc, A, B, None, 0.3, 0.0, cm.CalcArgs(stat=stat)), A)


def test_cosine_statistic_trims_like_numpy():
    """Many values, ties at the percentiles and NaNs: the trimming matches numpy exactly."""
    g = _gen(5)
    values = torch.cat([torch.randn(5001, generator=g), torch.full((40,), 0.25), torch.tensor([float("nan")] * 3)])
    stat = cm.trimmed_range(values)
    v = values.double().numpy()
    v = v[~np.isnan(v)]
    v = np.delete(v, np.where(v < np.percentile(v, 1, method="midpoint")))
    v = np.delete(v, np.where(v > np.percentile(v, 99, method="midpoint")))
    assert (stat.smin, stat.smax, stat.count) == (v.min(), v.max(), v.size)


def test_stat_cache_computes_once():
    cache = cm.StatCache(size=2)
    calls = []
    compute = lambda: calls.append(1) or cm.CosineStat(0.0, 1.0, 1)  # noqa: E731
    for _ in range(3):
        cache.get("cosineA", ("a", "b"), compute)
    assert len(calls) == 1 and cache.misses == 1
    cache.get("cosineB", ("a", "b"), compute)
    cache.get("cosineA", ("a", "c"), compute)
    cache.get("cosineA", ("a", "b"), compute)  # evicted by the LRU (size 2)
    assert len(calls) == 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_train_difference(dtype):
    for shape in SHAPES:
        A, B, C = _abc(shape, 1, dtype)
        B.view(-1)[:1] = A.view(-1)[:1]  # a zero |B - A|
        for a in (0.0, 0.4, -0.7):
            _close(cm.calc_merge("trainDifference", A, B, C, a, 0), oracle_train_difference(A, B, C, a))
        assert torch.equal(cm.calc_merge("trainDifference", A, B, B.clone(), 0.5, 0), A.float())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_smooth_add(dtype):
    for shape in SHAPES + [(1, 77), (3, 3, 3, 3), (40, 9, 3, 3)]:
        A, B, C = _abc(shape, 2, dtype)
        _close(cm.calc_merge("smoothAdd", A, B, C, 0.7, 0), oracle_smooth_add(A, B, C, 0.7))


def test_smooth_filters_match_scipy_bitwise_and_slab():
    """Both filters equal scipy's bit for bit, also when the median works in slabs of rows."""
    x = torch.randn(37, 11, 3, 3, generator=_gen(4))
    old = cs.MEDIAN_SLAB_ELEMENTS
    cs.MEDIAN_SLAB_ELEMENTS = 81 * 99 * 2  # forces 2-row slabs
    try:
        med = cs.median_filter3(x)
    finally:
        cs.MEDIAN_SLAB_ELEMENTS = old
    assert torch.equal(med, torch.from_numpy(ndi.median_filter(x.numpy(), size=3)))
    assert torch.equal(cs.gaussian_filter(x), torch.from_numpy(ndi.gaussian_filter(x.numpy(), sigma=1)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_extract(dtype):
    for shape, gamma in itertools.product(SHAPES, (0.0, 0.3, 4.0)):
        A, B, C = _abc(shape, 6, dtype)
        for a, b in ((0.0, 0.0), (0.3, 0.8), (1.0, 1.0)):
            got = cm.calc_merge("extract", A, B, C, a, b, cm.CalcArgs(gamma=gamma))
            _close(got, oracle_extract(A, B, C, a, b, gamma))


@pytest.mark.parametrize("calc", ["tensor", "tensor2"])
def test_tensor_swaps(calc):
    for shape in SHAPES + [(300, 4), (4, 300), (50, 200, 1, 1)]:
        A, B, _ = _abc(shape, 7)
        for a, b in ((0.0, 0.3), (0.25, 0.5), (0.5, 0.5), (0.7, 0.6), (1.0, 1.0), (0.33, 0.0)):
            got = cm.calc_merge(calc, A, B, None, a, b)
            assert torch.equal(got, oracle_tensor(A, B, a, b, calc == "tensor2")), (shape, a, b)


def test_self():
    A = torch.randn(4, 3, generator=_gen(8)).half()
    for name in ("model.diffusion_model.input_blocks.1.1.proj_in.weight",
                 "model.diffusion_model.input_blocks.1.1.proj_out.weight",
                 "model.diffusion_model.input_blocks.1.1.norm.bias",
                 "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.weight",
                 "cond_stage_model.model.transformer.resblocks.0.ln_1.weight"):
        for a in (0.0, 0.5, 2.0):
            got = cm.calc_merge("self", A, None, None, a, 0, cm.CalcArgs(key=name))
            assert torch.equal(got, oracle_self(A, a, name)), (name, a)


def test_missing_inputs_are_named():
    A, B, C = _abc((3,), 0)
    with pytest.raises(ValueError, match="needs model C for k.weight"):
        cm.calc_merge("extract", A, B, None, 0.5, 0.5, cm.CalcArgs(key="k.weight"))
    with pytest.raises(ValueError, match="statistic"):
        cm.calc_merge("cosineA", A, B, None, 0.5, 0)


# ------------------------------------------------------------------ OpenCLIP layout

def _comfy_keys(name):
    with gzip.open(os.path.join(KEYLIST_DIR, f"{name}.comfy.txt.gz"), "rt") as f:
        return [line.strip() for line in f if line.strip()]


@pytest.mark.parametrize("arch,prefix", [("sd2", "clip_h."), ("sdxl", "clip_g.")])
def test_layout_units(arch, prefix):
    keys = _comfy_keys(arch)
    units = cl.layout_units(keys, arch)
    fused = [u for u in units if u.kind == cl.FUSED]
    transposed = [u for u in units if u.kind == cl.TRANSPOSED]
    layers = {k.split(".")[5] for k in keys if k.startswith(prefix + "transformer.text_model.encoder.layers.")}
    assert len(fused) == 2 * len(layers)  # in_proj weight and bias per layer
    for u in fused:
        assert [k.split(".")[-2] for k in u.keys] == ["q_proj", "k_proj", "v_proj"]
        assert u.name.endswith(("attn.in_proj_weight", "attn.in_proj_bias"))
    assert [u.keys for u in transposed] == [(prefix + "transformer.text_projection.weight",)]
    assert sum(len(u.keys) for u in units) == len(keys)
    assert not [u for u in cl.layout_units(_comfy_keys("sd1"), "sd1") if u.kind != cl.PLAIN]


def test_layout_round_trip():
    unit = cl.LayoutUnit("m.attn.in_proj_weight", ("q", "k", "v"), cl.FUSED)
    q, k, v = (torch.randn(4, 6, generator=_gen(i)) for i in range(3))
    fused = cl.to_checkpoint(unit, [q, k, v])
    assert torch.equal(fused[4:8], k)
    assert all(torch.equal(x, y) for x, y in zip(cl.from_checkpoint(unit, fused), (q, k, v)))
    assert torch.equal(cl.part_of(unit, "v", fused), v)
    proj = cl.LayoutUnit("m.text_projection", ("p",), cl.TRANSPOSED)
    w = torch.randn(5, 3, generator=_gen(4))
    assert torch.equal(cl.to_checkpoint(proj, [w]), w.T)
    assert torch.equal(cl.from_checkpoint(proj, cl.to_checkpoint(proj, [w]))[0], w)


def test_tensor_on_checkpoint_layout_differs_from_split():
    """Why layout matters: tensor's dim-0 slice of fused q/k/v is not the slices of q, k and v."""
    unit = cl.LayoutUnit("m.attn.in_proj_weight", ("q", "k", "v"), cl.FUSED)
    A = [torch.zeros(4, 2) for _ in range(3)]
    B = [torch.ones(4, 2) for _ in range(3)]
    fused = cm.calc_merge("tensor", cl.to_checkpoint(unit, A), cl.to_checkpoint(unit, B), None, 1 / 3, 0.0)
    q, k, v = cl.from_checkpoint(unit, fused)
    assert torch.equal(q, torch.ones(4, 2)) and torch.equal(k, torch.zeros(4, 2))


# ------------------------------------------------------------------ the XY plot's calc mode axis

def test_calc_mode_axis():
    from merge_core.plot import axes as pa

    axis = pa.parse_axis(pa.CALC, "normal, cosineA\ntensor2", None, "x_values")
    assert [i.value for i in axis.items] == ["normal", "cosineA", "tensor2"]
    with pytest.raises(pa.AxisError, match="x_values line 2: unknown calc mode 'cosine'"):
        pa.parse_axis(pa.CALC, "normal\ncosine", None, "x_values")
    base = pa.Settings(0.5, 0.25)
    cells = pa.build_cells(base, axis, pa.parse_axis(pa.ALPHA, "0.1, 0.2", None, "y_values"))
    assert [(c.settings.calc_mode, c.settings.alpha) for c in cells] == [
        ("normal", 0.1), ("cosineA", 0.1), ("tensor2", 0.1), ("normal", 0.2), ("cosineA", 0.2), ("tensor2", 0.2)]
    assert "calc_mode=cosineA" in cells[1].settings.describe() and "calc_mode" not in cells[0].settings.describe()


def test_train_difference_zero_mask_equals_masked_fill_bit_for_bit():
    """trainDifference zeroes its scale where |B-C| + |B-A| is 0 with an int mask of the bit patterns: the
    bits of `masked_fill_(total == 0, 0.0)`, with signed zeros, subnormals, infinities and NaNs in the
    sources."""
    g = torch.Generator().manual_seed(3)
    n = 4096
    A, B, C = (torch.randn(n, generator=g) for _ in range(3))
    B[::5] = A[::5]          # |B-A| = 0
    C[::7] = B[::7]          # |B-C| = 0
    C[::35] = A[::35] = B[::35]  # both 0: 0/0
    A[1::11], B[2::13], C[3::17] = -0.0, 1e-42, float("inf")
    B[4::19], A[5::23], C[6::29] = float("nan"), float("-inf"), -1e-40
    for a in (0.0, 0.3, 1.0):
        diff = B - C
        d1 = (B - A).abs()
        total = diff.abs() + d1
        want = (d1 / total).masked_fill_(total == 0, 0.0).mul_(diff).mul_(a * 1.8).add_(A)
        got = cm.train_difference_values(A, B, C, a, 0.0, cm.CalcArgs())
        assert torch.equal(got.view(torch.int32), want.view(torch.int32)), a

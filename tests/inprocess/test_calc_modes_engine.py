"""Every calc mode through ElementalMerge on real ComfyUI objects (SD1.5 test checkpoints), every merged UNet
and text-encoder weight against the formulas of docs/calc-modes.md, written in tests/helpers/calc_oracles.py.

Models: A and B loaded with an fp16 UNet (the files' values exactly; halves the RAM); C is A merged with B
half and half *as a ComfyUI patch* (a clone of A with B's patches at 0.5/0.5), so no third checkpoint is
loaded and every three-model mode also reads a source that is itself a merge. Its weight, as ComfyUI
evaluates such a source, is ``A * 0.5 + 0.5 * B`` in float32, which the oracle uses.

Ratios: block weights and specs give different alpha and beta in different blocks (all within [0, 1], so
tensor/tensor2/extract accept them). The merged weights are stored in fp16: each must be within one fp16
ulp of the oracle's float32 value (the rounding of the float32 result; the float32 computations themselves
agree to round-off). The engine's cosine statistic and the oracle's are over every key. Every mode
(SAMPLED_CALCS) checks tests.helpers.calc_oracles.oracle_sample's fixed sample: every key outside every block, one key
of each layer role (conv, attention q/k/v/out, norms, ...) at ratio 0 and not, of each block (and one 4-D key
of each; not for smoothAdd), of each (alpha, beta) pair, the smallest of each for smoothAdd (its scipy oracle
over every convolution takes minutes: 155 s on one key of each group). smoothAdd's oracle of the few largest
tensors (calc_oracles.smooth_columns: the 640/1280-channel convolutions, the token embedding) is computed
exactly and compared on three windows of 16 columns (the first, a middle and the last; every row and kernel
position), its filters being local (test_smooth_add_oracle_windows_equal_whole_tensor); at ratio 0 every
element is compared with A, the formula's value there (no filter to run).

Cost: the oracle's two cosine statistics are computed in one pass over the models, once per module
(oracle_cosine_stats); test_cosine_statistic_is_cached runs before the oracle tests, so the engine computes
each statistic once in the module and the oracle tests check the cached values against the oracle's. The ulp
check (calc_oracles.over_one_fp16_ulp) computes the fp16 ulp only where the error exceeds a lower bound of it:
the same verdict as comparing with dtype_ulp everywhere (test_fp16_ulp_checks_equal_dtype_ulp).
"""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from tests.helpers.arch_checks import dtype_ulp
from tests.helpers.calc_oracles import (CALC_MODE_OF, CALC_SPEC_BETA, GAMMA, SAMPLED_CALCS, assert_sample_covers,
                                fp16_ulp, oracle_sample, oracle_smooth_add, oracle_stats, oracle_weight,
                                over_one_fp16_ulp, smooth_columns)
from tests.helpers.pack import pack_module
from tests.helpers.sd1_sources import (UNDEFINED_IN_SD1, assert_sources_unchanged, both_ratios, file_key, keys_of,
                                         load_models, merged_weight, run_calc_merge,
                                         with_half_merge_c)
from tests.helpers.expected_blocks import expected_block

CALC = CALC_MODE_OF
SPEC_ALPHA = """IN01-IN03::0.75
OUT03-OUT05:NOT norm:0.625
BASE:layers.1.:0.125
OUT04::1
IN00:time_embed:0"""
SPEC_BETA = CALC_SPEC_BETA


@pytest.fixture(scope="module")
def objs(checkpoint_paths):
    merge_nodes = pack_module("nodes.merge_nodes")
    out = with_half_merge_c(load_models(checkpoint_paths, "AB", lambda _name: {"dtype": torch.float16}))
    files = {n: safe_open(checkpoint_paths[n], "pt") for n in "AB"}
    yield merge_nodes, out, files
    out.clear()


@pytest.fixture(scope="module")
def oracle_cosine_stats(objs):
    """mode -> the oracle's cosine statistic over every key: both modes in one pass, on first use."""
    stats = {}

    def get(mode):
        if not stats:
            _, models, files = objs
            unet_keys, clip_keys = keys_of(models)
            pairs = ((A, tensor(models, files, "B", k)) for k in unet_keys + clip_keys
                     for A in (tensor(models, files, "A", k),) if A.is_floating_point())
            stats.update(oracle_stats(pairs, ("cosineA", "cosineB")))
        return stats[mode]
    return get


def tensor(objs, files, name, key):
    """A key's weight in model ``name``: from the file; ComfyUI-made keys (text_projection, logit_scale) from
    the loaded model; C as ComfyUI evaluates the patched clone."""
    if name == "C":
        A, B = tensor(objs, files, "A", key), tensor(objs, files, "B", key)
        return A.float() * 0.5 + 0.5 * B.float()
    fk = file_key(key)
    if fk in files[name].keys():
        return files[name].get_tensor(fk)
    patcher = objs[name][0] if key.startswith("diffusion_model.") else objs[name][1].patcher
    return patcher.model_state_dict()[key].detach().clone()


def run(merge_nodes, models, calc, **kw):
    return run_calc_merge(merge_nodes, models, calc, SPEC_ALPHA, SPEC_BETA, "sd1", **kw)


def test_cosine_statistic_is_cached(objs):
    """Runs before test_every_weight_equals_oracle, which then merges with the statistics cached here (and
    checks them against the oracle's)."""
    import importlib

    merge_nodes, models, _ = objs
    cm = importlib.import_module(merge_nodes.__name__.rsplit(".", 2)[0] + ".merge_core.merge.calc_modes")  # the pack's

    before = cm.STAT_CACHE.misses
    cm.STAT_CACHE.clear()
    run(merge_nodes, models, "cosineA", alpha=0.3)
    run(merge_nodes, models, "cosineA", alpha=0.6)
    run(merge_nodes, models, "cosineB", alpha=0.6)
    assert cm.STAT_CACHE.misses - before == 2  # one per statistic (cosineA, cosineB), not per merge


@pytest.mark.parametrize("calc", list(CALC))
def test_every_weight_equals_oracle(objs, oracle_cosine_stats, calc):
    merge_nodes, models, files = objs
    model, clip, report = run(merge_nodes, models, calc).args
    unet_keys, clip_keys = keys_of(models)
    ra, rb = both_ratios(unet_keys + clip_keys, SPEC_ALPHA, SPEC_BETA)
    assert len(set(ra.values())) >= 6 and len(set(rb.values())) >= 4
    stat = oracle_cosine_stats(calc) if calc.startswith("cosine") else None  # over every key, as the engine's
    work = [(model, k) for k in unet_keys] + [(clip.patcher, k) for k in clip_keys if k not in UNDEFINED_IN_SD1]
    if calc in SAMPLED_CALCS:
        shapes = {k: tuple(v.shape) for p in (model, clip.patcher) for k, v in p.model_state_dict().items()}
        units = [(k, file_key(k), expected_block("sd1", file_key(k)), shapes[k], ra[k], rb[k]) for _, k in work]
        subset = oracle_sample(units, smallest=calc == "smoothAdd")
        work = [(p, k) for p, k in work if k in subset]
        assert_sample_covers(units, subset)
        conv_blocks = {expected_block("sd1", file_key(k)) for _, k in work if len(shapes[k]) == 4}
        assert len(conv_blocks) == 25 if calc != "smoothAdd" else len(conv_blocks) >= 5
    checked = changed = skipped = windowed = 0
    for patcher, key in work:
        if key in UNDEFINED_IN_SD1:
            skipped += 1
            continue
        got = merged_weight(patcher, key)
        A, B, C = (tensor(models, files, n, key) for n in "ABC")
        if not A.is_floating_point():
            skipped += 1
            continue
        columns = smooth_columns(A.shape, ra[key]) if calc == "smoothAdd" else None
        want = oracle_weight(calc, "sd1", file_key(key), A, B, C, ra[key], rb[key], stat, columns=columns)
        assert got.shape == A.shape, key
        windowed += columns is not None
        err = ((got if columns is None else got[:, columns]).float() - want).abs()
        # fp16 weights: one fp16 ulp of the float32 result; float32 ones (logit_scale): float32 round-off
        over = over_one_fp16_ulp(err, want) if got.dtype == torch.float16 else ~(err <= 2.0 ** -22 * want.abs())
        assert not over.any(), f"{calc} {key}: max error {err.max().item()}"
        changed += not torch.equal(got, A.to(got.dtype))
        checked += 1
    assert checked + skipped == len(work) and checked > (60 if calc in SAMPLED_CALCS else 150)
    assert windowed <= 8 if calc == "smoothAdd" else windowed == 0  # the few largest tensors only
    assert changed > len(work) // 3, f"{calc}: only {changed} of {checked} keys changed"
    assert f"calc mode: {calc}" in report
    recipe = pack_module("nodes.engine.model_info").recipe_of(model)
    assert recipe["calc_mode"] == calc and recipe["calc_option"] == GAMMA


@pytest.mark.parametrize("shape", [(640, 96, 3, 3), (96, 200, 1, 1), (70, 3000), (9, 160, 3, 3)])
def test_smooth_add_oracle_windows_equal_whole_tensor(shape):
    """The smoothAdd oracle on smooth_columns' windows equals the same columns of the whole-tensor oracle
    (float32 bit for bit: the filters are local and the windows carry their halo)."""
    g = torch.Generator().manual_seed(7)
    A, B, C = (torch.randn(shape, generator=g).to(torch.float16) for _ in range(3))
    w = 16
    columns = list(range(w)) + list(range(shape[1] // 2 - w // 2, shape[1] // 2 + w // 2)) \
        + list(range(shape[1] - w, shape[1]))
    whole = oracle_smooth_add(A, B, C, 0.625)
    assert torch.equal(oracle_smooth_add(A, B, C, 0.625, columns), whole[:, columns])
    assert torch.equal(oracle_smooth_add(A, B, C, 0, columns), A.float()[:, columns])
    big = (1280, 1280, 3, 3)
    assert smooth_columns(big, 0.5) == list(range(w)) + list(range(632, 648)) + list(range(1264, 1280))
    assert smooth_columns(big, 0) is None and smooth_columns((320, 320, 3, 3), 0.5) is None


def test_fp16_ulp_checks_equal_dtype_ulp():
    """fp16_ulp is dtype_ulp(x, float16) at every fp16 value, every midpoint and its float32 neighbours; and
    over_one_fp16_ulp flags exactly the elements that comparing with dtype_ulp flags (NaN included)."""
    every = torch.arange(2 ** 16, dtype=torch.int32).to(torch.int16).view(torch.float16).float()
    finite = every[torch.isfinite(every)].sort().values
    mids = (finite[:-1] + finite[1:]) / 2
    inf = torch.tensor(float("inf"))
    x = torch.cat([every, mids, torch.nextafter(mids, inf), torch.nextafter(mids, -inf), torch.tensor([7e4, -7e4])])
    ref = dtype_ulp(x, torch.float16)
    assert torch.equal(fp16_ulp(x).nan_to_num(-1), ref.float().nan_to_num(-1))
    g = torch.Generator().manual_seed(3)
    for scale in (0.5, 1.0, 2.0):
        err = torch.rand(x.shape, generator=g) * scale * ref.float().nan_to_num(1)
        err[::7] = ref[::7].float()
        err[::11] = torch.nextafter(ref[::11].float(), inf)
        err[::13] = float("nan")
        assert torch.equal(over_one_fp16_ulp(err, x), ~(err.double() <= ref))


def test_bounded_ratio_from_spec_names_block(objs):
    merge_nodes, models, _ = objs
    T = merge_nodes.TextInput
    with pytest.raises(ValueError, match=r"'tensor'.*\[0, 1\].*OUT05"):
        run(merge_nodes, models, "tensor", elemental_alpha=T("OUT05::1.5"))


def test_sources_unchanged(objs):
    """Runs last: A and B hold their files' values and no patches; C only its own 0.5/0.5 patches."""
    _, models, files = objs
    assert_sources_unchanged(models, files, "AB")
    mc = models["C"][0]
    assert all(len(v) == 1 and v[0][0] == 0.5 for v in mc.patches.values())


def test_incremental_remerge_follows_the_calc_mode(objs):
    """The XY plot's engine: a cell that changes the calc mode re-merges every key it patches; the same cell
    again re-merges nothing; moving one block's ratio under a calc mode re-merges only that block's keys."""
    merge_nodes, models, _ = objs
    remerge = pack_module("nodes.engine.remerge")
    (ma, ca), (mb, cb) = models["A"], models["B"]
    merge = remerge.IncrementalMerge(ma, mb, None, "Weight sum", ca, cb)
    keys = merge.keys
    assert len(merge.apply(lambda k: 0.5, lambda k: 0.25)) == len(keys)
    tensor = merge.calc_for("tensor")
    changed = merge.apply(lambda k: 0.5, lambda k: 0.25, calc=tensor)
    assert len(changed) > len(keys) * 0.9  # every key tensor changes (weights and biases in blocks)
    assert merge.apply(lambda k: 0.5, lambda k: 0.25, calc=merge.calc_for("tensor")) == set()
    in_out05 = {k for k in keys if ".output_blocks.5." in k}
    ratio = lambda k: 0.75 if k in in_out05 else 0.5  # noqa: E731
    assert merge.apply(ratio, lambda k: 0.25, calc=tensor) == in_out05
    assert len(merge.apply(ratio, lambda k: 0.25, calc=merge.calc_for("tensor", 0.9))) > len(keys) * 0.9  # option
    with pytest.raises(ValueError, match="'extract'.*'Weight sum'"):
        merge.calc_for("extract")

"""The magnitude selections of the task-vector methods on tensors large enough for their bit-pattern paths
(`task_vectors.RADIX_MIN` elements and more): the same values and ranks as torch.kthvalue and a stable sort
of the float magnitudes, ties, zeros, subnormals, infinities and NaNs included."""
from __future__ import annotations

import pytest
import torch

from merge_core.merge import task_vectors as tv

N = tv.RADIX_MIN + 1234


def _magnitudes(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(N, generator=g) * 0.01
    if kind == "ties":
        x = torch.round(x * 300) / 300
    elif kind == "zeros":
        x = torch.where(torch.rand(N, generator=g) < 0.6, 0.0, x)
    elif kind == "subnormal":
        x = torch.randint(0, 4, (N,), generator=g) * 1e-40
    elif kind == "special":
        x[::5] = float("inf")
        x[1::7] = float("nan")
        x[2::11] = -0.0
    return x.abs()


KINDS = ("plain", "ties", "zeros", "subnormal", "special")


@pytest.mark.parametrize("kind", KINDS)
def test_kth_smallest_equals_kthvalue(kind):
    values = _magnitudes(kind)
    ks = (1, 2, N // 5, N // 2, N - 7, N)
    for k, got in zip(ks, tv._kth_smallest(values, *ks)):
        want = torch.kthvalue(values, k).values
        assert (got.isnan() and want.isnan()) or torch.equal(got, want), (kind, k)


@pytest.mark.parametrize("kind", KINDS)
def test_magnitude_ranks_equal_the_stable_float_sort(kind):
    delta = _magnitudes(kind) * torch.where(torch.arange(N) % 3 == 0, -1.0, 1.0)
    order = torch.argsort(delta.abs(), stable=True)
    want = torch.empty_like(order)
    want[order] = torch.arange(N)
    assert torch.equal(tv.magnitude_ranks(delta), want)


@pytest.mark.parametrize("kind", ("plain", "ties", "zeros", "subnormal"))
def test_trim_and_breadcrumbs_keep_what_the_sort_ranks_give(kind):
    delta = (_magnitudes(kind) * torch.where(torch.arange(N) % 2 == 0, -1.0, 1.0)).view(-1, 10)
    flat = delta.flatten()
    r = tv.magnitude_ranks(flat)
    n = flat.numel()
    for density, outliers in ((0.2, 0.01), (0.5, 0.2), (0.9, 0.0)):
        large, keep = round(outliers * n), min(round(density * n), n - round(outliers * n))
        want = torch.where((r >= n - large - keep) & (r < n - large), flat, 0.0)
        got = tv.breadcrumbs_mask(delta, density, outliers).flatten()
        assert torch.equal(got, want)
        k = round(density * n)
        threshold = torch.kthvalue(flat.abs(), n - k + 1).values
        want = flat * (flat.abs() >= threshold)
        assert torch.equal(tv.trim_top(flat, density), want)


def _same_bits(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal bit for bit: a -0 is not a +0, and a NaN equals the same NaN."""
    return got.shape == want.shape and torch.equal(got.view(torch.int32), want.view(torch.int32))


def _signed(kind: str) -> torch.Tensor:
    return _magnitudes(kind) * torch.where(torch.arange(N) % 3 == 0, -1.0, 1.0)


@pytest.mark.parametrize("kind", KINDS)
def test_trim_by_bit_pattern_equals_the_boolean_mask(kind):
    """The trim's int32 comparison keeps and zeroes (signed) what `delta * (|delta| >= threshold)` does."""
    delta = _signed(kind)
    finite = delta.abs()[delta.abs().isfinite()]
    for threshold in (0.0, float(finite.min()), float(finite.median()), float(finite.max()), 1e-41, 5.0):
        t = torch.tensor(threshold)
        want = delta * (delta.abs() >= t)
        assert _same_bits(tv._trimmed(delta, tv._trim_cut(t)), want), (kind, threshold)


@pytest.mark.parametrize("kind", KINDS)
def test_drop_by_bit_pattern_equals_where(kind):
    """DARE's and DELLA's masks: `torch.where(draw < keep, scaled, 0.0)`, a dropped NaN or inf included, for
    one keep for the key and a keep per element (0, subnormal and 1 among them)."""
    scaled = _signed(kind)
    g = torch.Generator().manual_seed(7)
    draw = torch.rand(N, generator=g)
    draw[::13] = 0.0
    per_element = torch.rand(N, generator=g)
    per_element[::5], per_element[1::7], per_element[2::11] = 0.0, 1.0, 1e-42
    per_element[3::17] = draw[3::17]
    for keep in (0.1, 0.5, 1.0, float(draw[3]), per_element):
        want = torch.where(draw < keep, scaled, 0.0)
        got = tv._kept_scaled(draw.clone(), keep, scaled.clone())
        assert _same_bits(got, want), (kind, keep if isinstance(keep, float) else "per element")


def _boolean_disjoint_mean(deltas):
    """TIES's disjoint mean written with boolean masks and sums from zero, as a reference."""
    total = torch.zeros_like(deltas[0])
    for d in deltas:
        total += d
    sign = total.sign()
    magnitude, count = torch.zeros_like(sign), torch.zeros_like(sign)
    for d in deltas:
        agreeing = (d * sign).clamp(min=0.0)
        magnitude += agreeing
        count += agreeing > 0
    return magnitude * sign / count.clamp(min=1.0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("models", (1, 2, 3, 4))
def test_disjoint_mean_equals_its_boolean_form(kind, models):
    """Signed zeros (a dropped negative entry is -0), NaNs and opposite entries that cancel included."""
    base = _signed(kind)
    deltas = [base.roll(i * 101) * (1.0 if i % 2 else -1.0) for i in range(models)]
    if models > 1:
        deltas[1][::19] = -deltas[0][::19]
    deltas[0][4::23] = -0.0
    want = _boolean_disjoint_mean([d.clone() for d in deltas])
    assert _same_bits(tv.disjoint_mean([d.clone() for d in deltas]), want)


@pytest.mark.parametrize("kind", KINDS)
def test_trim_threshold_equals_kthvalue_of_the_magnitudes(kind):
    """TIES's threshold histograms the signed bit patterns less the sign: the k-th largest magnitude as
    torch.kthvalue gives it, infinities and NaNs included."""
    delta = _signed(kind)
    for density in (0.01, 0.2, 0.5, 0.97):
        k = round(density * N)
        want = torch.kthvalue(delta.abs(), N - k + 1).values
        got = tv.trim_threshold(delta, density)
        assert (got.isnan() and want.isnan()) or _same_bits(got, want), (kind, density)

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

"""The task-vector methods (merge_core.merge.task_vectors) against the float64 formulas of
tests/helpers/task_oracles.py, on every shape kind a checkpoint has, and the random methods' statistics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from merge_core.merge import task_vectors as tv
from merge_core.merge.methods import MERGE_METHODS, TASK_METHODS
from tests.helpers import task_oracles as oracle

SHAPES = [(1,), (7,), (320,), (12, 130), (6, 5, 3, 3), (8, 4, 1, 1)]
KEY = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
VALUES = {"alpha": 0.8, "density": 0.3, "drop_rate": 0.7, "epsilon": 0.2, "outlier_rate": 0.05}


def _models(shape, n, seed=0, correlated=True):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    common = torch.randn(shape, generator=g) * 0.05
    out = [base + (common if correlated else 0) + torch.randn(shape, generator=g) * 0.05 for _ in range(n)]
    return base, out


def _run(method, base, models, values=VALUES, seed=0, key=KEY, weights=()):
    loaders = [lambda m=m: m.clone() for m in models]
    return tv.task_merge(method, base.clone(), loaders, values, seed, key, weights)


def _close(got: torch.Tensor, want: np.ndarray, rtol=2e-5, atol=2e-6):
    np.testing.assert_allclose(got.double().numpy(), want, rtol=rtol, atol=atol)


DETERMINISTIC = ["TIES", "Breadcrumbs", "Model Stock", "SLERP", "Average", "DARE", "DARE-TIES", "DELLA"]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("method", DETERMINISTIC)
@pytest.mark.parametrize("n", [1, 2, 4])
def test_method_equals_float64_formula(method, n, shape):
    if n < MERGE_METHODS[method].min_models or (MERGE_METHODS[method].max_models or n) < n:
        pytest.skip("model count outside the method's range")
    base, models = _models(shape, n, seed=n * 7 + len(shape))
    got = _run(method, base, models, seed=11)
    want = oracle.merge(method, base.numpy(), [m.numpy() for m in models], VALUES, seed=11, key=KEY)
    _close(got, want)
    assert got.dtype == torch.float32 and got.shape == base.shape


@pytest.mark.parametrize("density", [0.0, 0.01, 0.5, 0.999, 1.0])
def test_ties_density_edges(density):
    base, models = _models((40, 25), 3, seed=3)
    values = dict(VALUES, density=density)
    got = _run("TIES", base, models, values)
    _close(got, oracle.merge("TIES", base.numpy(), [m.numpy() for m in models], values))
    kept = [int(oracle.top_k(d, density).sum()) for d in oracle.deltas32(base.numpy(), [m.numpy() for m in models])]
    assert kept == [round(density * 1000)] * 3


def test_ties_keeps_every_tie_at_the_threshold():
    base = torch.zeros(10)
    model = torch.tensor([3., -3., 3., 1., 0.5, 0., 0., 0., 0., 0.])
    got = _run("TIES", base, [model], {"alpha": 1.0, "density": 0.2})  # k = 2: |3| three times
    assert got.tolist() == [3., -3., 3., 0., 0., 0., 0., 0., 0., 0.]


def test_sign_election_is_by_mass_not_count():
    base = torch.zeros(1)
    models = [torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([-5.0])]
    got = _run("TIES", base, models, {"alpha": 1.0, "density": 1.0})
    assert got.tolist() == [-5.0]  # two votes for +, but the sum is negative


def test_breadcrumbs_ties_by_position():
    base = torch.zeros(6)
    model = torch.tensor([1., 1., 1., 1., 1., 9.])
    got = _run("Breadcrumbs", base, [model], {"alpha": 1.0, "density": 0.5, "outlier_rate": 1 / 6})
    assert got.tolist() == [0., 0., 1., 1., 1., 0.]  # the 9 dropped as an outlier, the first two 1s as smallest


@pytest.mark.parametrize("drop_rate", [0.0, 0.5, 0.9, 0.99])
def test_dare_keeps_the_declared_fraction_and_rescales(drop_rate):
    base, models = _models((400, 250), 1, seed=5)
    values = {"alpha": 1.0, "drop_rate": drop_rate}
    got = _run("DARE", base, models, values, seed=123)
    delta = (models[0] - base)
    change = got - base
    kept = change != 0
    n = kept.numel()
    p_keep = 1 - drop_rate
    assert abs(kept.float().mean().item() - p_keep) < 4 * (p_keep * (1 - p_keep) / n) ** 0.5 + 1e-9
    torch.testing.assert_close(change[kept], delta[kept] / np.float32(p_keep), rtol=1e-6, atol=1e-7)
    # the rescale keeps the task vector's expected value: the sum of kept changes ~ the sum of all
    assert abs(change.sum().item() - delta.sum().item()) <= 1e-3 + 6 * delta.abs().mean().item() * (n * drop_rate / p_keep) ** 0.5


def test_dare_drop_all_gives_a():
    base, models = _models((30, 20), 2, seed=6)
    assert torch.equal(_run("DARE", base, models, {"alpha": 1.0, "drop_rate": 1.0}), base)


def test_della_keep_probability_window_and_statistics():
    base, models = _models((500, 200), 1, seed=7)
    values = {"alpha": 1.0, "density": 0.3, "epsilon": 0.2}
    delta = models[0] - base
    k = tv.della_keep_probability(delta, 0.3, 0.2)
    assert abs(k.min().item() - 0.2) < 1e-6 and abs(k.max().item() - 0.4) < 1e-6
    got = _run("DELLA", base, models, values, seed=9)
    kept = (got - base) != 0
    n = kept.numel()
    assert abs(kept.float().mean().item() - 0.3) < 4 * (0.3 * 0.7 / n) ** 0.5
    ranks = tv.magnitude_ranks(delta)
    low, high = kept[ranks < n // 10].float().mean().item(), kept[ranks >= n - n // 10].float().mean().item()
    assert abs(low - 0.21) < 0.01 and abs(high - 0.39) < 0.01  # larger changes are kept more often
    torch.testing.assert_close((got - base)[kept], (delta / k)[kept], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["DARE", "DARE-TIES", "DELLA"])
def test_random_masks_depend_on_seed_and_key_only(method):
    base, models = _models((64, 48), 2, seed=8)
    first = _run(method, base, models, seed=1, key="k1")
    assert torch.equal(first, _run(method, base, models, seed=1, key="k1"))
    assert not torch.equal(first, _run(method, base, models, seed=2, key="k1"))
    assert not torch.equal(first, _run(method, base, models, seed=1, key="k2"))  # same shape, other key


def test_key_seed_is_fixed():
    # the documented derivation, written out: a change here changes every saved DARE/DELLA merge
    assert tv.key_seed(0, "a") == int.from_bytes(__import__("hashlib").sha256(b"0:a").digest()[:8], "big") & (2**63 - 1)
    assert tv.key_seed(42, KEY) == 8190463190983229703


@pytest.mark.parametrize("n", [2, 3, 4])
def test_geometric_median_minimises_the_distance_sum(n):
    base, models = _models((30, 17), n, seed=10 + n)
    weights = [1.0, 2.0, 0.5, 1.5, 1.0][: n + 1]
    got = _run("Geometric median", base, models, weights=weights).double().numpy()
    pts = [base.double().numpy()] + [m.double().numpy() for m in models]
    # float64 Weiszfeld to full convergence
    x = sum(p * w for p, w in zip(pts, weights)) / sum(weights)
    for _ in range(5000):
        inv = [w / max(np.linalg.norm(p - x), 1e-300) for p, w in zip(pts, weights)]
        x = sum(p * c for p, c in zip(pts, inv)) / sum(inv)
    assert np.linalg.norm(got - x) <= 1e-4 * np.linalg.norm(x)
    assert oracle.median_objective(pts, weights, got) <= oracle.median_objective(pts, weights, x) * (1 + 2e-5)


def test_slerp_near_parallel_is_linear():
    base = torch.randn(50, generator=torch.Generator().manual_seed(1))
    other = base * 1.5 + 1e-4
    got = _run("SLERP", base, [other], {"alpha": 0.3})
    torch.testing.assert_close(got, base * 0.7 + other * 0.3)


def test_every_task_method_has_a_formula():
    base, models = _models((5, 4), 4, seed=2)
    for name in TASK_METHODS:
        m = MERGE_METHODS[name]
        n = min(4, m.max_models or 4)
        out = _run(name, base, models[:n], dict(VALUES))
        assert out.shape == base.shape and torch.isfinite(out).all()


def test_each_model_loaded_once():
    base, models = _models((9, 9), 3, seed=4)
    for name in TASK_METHODS:
        m = MERGE_METHODS[name]
        n = min(3, m.max_models or 3)
        calls = []
        loaders = [lambda i=i, t=t: calls.append(i) or t.clone() for i, t in enumerate(models[:n])]
        tv.task_merge(name, base.clone(), loaders, dict(VALUES), 0, KEY)
        assert sorted(calls) == list(range(n)), name


@pytest.mark.parametrize("density,outliers", [(0.5, 1 / 6), (0.2, 0.0), (1.0, 0.0), (0.0, 0.1), (0.3, 0.3), (0.9, 0.2)])
def test_breadcrumbs_selection_equals_the_stable_sort_ranks(density, outliers):
    """Many ties (zeros and repeated magnitudes, both signs): the selection drops exactly the ranks a stable
    ascending sort gives."""
    g = torch.Generator().manual_seed(3)
    delta = torch.randint(-3, 4, (60, 7), generator=g).float() * 0.5
    got = tv.breadcrumbs_mask(delta, density, outliers)
    r = oracle.ranks(delta.numpy())
    n = delta.numel()
    large = round(outliers * n)
    keep = min(round(density * n), n - large)
    want = np.where((r >= n - large - keep) & (r < n - large), delta.numpy(), 0.0)
    assert np.array_equal(got.numpy(), want)


def test_docs_table_lists_every_task_method_with_its_declared_parameters():
    """docs/merge-methods.md's table is held to the registry: each method, its parameters and their defaults,
    which are per key (bold), and its minimum model count."""
    import os
    import re

    from merge_core.merge.params import PARAMS

    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "merge-methods.md")
    rows = {}
    for line in open(path, encoding="utf-8"):
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cols) == 4 and cols[0] in MERGE_METHODS and cols[0] not in rows:  # the first table
            rows[cols[0]] = cols
    assert set(rows) == set(TASK_METHODS)
    for name, (_, params, models, _formula) in rows.items():
        m = MERGE_METHODS[name]
        declared = {p.name for p in m.params} | ({"model_weights"} if m.weighted else set())
        assert set(re.findall(r"[a-z_]+", re.sub(r"\(.*?\)", "", params))) - {"none"} == declared, name
        for p in m.params:
            bold = f"**{p.name}**" in params
            assert bold == p.per_key, (name, p.name)
            if p.name != "alpha":
                assert f"{p.name}** ({PARAMS[p.name].default:g})" in params or not p.per_key, (name, p.name)
        assert models.count("+") == m.min_models, name


@pytest.mark.parametrize("method", list(TASK_METHODS))
def test_pieces_give_the_bits_of_whole_keys(method, monkeypatch):
    """On the CPU the element-by-element steps run in pieces (merge_core/merge/pieces.py); the random methods
    draw each model's masks piece by piece from one generator. Whole keys (one piece) and pieces of an uneven
    size must give the same bits, masks included."""
    from merge_core.merge import pieces
    base, models = _models((37, 101), 1 if method == "SLERP" else 3, seed=5)
    runs = []
    for piece in (10 ** 9, 1000):
        monkeypatch.setattr(pieces, "PIECE_ELEMENTS", piece)
        runs.append(_run(method, base, models, seed=9))
    assert torch.equal(runs[0].view(torch.int32), runs[1].view(torch.int32))


@pytest.mark.parametrize("method", list(TASK_METHODS))
def test_written_into_base_itself_gives_the_bits_of_a_new_tensor(method):
    """The live merge passes A's weight as both base and `out`: every method reads a piece of base before it
    writes it. A strided `out` is computed apart and copied in. The sources are never written."""
    base, models = _models((37, 101), 1 if method == "SLERP" else 3, seed=6)
    kept = [m.clone() for m in models]
    want = _run(method, base, models, seed=4)
    loaders = [lambda m=m: m for m in models]  # the sources themselves, as a float32 checkpoint hands them
    into = base.clone()
    got = tv.task_merge(method, into, loaders, VALUES, 4, KEY, (), out=into)
    assert got is into and torch.equal(into.view(torch.int32), want.view(torch.int32))
    strided = torch.empty(101, 37).t()
    strided.copy_(base)
    tv.task_merge(method, strided, loaders, VALUES, 4, KEY, (), out=strided)
    assert torch.equal(strided.contiguous().view(torch.int32), want.view(torch.int32))
    assert all(torch.equal(m.view(torch.int32), k.view(torch.int32)) for m, k in zip(models, kept))

"""Calc-mode oracles written from the definitions in docs/calc-modes.md, independent of merge_core: numpy/scipy
where those are the definitions (percentile "midpoint", scipy.ndimage's filters), torch's
cosine_similarity/normalize where the docs name them. Shared by the unit and the
in-process tests."""
from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

# calc mode -> the merge mode it goes with (the documented pairing), and the extract gamma the tests use.
CALC_MODE_OF = {"cosineA": "Weight sum", "cosineB": "Weight sum", "tensor": "Weight sum", "tensor2": "Weight sum",
                "self": "Weight sum", "trainDifference": "Add difference", "smoothAdd": "Add difference",
                "extract": "Add difference"}
GAMMA = 0.7
# The beta spec the calc-mode engine tests merge with (the same on SD1 and SD2: their blocks are the same).
CALC_SPEC_BETA = """M00::0.5
BASE:NOT mlp:0.125
OUT10-OUT11:proj:0.375
OUT04::0.75"""


def _trimmed_range(parts):
    sims = np.concatenate(parts) if parts else np.array([], dtype=np.float64)
    sims = sims[~np.isnan(sims)]
    sims = np.delete(sims, np.where(sims < np.percentile(sims, 1, method="midpoint")))
    sims = np.delete(sims, np.where(sims > np.percentile(sims, 99, method="midpoint")))
    return sims.min(), sims.max()


def oracle_stats(pairs, modes=("cosineA", "cosineB"), one_cosine=False) -> dict:
    """{mode: (min, max)}: the cosine statistic of each of ``modes`` (cosineA: s of the normalized tensors;
    cosineB: (s + m) / 2) over the (A, B) pairs, trimmed at the 1st and 99th percentiles, in one pass over
    the pairs (each read and converted to float32 once).

    ``one_cosine`` (both modes asked): cosineA's s is taken as the s of the tensors as stored, computed once
    for both modes. The per-column cosine over dim 0 does not change when each column is first scaled to unit
    length over that same dim 0 (a zero column stays zero and gives 0 either way), so this is the same
    statistic up to float32 rounding (a trimmed min or max moves by at most the largest rounding difference,
    ~1e-7, far under what one fp16 ulp of a merged weight allows); it saves two normalizations and a cosine
    per tensor over a whole model. Off by default: tests/unit/test_calc_modes.py compares the statistic with
    the engine's bit for bit."""
    parts = {mode: [] for mode in modes}  # one array per key, joined once (appending to one array copies it)
    one_cosine = one_cosine and set(parts) == {"cosineA", "cosineB"}
    for A, B in pairs:
        A, B = A.float(), B.float()
        if one_cosine:
            s = F.cosine_similarity(A, B, dim=0)
            m = torch.dot(A.reshape(-1), B.reshape(-1)) / (torch.norm(A) * torch.norm(B))
            parts["cosineA"].append(s.numpy().astype(np.float64).reshape(-1))
            parts["cosineB"].append(((s + m) / 2).numpy().astype(np.float64).reshape(-1))
            continue
        if "cosineA" in parts:
            An, Bn = F.normalize(A, p=2, dim=0), F.normalize(B, p=2, dim=0)
            parts["cosineA"].append(F.cosine_similarity(An, Bn, dim=0).numpy().astype(np.float64).reshape(-1))
        if "cosineB" in parts:
            s = F.cosine_similarity(A, B, dim=0)
            m = torch.dot(A.reshape(-1), B.reshape(-1)) / (torch.norm(A) * torch.norm(B))
            parts["cosineB"].append(((s + m) / 2).numpy().astype(np.float64).reshape(-1))
    return {mode: _trimmed_range(p) for mode, p in parts.items()}


def oracle_stat(pairs, mode):
    return oracle_stats(pairs, (mode,))[mode]


def oracle_cosine(A, B, a, smin, smax, mode):
    A, B = A.float(), B.float()
    X, Y = (F.normalize(A, p=2, dim=0), F.normalize(B, p=2, dim=0)) if mode == "cosineA" else (A, B)
    s = F.cosine_similarity(X, Y, dim=0)
    m = torch.dot(X.reshape(-1), Y.reshape(-1)) / (torch.norm(X) * torch.norm(Y))
    ratio = abs(a) if mode == "cosineA" else a
    k = torch.clamp(((s + m) / 2 - smin) / (smax - smin) - ratio, 0, 1)
    return B * (1 - k) + A * k


def oracle_train_difference(A, B, C, a):
    A, B, C = (t.float().numpy().astype(np.float32) for t in (A, B, C))
    if np.array_equal(B, C):
        return torch.from_numpy(np.asarray(A).copy())
    d0, d1 = np.abs(B - C), np.abs(B - A)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(d0 + d1 == 0, np.float32(0), d1 / (d0 + d1)).astype(np.float32)
    return torch.from_numpy(np.asarray(A + np.sign(B - C) * s * np.abs(B - C) * np.float32(1.8 * a)))


# smoothAdd's filters are local: an output element depends on the inputs within 1 (the 3-wide median) + 4
# (the Gaussian's radius, int(4 * sigma + 0.5)) positions along each dimension. The oracle of a large tensor
# is therefore computed exactly on windows of dim-1 indices (columns; every row, every kernel position), each
# filtered with SMOOTH_HALO extra columns either side (fewer where the tensor's own edge is, whose "reflect"
# the window then shares): test_smooth_add_oracle_windows_equal_whole_tensor checks this equality.
SMOOTH_HALO = 1 + 4
SMOOTH_WINDOW = 16          # columns per window: the first, a middle and the last SMOOTH_WINDOW of dim 1
SMOOTH_WHOLE_COST = 2 ** 27  # elements x 3^dims (scipy's median window) up to which the whole tensor is filtered


def smooth_columns(shape, a) -> list[int] | None:
    """The dim-1 indices whose smoothAdd oracle a test compares, or None for the whole tensor: the whole of
    every tensor at ratio 0 (A + 0 * filtered = A, no filter to run) and of every tensor whose scipy median
    stays under SMOOTH_WHOLE_COST; else the first, a middle and the last SMOOTH_WINDOW columns (all rows: the
    first, the last and every one between)."""
    shape = tuple(shape)
    numel = int(torch.Size(shape).numel())
    if a == 0 or len(shape) < 2 or numel * 3 ** len(shape) <= SMOOTH_WHOLE_COST \
            or shape[1] < 3 * (SMOOTH_WINDOW + 2 * SMOOTH_HALO):
        return None
    m, w = shape[1], SMOOTH_WINDOW
    mid = m // 2 - w // 2
    return list(range(w)) + list(range(mid, mid + w)) + list(range(m - w, m))


def _smooth_filter(D):
    return np.asarray(ndi.gaussian_filter(ndi.median_filter(D, size=3), sigma=1))


def oracle_smooth_add(A, B, C, a, columns=None):
    """A + a * gaussian(median(B - C)) (scipy.ndimage, size 3, sigma 1), whole; with ``columns`` (sorted dim-1
    indices, smooth_columns) only those columns, each run of them filtered with SMOOTH_HALO columns either side."""
    A = A.float()
    if a == 0:  # a * F = 0 for the finite F of finite weights: the formula's value is A
        return A.clone() if columns is None else A[:, columns]
    D = (B.float() - C.float()).to(B.dtype).float().numpy()
    if columns is None:
        return A + a * torch.from_numpy(_smooth_filter(D))
    m, runs = D.shape[1], []
    for c in columns:  # contiguous runs [c0, c1)
        if runs and runs[-1][1] == c:
            runs[-1][1] = c + 1
        else:
            runs.append([c, c + 1])
    parts = []
    for c0, c1 in runs:
        lo, hi = max(0, c0 - SMOOTH_HALO), min(m, c1 + SMOOTH_HALO)
        parts.append(_smooth_filter(np.ascontiguousarray(D[:, lo:hi]))[:, c0 - lo:c1 - lo])
    return A[:, columns] + a * torch.from_numpy(np.concatenate(parts, axis=1))


def oracle_extract(A, B, C, a, b, gamma):
    A = A.float()
    P, Q = B.float() - A, C.float() - A
    c = torch.clamp(F.cosine_similarity(P, Q, dim=-1), -1, 1).unsqueeze(-1)
    w = ((c + 1) / 2) ** gamma
    return (A + torch.lerp(P, Q, a) * torch.lerp(w, 1 - w, b)).reshape(A.shape)


def oracle_tensor(A, B, a, b, second: bool):
    A, B = A.float(), B.float()
    if A.dim() == 0:
        return A.clone()
    dim = 1 if second and A.dim() >= 2 else 0
    n = A.shape[0]
    if second and A.dim() >= 2 and A.shape[1] > 100:
        n = A.shape[1]
    if a + b <= 1:
        merged, other, lo, hi = A.clone(), B, int(n * b), int(n * (a + b))
    else:
        merged, other, lo, hi = B.clone(), A, int(n * (a + b - 1)), int(n * b)
    for i in range(max(lo, 0), min(hi, A.shape[dim])):
        merged.select(dim, i).copy_(other.select(dim, i))
    return merged


def oracle_self(A, a, name):
    if "to_out" in name or "proj_out" in name or "norm" in name or a == 0:
        return A.float().clone()
    return A.float() * a


def oracle_weight(calc, arch, fk, A, B, C, a, b, stat, gamma=GAMMA, columns=None):
    """The oracle's merged weight for checkpoint key ``fk`` (float32): A's own weight outside every block or
    for what is not a weight or bias (SuperMerger's rule), else the calc mode's formula. ``columns``
    (smoothAdd only, smooth_columns): just those dim-1 indices."""
    from tests.helpers.expected_blocks import expected_block

    if columns is not None and calc != "smoothAdd":
        raise ValueError("columns: smoothAdd's oracle only")
    if expected_block(arch, fk) is None or not ("weight" in fk or "bias" in fk):
        return A.float() if columns is None else A.float()[:, columns]
    if calc in ("cosineA", "cosineB"):
        return oracle_cosine(A, B, a, stat[0], stat[1], calc)
    if calc == "trainDifference":
        return oracle_train_difference(A, B, C, a)
    if calc == "smoothAdd":
        return oracle_smooth_add(A, B, C, a, columns)
    if calc == "extract":
        return oracle_extract(A, B, C, a, b, gamma)
    if calc in ("tensor", "tensor2"):
        return oracle_tensor(A, B, a, b, calc == "tensor2")
    return oracle_self(A, a, fk)


def fp16_ulp(x: torch.Tensor) -> torch.Tensor:
    """tests.helpers.arch_checks.dtype_ulp(x, torch.float16) (the largest gap from x's fp16 rounding to a
    neighbour), from the rounding's binary exponent: float32, and under half of dtype_ulp's time."""
    h = x.to(torch.float16).float().abs_()
    ulp = torch.ldexp(torch.ones_like(h), torch.frexp(h).exponent - 11)  # [2^(e-1), 2^e) has gaps 2^(e-11)
    ulp = torch.where(h < 2.0 ** -14, 2.0 ** -24, ulp)  # zero and the subnormals
    ulp = torch.where(h == 65504, float("inf"), ulp)  # fp16's largest finite value: its upper gap is infinite
    return torch.where(torch.isfinite(h), ulp, float("nan"))  # as dtype_ulp: no gap at inf or NaN


def over_one_fp16_ulp(err: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """Where ``err`` is over one fp16 ulp at ``want`` (fp16_ulp; NaN counts as over). The ulp is computed only
    where ``err`` exceeds |want| * 2^-11 (at least 2^-24, below 65504), which is never more than the ulp, so
    the answer is the same as comparing with fp16_ulp everywhere; a correctly rounded result (within half an
    ulp) never needs it."""
    a = want.abs()
    floor = torch.where(a < 65504, (a * 2.0 ** -11).clamp_min(2.0 ** -24), 0.0)
    over = ~(err <= floor)
    if over.any():
        idx = over.nonzero(as_tuple=True)
        over[idx] = ~(err[idx] <= fp16_ulp(want[idx]))
    return over


# The calc modes whose oracle tests check a sample of the keys: every one. Their oracles work on whole tensors
# (per-column cosines, scipy's filters, row swaps), so no plain element slice will do (smoothAdd's column
# windows carry their filters' halo: smooth_columns), and comparing every key of SD1 and SD2 in every mode took
# 24 minutes of the suite on a 2-core CPU. The model-wide cosine statistics are still computed over every
# tensor, by the engine and by the oracle.
SAMPLED_CALCS = frozenset(CALC_MODE_OF)
SAMPLE_SEED = 20261203


def key_role(name: str) -> str:
    """A key's layer role: its name without the numeric path parts (layer and block indices), e.g.
    ``input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight`` -> ``input_blocks.transformer_blocks.attn1.to_q.weight``."""
    return ".".join(p for p in name.split(".") if not p.isdigit())


def oracle_sample(units, always=(), smallest=False, seed=SAMPLE_SEED) -> set:
    """A seeded sample of the units the oracle checks. ``units``: (unit, name, block, shape, alpha, beta), a
    unit being what one oracle call computes (a key; SD2's fused in_proj with its q/k/v parts). Kept:
    * every unit in ``always`` and every one outside every block (block None: A's weight, its own rule);
    * one unit of each (layer role, dimensions, ratio 0 or not): every kind of layer (conv, attention
      q/k/v/out, norms, the fused in_proj's weight and bias, text_projection, ...) and each of them at ratio 0;
    * one unit of every block and (unless ``smallest``) one 4-D unit of every block holding any;
    * one unit of each distinct (alpha, beta) pair.
    A group already holding a picked unit adds none. The picks are random.Random(seed) choices over the units
    in their given order (a fixed sample), or with ``smallest`` the group's smallest unit (smoothAdd: its
    scipy oracle over one large convolution takes seconds)."""
    import random

    rng = random.Random(seed)
    units = list(units)
    picked = {u for u, _n, block, *_ in units if block is None or u in set(always)}

    def pick(group):
        if any(g[0] in picked for g in group):
            return
        if smallest:
            picked.add(min(group, key=lambda g: torch.Size(g[3]).numel())[0])
        else:
            picked.add(rng.choice(group)[0])

    groups: dict = {}
    for g in units:
        u, name, block, shape, a, b = g
        groups.setdefault(("role", key_role(name), len(shape), a == 0), []).append(g)
        if len(shape) == 4 and not smallest:  # smoothAdd: its 3x3x3x3 median over a conv is what costs
            groups.setdefault(("conv", block), []).append(g)
        groups.setdefault(("block", block), []).append(g)
        groups.setdefault(("ratio", a, b), []).append(g)
    for group in groups.values():
        pick(group)
    return picked


def assert_sample_covers(units, sample) -> None:
    """The sample holds every unit outside every block and a unit of every block, layer role (with its
    dimensions, at ratio 0 and not) and (alpha, beta) pair that ``units`` hold."""
    units = list(units)
    chosen = [g for g in units if g[0] in sample]
    assert {g[0] for g in units if g[2] is None} <= set(sample)
    for name, kind in (("block", lambda g: g[2]), ("role", lambda g: (key_role(g[1]), len(g[3]), g[4] == 0)),
                       ("ratio pair", lambda g: (g[4], g[5]))):
        missing = {kind(g) for g in units} - {kind(g) for g in chosen}
        assert not missing, f"the oracle sample misses {name}s {sorted(map(str, missing))[:5]}"

"""Independent float64 formulas of the task-vector methods (docs/merge-methods.md), in numpy.

Written from the document, not from merge_core.merge.task_vectors: selections use numpy's sorts where the
engine uses torch's kthvalue/argsort; the arithmetic is float64. Three things are shared by definition:
- task vectors are the float32 differences W_i - W0 (the merge computes in float32), and the selections
  (TIES's top-k, ranks) are made on them;
- the random draws: torch.rand on the CPU, float32, from a generator seeded by sha256("<seed>:<key>");
- the keep thresholds the draws are compared with, rounded to float32 as the document states.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch


def generator(seed: int, key: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") & ((1 << 63) - 1))


def draws(gen: torch.Generator, shape) -> np.ndarray:
    return torch.rand(tuple(shape), generator=gen, dtype=torch.float32).numpy()


def deltas32(base: np.ndarray, models) -> list:
    b32 = base.astype(np.float32)
    return [m.astype(np.float32) - b32 for m in models]


def top_k(delta32: np.ndarray, density: float) -> np.ndarray:
    """Bool mask: |d| >= the k-th largest |d|, k = round(density n)."""
    flat = np.abs(delta32).ravel()
    n = flat.size
    k = max(0, min(n, round(density * n)))
    if k == 0:
        return np.zeros(delta32.shape, bool)
    threshold = np.sort(flat)[n - k]
    return np.abs(delta32) >= threshold


def ranks(delta32: np.ndarray) -> np.ndarray:
    order = np.argsort(np.abs(delta32).ravel(), kind="stable")
    r = np.empty(order.size, np.int64)
    r[order] = np.arange(order.size)
    return r.reshape(delta32.shape)


def ties_combine(vectors, vectors32) -> np.ndarray:
    """Sign of the sum, then the mean of the nonzero entries with that sign. The sign is elected on the float32
    values summed in model order (as the merge computes them): where the sum is near zero, float64 could elect
    the other sign."""
    stack = np.stack(vectors)
    total32 = np.zeros(vectors32[0].shape, np.float32)
    for v in vectors32:
        total32 += v
    elected = np.sign(total32).astype(np.float64)
    agree = (np.sign(stack) == elected) & (stack != 0)
    count = agree.sum(axis=0)
    total = np.where(agree, stack, 0.0).sum(axis=0)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def merge(method: str, base, models, values: dict, seed: int = 0, key: str = "", weights=()) -> np.ndarray:
    """The merged tensor in float64. `base`, `models`: arrays as the merge reads them (float32 values)."""
    W0 = base.astype(np.float64)
    alpha = values.get("alpha", 1.0)
    d32 = deltas32(base, models)
    d64 = [d.astype(np.float64) for d in d32]
    if method == "TIES":
        masks = [top_k(d, values["density"]) for d in d32]
        return W0 + alpha * ties_combine([d * m for d, m in zip(d64, masks)], [d * m for d, m in zip(d32, masks)])
    if method in ("DARE", "DARE-TIES"):
        keep = float(np.float32(1.0 - values["drop_rate"]))
        gen = generator(seed, key)
        out, out32 = [], []
        for d, f in zip(d64, d32):
            u = draws(gen, d.shape)
            kept = (u < keep) if keep > 0 else np.zeros(d.shape, bool)
            out.append(np.where(kept, d / max(keep, 1e-30), 0.0))
            out32.append(np.where(kept, f / np.float32(max(keep, 1e-30)), np.float32(0)).astype(np.float32))
        combined = np.sum(out, axis=0) if method == "DARE" else ties_combine(out, out32)
        return W0 + alpha * combined
    if method == "DELLA":
        gen = generator(seed, key)
        dens, eps = values["density"], values["epsilon"]
        out, out32 = [], []
        for i, d in enumerate(d64):
            n = d.size
            if n == 1:
                k = np.full(d.shape, np.float32(dens))
            else:  # float32, in the document's order of operations
                frac = ranks(d32[i]).astype(np.float32) / np.float32(n - 1)
                k = np.clip(np.float32(dens - eps / 2.0) + np.float32(eps) * frac, 0, 1).astype(np.float32)
            u = draws(gen, d.shape)
            kept = u < k
            out.append(np.where(kept, d / np.where(kept, k.astype(np.float64), 1.0), 0.0))
            out32.append(np.where(kept, d32[i] / np.where(kept, k, np.float32(1)), np.float32(0)).astype(np.float32))
        return W0 + alpha * ties_combine(out, out32)
    if method == "Breadcrumbs":
        total = np.zeros_like(W0)
        for i, d in enumerate(d64):
            n = d.size
            large = max(0, min(n, round(values["outlier_rate"] * n)))
            keep = min(max(0, min(n, round(values["density"] * n))), n - large)
            r = ranks(d32[i])
            total += np.where((r >= n - large - keep) & (r < n - large), d, 0.0)
        return W0 + alpha * total
    if method == "Model Stock":
        n = len(d64)
        cosines = []
        for i in range(n):
            for j in range(i + 1, n):
                x, y = d64[i].ravel(), d64[j].ravel()
                nx, ny = np.linalg.norm(x), np.linalg.norm(y)
                cosines.append(0.0 if nx == 0 or ny == 0 else x @ y / (nx * ny))
        cos = float(np.mean(cosines))
        t = n * cos / (1 + (n - 1) * cos)
        mean = np.mean([m.astype(np.float64) for m in models], axis=0)
        return t * mean + (1 - t) * W0
    if method == "SLERP":
        A, B = W0, models[0].astype(np.float64)
        t = alpha
        cos = A.ravel() @ B.ravel() / (np.linalg.norm(A) * np.linalg.norm(B))
        if abs(cos) > 0.9995:
            return (1 - t) * A + t * B
        omega = np.arccos(np.clip(cos, -1, 1))
        return (np.sin((1 - t) * omega) * A + np.sin(t * omega) * B) / np.sin(omega)
    if method == "Average":
        pts = [W0] + [m.astype(np.float64) for m in models]
        w = np.asarray(weights or [1.0] * len(pts), np.float64)
        return sum(p * wi for p, wi in zip(pts, w)) / w.sum()
    raise ValueError(method)


def median_objective(points, weights, x) -> float:
    """Sum of weighted distances from x: the geometric median minimises it."""
    return float(sum(w * np.linalg.norm((p - x).ravel()) for p, w in zip(points, weights)))


def median_gradient_norm(points, weights, x) -> float:
    """|grad| of the objective at x, relative to the total weight (0 at the median, away from the points)."""
    g = sum(w * (x - p) / max(np.linalg.norm((x - p).ravel()), 1e-300) for p, w in zip(points, weights))
    return float(np.linalg.norm(np.ravel(g)) / sum(weights))

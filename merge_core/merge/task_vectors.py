"""The task-vector methods, one key at a time: TIES, DARE, DARE-TIES, DELLA, Breadcrumbs, Model Stock, the
geometric median, SLERP and the weighted average (docs/merge-methods.md holds each formula, its source and
the choices the papers leave open).

Every function takes A's weight (`base`, float32, the base model W0 of the task vectors) and one loader per
further model (B, C, D, E in that order) that returns that model's weight as float32 on base's device. A
loader is called once; the task vector `W_i - W0` replaces the weight right away, so a method holds at most
one float32 copy of the key per model. A result is written into `out` where the caller gives one (A's
weight itself in a live merge), else into a new tensor; the sources are never written.

Random methods draw their masks on the CPU from a generator derived from the seed and the key's checkpoint
name (`key_generator`), the sequence of one `torch.rand` of the key's shape per model, so every device, a
save, a reload by recipe and an XY cell draw the same masks, and keys of one shape get independent ones. A
helper thread draws them ahead of the merge (merge_core/merge/draw_stream.py).
"""
from __future__ import annotations

import hashlib
import math
from typing import Callable, Mapping, Sequence

import torch

from .draw_stream import DrawStream
from .pieces import spans
from .scratch import scratch_like

Loader = Callable[[], torch.Tensor]

# SLERP falls back to linear interpolation above this |cos| of the angle between A and B (and for a zero
# tensor): sin(omega) is then too small to divide by in float32.
SLERP_PARALLEL = 0.9995
# The geometric median's Weiszfeld iteration: at most this many steps, stopping when the estimate moves by
# less than this fraction of its norm; distances below the floor count as the floor (no division by zero).
MEDIAN_STEPS = 100
MEDIAN_TOLERANCE = 1e-6
MEDIAN_DISTANCE_FLOOR = 1e-8


def _spans(t: torch.Tensor):
    """The pieces the element-by-element steps run in (merge_core/merge/pieces.py): what needs the whole key
    (a threshold, the ranks, a dot product) sees it whole, the masks, the sign vote, the mean and the scale
    run piece by piece."""
    return spans(t.numel(), t.device)


# Bit patterns of float32: the magnitude bits, and a float32's bits as a Python int (for int32 tensor ops).
_MAGNITUDE = 0x7FFFFFFF


def _float_bits(value) -> int:
    return int(torch.tensor(float(value), dtype=torch.float32).view(torch.int32))


def key_seed(seed: int, key: str) -> int:
    """The seed of one key's generator: the first 8 bytes of sha256("<seed>:<key>") big-endian, 63 bits."""
    digest = hashlib.sha256(f"{int(seed)}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & (2 ** 63 - 1)


def key_generator(seed: int, key: str) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(key_seed(seed, key))


def _draw_stream(seed: int, key: str, base: torch.Tensor, models: int) -> DrawStream:
    """The key's draws: one per element and model, model after model, in the pieces the drops take them,
    drawn on the CPU ahead of the merge (merge_core/merge/draw_stream.py)."""
    sizes = [end - begin for begin, end in _spans(base.reshape(-1))]
    return DrawStream(key_generator(seed, key), sizes * models)


def _deltas(base: torch.Tensor, loaders: Sequence[Loader]):
    """Each model's task vector W_i - W0, computed as the model is loaded (the weight itself is dropped)."""
    flat_base = base.reshape(-1)
    for load in loaders:
        flat_w = load().reshape(-1)
        delta = scratch_like(flat_base)
        for begin, end in _spans(flat_base):  # on the calling thread, beside the draws' helper (pieces.py)
            torch.sub(flat_w[begin:end], flat_base[begin:end], out=delta[begin:end])
        del flat_w
        yield delta.view(base.shape)


def _kept_count(fraction: float, n: int) -> int:
    return max(0, min(n, round(fraction * n)))


def trim_threshold(delta: torch.Tensor, density: float):
    """TIES's trim threshold: the k-th largest magnitude (k = round(density * n)); None to keep every element,
    "none" to keep none."""
    n = delta.numel()
    k = _kept_count(density, n)
    if k >= n:
        return None
    if k == 0:
        return "none"
    return _kth_smallest_magnitude(delta.reshape(-1), n - k + 1)


def _trim_cut(threshold):
    """How `_trimmed` applies a threshold: None and "none" as they are, a finite one as its float32 bit
    pattern (an int), any other (inf, NaN) as the tensor."""
    if threshold is None or isinstance(threshold, str) or not math.isfinite(float(threshold)):
        return threshold
    return _float_bits(threshold)


def _trimmed(delta: torch.Tensor, cut) -> torch.Tensor:
    """The elements of `delta` (a piece or the whole) whose magnitude is at least the threshold (`_trim_cut`),
    the rest zero, signed as delta * 0 would be. A bit pattern is compared in int32 (magnitudes order as
    their bits): the same selection as `delta * (delta.abs() >= threshold)`, without its boolean temporaries."""
    if cut is None:
        return delta
    if isinstance(cut, str):
        return torch.zeros_like(delta)
    if isinstance(cut, torch.Tensor):
        return delta * (delta.abs() >= cut)
    bits = delta.view(torch.int32)
    kept = torch.bitwise_and(bits, _MAGNITUDE).sub_(cut)                   # >= 0 where |delta| >= threshold
    kept.bitwise_right_shift_(31).bitwise_and_(_MAGNITUDE).bitwise_not_()  # kept -1, dropped the sign bit
    return kept.bitwise_and_(bits).view(torch.float32)


def trim_top(delta: torch.Tensor, density: float) -> torch.Tensor:
    """TIES's trim: the elements whose magnitude is at least the k-th largest (k = round(density * n)), the
    rest zero; ties at the threshold are all kept."""
    return _trimmed(delta, _trim_cut(trim_threshold(delta, density)))


def disjoint_mean(deltas: Sequence[torch.Tensor]) -> torch.Tensor:
    """TIES's sign election by mass (the sign of the float32 sum, in model order) and the mean of the entries
    that agree with it (nonzero ones only); 0 where none agrees. An entry agrees where entry * sign > 0: its
    magnitude is summed, and the sum takes the elected sign back (exact: every summand has that sign). The
    count adds sign(agreeing), 1 or 0 (torch's sign of a NaN is 0, as `NaN > 0` is false), a float op where
    `agreeing > 0` would make a boolean temporary."""
    sign = deltas[0] + deltas[1] if len(deltas) > 1 else deltas[0].clone()
    for d in deltas[2:]:
        sign += d
    sign.sign_()  # the sum's signed zero does not matter: torch's sign of -0 is +0
    magnitude_sum = count = None
    for d in deltas:
        agreeing = torch.mul(d, sign).clamp_(min=0.0)
        if magnitude_sum is None:  # 0 + agreeing, as a sum from zero: a -0 becomes +0
            magnitude_sum, count = agreeing.add_(0.0), torch.sign(agreeing)
        else:
            magnitude_sum += agreeing
            count += agreeing.sign_()
    return magnitude_sum.mul_(sign).div_(count.clamp_(min=1.0))


def _keep_threshold(drop_rate: float) -> float:
    return torch.tensor(1.0 - drop_rate, dtype=torch.float32).item()  # the float32 threshold of the draw


def _kept_scaled(draw: torch.Tensor, keep, scaled: torch.Tensor) -> torch.Tensor:
    """`torch.where(draw < keep, scaled, 0.0)`, written into `scaled`: draw and keep are floats >= +0, which
    order as their bit patterns, so (draw - keep) in int32 is negative exactly where draw < keep, and its
    sign spread over all bits (-1 or 0) masks `scaled`. No boolean temporary, and a dropped NaN or inf is 0
    as with where."""
    mask = draw.view(torch.int32)
    mask.sub_(keep.view(torch.int32) if isinstance(keep, torch.Tensor) else _float_bits(keep))
    mask.bitwise_right_shift_(31)
    scaled.view(torch.int32).bitwise_and_(mask)
    return scaled


def _dare_piece(delta: torch.Tensor, keep: float, draws: DrawStream) -> torch.Tensor:
    """One piece's DARE drop, written into `delta`."""
    draw = draws.take(delta)
    if keep <= 0.0:
        return delta.zero_()
    return _kept_scaled(draw, keep, delta.div_(keep))


def _dare_drop_in_place(delta: torch.Tensor, drop_rate: float, draws: DrawStream) -> torch.Tensor:
    """DARE: each element dropped with probability p, the kept ones rescaled by 1/(1-p), written into `delta`
    itself piece by piece: the draws come from the generator in element order, the same sequence as one draw
    of the whole key."""
    keep, flat = _keep_threshold(drop_rate), delta.view(-1)
    for begin, end in _spans(flat):
        _dare_piece(flat[begin:end], keep, draws)
    return delta


def _as_ordered_bits(magnitudes: torch.Tensor) -> torch.Tensor | None:
    """Float32 magnitudes on the CPU as their int32 bit patterns, which order as the values do (a float >= 0
    orders as its bits; a NaN after +inf, as torch orders it, but NaNs among themselves by payload); None for
    any other tensor."""
    if magnitudes.dtype != torch.float32 or magnitudes.device.type != "cpu":
        return None
    return magnitudes.view(torch.int32)


def _magnitude_order(delta: torch.Tensor) -> torch.Tensor:
    """The flat positions of delta's elements from the smallest magnitude up, ties by position. Float32 on the
    CPU without a NaN is sorted by bit pattern (`_as_ordered_bits`): the same order, and torch sorts
    integers several times faster."""
    magnitude = delta.abs().flatten()
    bits = _as_ordered_bits(magnitude)
    keys = magnitude if bits is None or bool(magnitude.isnan().any()) else bits
    return torch.argsort(keys, stable=True)


def magnitude_ranks(delta: torch.Tensor) -> torch.Tensor:
    """Each element's rank by magnitude over the whole tensor, 0 = smallest, ties by position."""
    order = _magnitude_order(delta)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel(), device=order.device)
    return ranks.view(delta.shape)


def della_keep_probability(delta: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """DELLA's keep probabilities, float32: density - eps/2 + eps * rank/(n-1), clamped to [0, 1]. Computed
    in rank order (rank r's probability from float32(r)) and written to the elements in one float32
    scatter, instead of scattering int64 ranks and converting them: the same values."""
    n = delta.numel()
    # + 0.0: a low end of -0 (density and epsilon -0) is +0, so that no keep probability is -0, whose bit
    # pattern would not order as the value (`_kept_scaled`)
    low = torch.tensor(density - epsilon / 2.0 + 0.0, dtype=torch.float32, device=delta.device)
    if n == 1:
        return torch.full_like(delta, float(torch.tensor(density, dtype=torch.float32)))
    order = _magnitude_order(delta)
    fraction = torch.arange(n, device=delta.device).to(torch.float32) / torch.tensor(float(n - 1),
                                                                                      dtype=torch.float32)
    by_rank = (low + torch.tensor(epsilon, dtype=torch.float32, device=delta.device) * fraction).clamp_(0.0, 1.0)
    keep = torch.empty(n, dtype=torch.float32, device=delta.device)
    keep.scatter_(0, order, by_rank)
    return keep.view(delta.shape)


def _della_piece(delta, keep, draws: DrawStream):
    """One piece's DELLA drop, written into `delta` (keep: the piece's keep probabilities, >= +0)."""
    draw = draws.take(delta)
    return _kept_scaled(draw, keep, delta.div_(keep.clamp_min(torch.finfo(torch.float32).tiny)))


def _della_drop_in_place(delta: torch.Tensor, density: float, epsilon: float,
                         draws: DrawStream) -> torch.Tensor:
    keep = della_keep_probability(delta, density, epsilon).view(-1)
    flat = delta.view(-1)
    for begin, end in _spans(flat):
        _della_piece(flat[begin:end], keep[begin:end], draws)
    return delta


RADIX_BITS = 16      # the high bits of a float32 magnitude `_kth_smallest` buckets by (sign, exponent, 7 of mantissa)
RADIX_MIN = 1 << 16  # fewer elements: torch.kthvalue alone is as quick


def _kth_smallest(values: torch.Tensor, *ks: int) -> list:
    """The k-th smallest (1-based) of a flat tensor of magnitudes (>= 0), for each k: a selection, not a sort.
    In float32 on the CPU, one histogram of the high bits of the bit patterns (which order as the values do)
    finds the bucket that holds each k-th value, and torch.kthvalue runs on that bucket only: the same value
    (where the k-th is a NaN, a NaN, which every comparison treats alike)."""
    bits = _as_ordered_bits(values) if values.numel() >= RADIX_MIN else None
    if bits is None:
        return [torch.kthvalue(values, k).values for k in ks]
    return _select_in_buckets(bits >> (32 - RADIX_BITS), lambda in_bucket: values[in_bucket], ks)


def _kth_smallest_magnitude(flat: torch.Tensor, k: int) -> torch.Tensor:
    """`_kth_smallest(flat.abs(), k)[0]`; for float32 on the CPU without the magnitudes: the histogram counts
    the high bits of the bit patterns less the sign, and only the bucket's elements are made magnitudes."""
    if _as_ordered_bits(flat) is None or flat.numel() < RADIX_MIN:
        magnitude = flat.abs()
        return _kth_smallest(magnitude.cpu() if magnitude.device.type == "mps" else magnitude,
                             k)[0].to(flat.device)
    high = torch.bitwise_and(flat.view(torch.int32), _MAGNITUDE).bitwise_right_shift_(32 - RADIX_BITS)
    return _select_in_buckets(high, lambda in_bucket: flat[in_bucket].abs_(), (k,))[0]


def _select_in_buckets(high: torch.Tensor, bucket_values, ks) -> list:
    """The k-th smallest for each k, from `high` (each element's bucket: the high bits of its magnitude's bit
    pattern) and `bucket_values(mask)` (the magnitudes of the elements in a mask): the histogram finds the
    bucket that holds each k-th value, and torch.kthvalue runs on that bucket only."""
    at_or_below = torch.bincount(high, minlength=1 << (RADIX_BITS - 1)).cumsum_(0)
    out = []
    for k in ks:
        bucket = int(torch.searchsorted(at_or_below, k))
        below = int(at_or_below[bucket - 1]) if bucket else 0
        out.append(torch.kthvalue(bucket_values(high == bucket), k - below).values)
    return out


def _first_of_equal(flat: torch.Tensor, value: torch.Tensor, count: int, from_end: bool = False) -> torch.Tensor:
    """The positions of the first `count` elements equal to `value` (the last ones with from_end): the
    elements of a tie that a stable ascending sort ranks lowest (highest)."""
    if count <= 0:
        return torch.zeros(0, dtype=torch.int64, device=flat.device)
    positions = torch.nonzero(flat == value).flatten()
    return positions[max(0, positions.numel() - count):] if from_end else positions[:count]


def breadcrumbs_mask(delta: torch.Tensor, density: float, outlier_rate: float) -> torch.Tensor:
    """Breadcrumbs: drop the round(outlier_rate*n) largest changes and the smallest ones, keeping
    round(density*n) (at most what the outliers leave). Ranked by magnitude, ties by position (as a stable
    ascending sort would rank them), found by selection rather than a full sort."""
    n = delta.numel()
    large = _kept_count(outlier_rate, n)
    keep = min(_kept_count(density, n), n - large)
    small = n - large - keep
    if keep == 0:
        return torch.zeros_like(delta)
    flat = delta.abs().flatten()
    kept = torch.ones_like(flat, dtype=torch.bool)
    bounds = _kth_smallest(flat, *([small + 1] if small > 0 else []), *([n - large] if large > 0 else []))
    if small > 0:  # drop the `small` lowest ranks: everything below the lowest kept value, then the earliest ties
        lowest_kept = bounds[0]
        below = flat < lowest_kept
        kept &= ~below
        kept[_first_of_equal(flat, lowest_kept, small - int(torch.count_nonzero(below)))] = False
    if large > 0:  # drop the `large` highest ranks: everything above the highest kept value, then the latest ties
        highest_kept = bounds[-1]
        above = flat > highest_kept
        kept &= ~above
        kept[_first_of_equal(flat, highest_kept, large - int(torch.count_nonzero(above)), from_end=True)] = False
    return delta * kept.view(delta.shape)


# Elements per float64 block of a dot product: each block converted once into reused float64 buffers that stay
# in the CPU's cache, and no larger than a piece (merge_core/merge/pieces.py), so that the conversion runs on
# the calling thread (measured on a 12 M-element key, quiet machine: 1.9 ns per element in blocks of 2^15, 3.3
# in fresh blocks of 2^20; blocks of 2^16 took 0.8 quiet, but are split across the cores and stall whenever
# another thread holds the other core).
DOT_CHUNK = 1 << 15


def _dots64(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """(x.x, y.y, x.y) accumulated in float64, block by block, each block converted once (a float32 dot over
    millions of elements loses the small cosines Model Stock and SLERP divide by)."""
    fx, fy = x.flatten(), y.flatten()
    n = fx.numel()
    bx = torch.empty(min(n, DOT_CHUNK), dtype=torch.float64, device=fx.device)
    by = torch.empty_like(bx)
    xx = yy = xy = 0.0
    for start in range(0, n, DOT_CHUNK):
        end = min(n, start + DOT_CHUNK)
        px, py = bx[:end - start].copy_(fx[start:end]), by[:end - start].copy_(fy[start:end])
        xx += float(torch.dot(px, px))
        yy += float(torch.dot(py, py))
        xy += float(torch.dot(px, py))
    return xx, yy, xy


def _cosine_of(xx: float, yy: float, xy: float) -> float:
    """cos(x, y) from its dot products; 0 when either is zero."""
    if xx == 0 or yy == 0:
        return 0.0
    return xy / (xx * yy) ** 0.5


def _cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    return _cosine_of(*_dots64(x, y))


def model_stock_ratio(deltas: Sequence[torch.Tensor]) -> float:
    """Model Stock's t = N cos / (1 + (N-1) cos), cos the mean pairwise cosine of the task vectors."""
    n = len(deltas)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    cos = sum(_cosine(deltas[i], deltas[j]) for i, j in pairs) / len(pairs)
    return n * cos / (1.0 + (n - 1) * cos)


def geometric_median(points: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Weiszfeld's iteration from the weighted mean (each tensor one point)."""
    total = float(sum(weights))
    estimate = sum(p * (w / total) for p, w in zip(points, weights))
    for _ in range(MEDIAN_STEPS):
        inverse = [w / max(float(torch.linalg.vector_norm(p - estimate)), MEDIAN_DISTANCE_FLOOR)
                   for p, w in zip(points, weights)]
        scale = sum(inverse)
        update = sum(p * (c / scale) for p, c in zip(points, inverse))
        moved = float(torch.linalg.vector_norm(update - estimate))
        size = float(torch.linalg.vector_norm(update))
        estimate = update
        if moved <= MEDIAN_TOLERANCE * max(size, MEDIAN_DISTANCE_FLOOR):
            break
    return estimate


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, out: torch.Tensor | None = None) -> torch.Tensor:
    aa, bb, ab = _dots64(a, b)
    cos = 1.0 if aa == 0 or bb == 0 else _cosine_of(aa, bb, ab)
    target = _target(out, a)
    if abs(cos) > SLERP_PARALLEL:
        return torch.lerp(a, b, t, out=target)
    omega = torch.arccos(torch.tensor(max(-1.0, min(1.0, cos)), dtype=torch.float64))
    sin = torch.sin(omega)
    wa, wb = float(torch.sin((1.0 - t) * omega) / sin), float(torch.sin(t * omega) / sin)
    fa, fb, flat = a.reshape(-1), b.reshape(-1), target.view(-1)
    parts = list(_spans(fa))
    scaled_b = torch.empty(parts[0][1] if parts else 0, dtype=fa.dtype, device=fa.device)
    for begin, end in parts:  # a * wa + b * wb, each product rounded, as whole tensors would be
        part = flat[begin:end]
        torch.mul(fa[begin:end], wa, out=part)
        part.add_(torch.mul(fb[begin:end], wb, out=scaled_b[:end - begin]))
    return target


def _target(out: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Where a result of `like`'s shape is written: `out` (which may be base itself: every step reads a
    piece of base before it writes the same piece), or a new tensor."""
    return out if out is not None else torch.empty_like(like, memory_format=torch.contiguous_format)


def _combined(base: torch.Tensor, parts: Sequence[torch.Tensor], combine, alpha: float,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """base + combine(the parts' pieces) * alpha, piece by piece, written into `_target(out, base)`."""
    flat_base = base.reshape(-1)
    flats = [p.reshape(-1) for p in parts]
    target = _target(out, base)
    flat_out = target.view(-1)
    for begin, end in _spans(flat_base):
        merged = combine([f[begin:end] for f in flats])
        torch.add(flat_base[begin:end], merged * alpha, out=flat_out[begin:end])
    return target


def _sum(pieces: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum(pieces[1:], pieces[0])


def _dare_sum(base: torch.Tensor, loaders: Sequence[Loader], drop_rate: float, alpha: float,
              draws: DrawStream, out: torch.Tensor | None) -> torch.Tensor:
    """DARE: base + alpha * (the dropped task vectors summed in model order), with one float32 sum for the
    key instead of a task vector per model: model by model, each piece's task vector is made, dropped and
    added to the sum (the first model's is the sum), and the last model's pieces finish the result."""
    keep, flat_base = _keep_threshold(drop_rate), base.reshape(-1)
    parts = list(_spans(flat_base))
    total = scratch_like(flat_base) if len(loaders) > 1 else None
    scratch = torch.empty(parts[0][1] if parts else 0, dtype=flat_base.dtype, device=flat_base.device)
    target = _target(out, base)
    flat_out = target.view(-1)
    for i, load in enumerate(loaders):
        flat_w, first, last = load().reshape(-1), i == 0, i == len(loaders) - 1
        for begin, end in parts:
            piece = total[begin:end] if first and not last else scratch[:end - begin]
            torch.sub(flat_w[begin:end], flat_base[begin:end], out=piece)
            _dare_piece(piece, keep, draws)
            if not first and not last:
                total[begin:end].add_(piece)
            elif not first:  # the sum of every model's piece, in model order
                torch.add(total[begin:end], piece, out=piece)
            if last:
                torch.add(flat_base[begin:end], piece.mul_(alpha), out=flat_out[begin:end])
        del flat_w
    return target


def task_merge(method: str, base: torch.Tensor, loaders: Sequence[Loader], values: Mapping[str, float],
               seed: int = 0, key: str = "", weights: Sequence[float] = (),
               out: torch.Tensor | None = None) -> torch.Tensor:
    """One key's merged weight (float32) under a task-vector method, written into `out` and returned (a new
    tensor without it). `out` may be `base` itself: the methods read each piece of base before they write
    it, except the geometric median, which writes at the end.

    values: the key's resolved parameters (alpha, density, drop_rate, epsilon, outlier_rate as the method
    declares them); seed and key: the random methods' generator; weights: Average's and the geometric
    median's per-model weights, A first (empty: equal)."""
    if out is not None and not out.is_contiguous():  # a strided view: computed apart, then copied in
        return out.copy_(task_merge(method, base, loaders, values, seed, key, weights))
    alpha = float(values.get("alpha", 1.0))
    if method == "TIES":
        density = float(values["density"])
        deltas = list(_deltas(base, loaders))
        cuts = [_trim_cut(trim_threshold(d, density)) for d in deltas]
        return _combined(base, deltas, lambda pieces: disjoint_mean(
            [_trimmed(p, cut) for p, cut in zip(pieces, cuts)]), alpha, out)
    if method == "DARE":
        with _draw_stream(seed, key, base, len(loaders)) as draws:
            return _dare_sum(base, loaders, float(values["drop_rate"]), alpha, draws, out)
    if method == "DARE-TIES":
        rate = float(values["drop_rate"])
        with _draw_stream(seed, key, base, len(loaders)) as draws:
            dropped = [_dare_drop_in_place(d, rate, draws) for d in _deltas(base, loaders)]
        return _combined(base, dropped, disjoint_mean, alpha, out)
    if method == "DELLA":
        density, epsilon = float(values["density"]), float(values["epsilon"])
        with _draw_stream(seed, key, base, len(loaders)) as draws:
            dropped = [_della_drop_in_place(d, density, epsilon, draws) for d in _deltas(base, loaders)]
        return _combined(base, dropped, disjoint_mean, alpha, out)
    if method == "Breadcrumbs":
        density, outliers = float(values["density"]), float(values["outlier_rate"])
        masked = [breadcrumbs_mask(d, density, outliers) for d in _deltas(base, loaders)]
        return _combined(base, masked, _sum, alpha, out)
    if method == "Model Stock":
        deltas = list(_deltas(base, loaders))
        t = model_stock_ratio(deltas)
        mean = sum(deltas[1:], deltas[0]).div_(len(deltas))  # mean(W_i) - W0
        return torch.add(base, mean.mul_(t), out=_target(out, base))
    if method == "Geometric median":
        points = [base] + [load() for load in loaders]
        median = geometric_median(points, list(weights) or [1.0] * len(points))
        return median if out is None else out.copy_(median)
    if method == "SLERP":
        return slerp(base, loaders[0](), alpha, out)
    if method == "Average":
        w = list(weights) or [1.0] * (len(loaders) + 1)
        total = float(sum(w))
        target = torch.mul(base, w[0] / total, out=_target(out, base))
        for load, wi in zip(loaders, w[1:]):
            target += load() * (wi / total)
        return target
    raise ValueError(f"unknown task-vector method '{method}'")

"""SuperMerger's calculation modes, declared once as a table, each a per-key function on float32 tensors.

A calc mode replaces the linear formula of a merge mode for every key it applies to. `CALC_MODES` says, per
mode, which merge modes it is valid with, whether it uses beta and model C, whether ratio 0 keeps A's weight,
and whether it must see the checkpoint tensor layout (`merge_core.calc_layout`). The formulas follow
SuperMerger HEAD (see docs); ``a``/``b`` are the key's alpha/beta after block weights and specs.

Rules shared by every calc mode (`calc_applies`):
* only keys that belong to a block and whose checkpoint name contains "weight" or "bias" (SuperMerger's loop
  filter), present in every source the mode uses; any other key, and the VAE, keeps A's weight;
* 0-dim tensors keep A in tensor/tensor2 (a row slice of a scalar means nothing); the other modes compute
  them like any key;
* a key that is all zeros in A or B keeps A in cosineA/cosineB, where SuperMerger's formula gives NaN.

Every function returns the merged tensor in float32; the caller casts it to A's dtype.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from .calc_smooth import smooth_difference
from .methods import MERGE_METHODS
from .params import ALPHA, BETA, GAMMA, NORMAL, Param

WEIGHT_SUM = "Weight sum"
ADD_DIFFERENCE = "Add difference"
ALL_MERGE_MODES = tuple(MERGE_METHODS)
SELF_KEEP = ("to_out", "proj_out", "norm")  # `self` keeps A for keys whose checkpoint name contains these


@dataclass(frozen=True)
class CosineStat:
    """The model-wide range of A/B cosine similarity after SuperMerger's 1%/99% trimming."""
    smin: float
    smax: float
    count: int  # values kept after trimming


@dataclass(frozen=True)
class CalcArgs:
    """Per-merge inputs besides tensors and ratios: the key's checkpoint name, gamma, the cosine statistic."""
    key: str = ""
    gamma: float = GAMMA.default
    stat: CosineStat | None = None
    b_dtype: torch.dtype | None = None  # B's storage dtype when B is handed over already cast (smoothAdd)


def _f32(t):
    return None if t is None else t.to(torch.float32)


def _cosine_terms(A, B, normalize: bool):
    """(s, m) of one key: per-column cosine over dim 0 and the whole-tensor cosine, on float32."""
    A, B = _f32(A), _f32(B)
    if normalize:
        A, B = F.normalize(A, p=2, dim=0), F.normalize(B, p=2, dim=0)
    s = F.cosine_similarity(A, B, dim=0)
    m = torch.dot(A.reshape(-1), B.reshape(-1)) / (torch.norm(A) * torch.norm(B))
    return s, m


def _cosine(A, B, args: CalcArgs, normalize: bool, ratio: float):
    if args.stat is None:
        raise ValueError("cosine calc modes need the model-wide statistic (cosine_statistic) for "
                         f"{args.key or 'this key'}")
    s, m = _cosine_terms(A, B, normalize)
    if torch.isnan(m):  # A or B is all zeros: SuperMerger's weight would be NaN everywhere; keep A instead
        return _f32(A).clone()
    k = ((s + m) / 2 - args.stat.smin) / (args.stat.smax - args.stat.smin)
    k = (k - ratio).clamp(0.0, 1.0)
    return _f32(B) * (1 - k) + _f32(A) * k


def cosine_a(A, B, C, a, b, args):
    return _cosine(A, B, args, True, abs(a))


def cosine_b(A, B, C, a, b, args):
    return _cosine(A, B, args, False, a)


def train_difference(A, B, C, a, b, args):
    """A + sign(B-C) * s * |B-C| * 1.8a with s = |B-A| / (|B-C| + |B-A|) (0 where that is 0/0); A where B
    equals C on the whole key."""
    A, B, C = _f32(A), _f32(B), _f32(C)
    if torch.equal(B, C):
        return A.clone()
    return train_difference_values(A, B, C, a, b, args)


def train_difference_values(A, B, C, a, b, args):
    """trainDifference element by element, once B and C are known to differ somewhere in the key. Computed as
    A + (s * (B-C)) * 1.8a: sign(x) * |x| is x exactly, so the bits are the formula's, with fewer passes."""
    A, B, C = _f32(A), _f32(B), _f32(C)
    diff = B - C
    d1 = (B - A).abs_()
    total = diff.abs().add_(d1)
    s = d1.div_(total)
    # 0 where total is 0 (then 0/0): total = |B-C| + |B-A| is +0 there, and its bits are 0 exactly there (a
    # NaN's sign is clear after abs), so (bits - 1) >> 31 is -1 there and 0 elsewhere; an int mask in place
    # of `masked_fill_(total == 0, 0.0)`, whose boolean temporaries cost several float ops each
    zero = total.view(torch.int32).sub_(1).bitwise_right_shift_(31).bitwise_not_()
    s.view(torch.int32).bitwise_and_(zero)
    return s.mul_(diff).mul_(a * 1.8).add_(A)


def smooth_add(A, B, C, a, b, args):
    d = (_f32(B) - _f32(C)).to(args.b_dtype or B.dtype)  # SuperMerger stores B - C in B's tensor (dtype)
    return _f32(A) + a * smooth_difference(d)


def extract(A, B, C, a, b, args):
    A32 = _f32(A)
    P, Q = _f32(B) - A32, _f32(C) - A32
    c = F.cosine_similarity(P, Q, dim=-1).clamp(-1, 1).unsqueeze(-1)
    w = ((c + 1) / 2) ** args.gamma
    return (A32 + torch.lerp(P, Q, a) * torch.lerp(w, 1 - w, b)).reshape(A.shape)


def _swap(A, B, a, b, dim: int, n: int):
    """tensor/tensor2: B's slice [n*b, n*(a+b)) into A along ``dim``, or A's [n*(a+b-1), n*b) into B."""
    if a + b <= 1:
        out, src, lo, hi = _f32(A).clone(), _f32(B), int(n * b), int(n * (a + b))
    else:
        out, src, lo, hi = _f32(B).clone(), _f32(A), int(n * (a + b - 1)), int(n * b)
    index = [slice(None)] * out.dim()
    index[dim] = slice(lo, hi)
    out[tuple(index)] = src[tuple(index)]
    return out


def tensor_swap(A, B, C, a, b, args):
    if A.dim() == 0:
        return _f32(A).clone()
    return _swap(A, B, a, b, 0, A.shape[0])


def tensor2_swap(A, B, C, a, b, args):
    if A.dim() == 0:
        return _f32(A).clone()
    if A.dim() == 1:
        return _swap(A, B, a, b, 0, A.shape[0])
    n = A.shape[1] if A.shape[1] > 100 else A.shape[0]  # SuperMerger's bound rule, kept as is
    return _swap(A, B, a, b, 1, n)


def self_scale(A, B, C, a, b, args):
    if a == 0 or any(part in args.key for part in SELF_KEEP):
        return _f32(A).clone()
    return _f32(A) * a


@dataclass(frozen=True)
class CalcMode:
    name: str
    merge_modes: tuple[str, ...]   # merge modes it is valid with
    params: tuple[Param, ...]      # the parameters its formula reads (normal: those of the merge mode)
    needs_c: bool
    keeps_a: Callable[[float, float], bool]  # True when these ratios leave every key at A's weight
    layout_dependent: bool         # must compute on checkpoint layout (fused q/k/v, untransposed projection)
    compute: Callable | None       # (A, B, C, a, b, CalcArgs) -> float32 tensor; None for normal
    bounded: bool = False          # a and b must lie in [0, 1]
    uses_stat: bool = False        # needs the model-wide cosine statistic
    reads_b: bool = True
    # The formula element by element (each merged element depends on the sources' elements at its position
    # only), valid once the whole key has been checked: `keeps_a_if_b_equals_c` modes keep A when B equals C
    # on the whole key. None: the formula needs the whole key (per-column or whole-tensor terms, filters,
    # slices). A merge may then compute the key piece by piece (`key_compute.piece_merger`).
    elementwise: Callable | None = None
    keeps_a_if_b_equals_c: bool = False

    @property
    def uses_beta(self) -> bool:
        return BETA in self.params

    @property
    def uses_gamma(self) -> bool:
        return GAMMA in self.params


def _never(a: float, b: float) -> bool:
    return False


# One row per calc mode, in the order the UI lists them. A calc mode is a variant of the merge modes it
# names: it replaces their formula (`compute`) and reads the parameters it declares.
CALC_MODES: dict[str, CalcMode] = {m.name: m for m in (
    CalcMode(NORMAL, merge_modes=ALL_MERGE_MODES, params=(), needs_c=False, keeps_a=_never,
             layout_dependent=False, compute=None),
    CalcMode("cosineA", merge_modes=(WEIGHT_SUM,), params=(ALPHA,), needs_c=False, keeps_a=_never,
             layout_dependent=True, compute=cosine_a, uses_stat=True),
    CalcMode("cosineB", merge_modes=(WEIGHT_SUM,), params=(ALPHA,), needs_c=False, keeps_a=_never,
             layout_dependent=True, compute=cosine_b, uses_stat=True),
    CalcMode("trainDifference", merge_modes=(ADD_DIFFERENCE,), params=(ALPHA,), needs_c=True,
             keeps_a=lambda a, b: a == 0, layout_dependent=False, compute=train_difference,
             elementwise=train_difference_values, keeps_a_if_b_equals_c=True),
    CalcMode("smoothAdd", merge_modes=(ADD_DIFFERENCE,), params=(ALPHA,), needs_c=True,
             keeps_a=lambda a, b: a == 0, layout_dependent=True, compute=smooth_add),
    CalcMode("extract", merge_modes=(ADD_DIFFERENCE,), params=(ALPHA, BETA, GAMMA), needs_c=True, keeps_a=_never,
             layout_dependent=True, compute=extract, bounded=True),
    CalcMode("tensor", merge_modes=(WEIGHT_SUM,), params=(ALPHA, BETA), needs_c=False,
             keeps_a=lambda a, b: a == 0 and b <= 1, layout_dependent=True, compute=tensor_swap, bounded=True),
    CalcMode("tensor2", merge_modes=(WEIGHT_SUM,), params=(ALPHA, BETA), needs_c=False,
             keeps_a=lambda a, b: a == 0 and b <= 1, layout_dependent=True, compute=tensor2_swap, bounded=True),
    CalcMode("self", merge_modes=(WEIGHT_SUM,), params=(ALPHA,), needs_c=False,
             keeps_a=lambda a, b: a == 0 or a == 1, layout_dependent=False, compute=self_scale, reads_b=False),
)}
CALC_MODE_NAMES = tuple(CALC_MODES)  # the combo's choices, in the order the UI lists them


def variants_of(merge_mode: str) -> tuple[str, ...]:
    """The calc modes that pair with `merge_mode` (normal first): its declared variants."""
    return tuple(m.name for m in CALC_MODES.values() if merge_mode in m.merge_modes)


def get_calc_mode(name: str) -> CalcMode:
    if name not in CALC_MODES:
        raise ValueError(f"unknown calc mode {name!r}; valid: {', '.join(CALC_MODE_NAMES)}")
    return CALC_MODES[name]


# ---------------------------------------------------------------- the cosine statistic (once per A/B pair)

def _percentile_midpoint(ordered: torch.Tensor, q: float) -> float:
    """numpy's ``percentile(values, q, method="midpoint")`` of an ascending float64 tensor."""
    pos = (ordered.numel() - 1) * (q / 100)
    lo, hi = int(pos // 1), -int(-pos // 1)
    a = ordered[lo].item()
    if lo == hi:
        return a
    b = ordered[lo + 1].item()
    return b - (b - a) * 0.5  # numpy's _lerp at t = 0.5


def trimmed_range(values: torch.Tensor) -> CosineStat:
    """SuperMerger's trimming: drop NaNs, then values below the 1st percentile, then (recomputed on what is
    left) values above the 99th; the min and max of the rest."""
    v = values.to(torch.float64).reshape(-1)
    v = v[~torch.isnan(v)]
    if v.numel() == 0:
        raise ValueError("cosine calc mode: A and B share no tensor with a defined cosine similarity")
    v = torch.sort(v).values
    v = v[v >= _percentile_midpoint(v, 1)]
    v = v[v <= _percentile_midpoint(v, 99)]
    return CosineStat(v[0].item(), v[-1].item(), v.numel())


def cosine_values(A, B, normalize: bool) -> torch.Tensor:
    """One key's contribution to the statistic: s for cosineA (normalized), (s + m) / 2 for cosineB."""
    s, m = _cosine_terms(A, B, normalize)
    return (s if normalize else (s + m) / 2).reshape(-1)


@torch.no_grad()  # model weights may require grad outside ComfyUI's inference mode: never build a graph
def cosine_statistic(pairs: Iterable, mode: str) -> CosineStat:
    """The statistic of ``mode`` (cosineA/cosineB) over (A, B) tensor pairs in checkpoint layout: every UNet
    and text-encoder tensor present in both models, no block or weight/bias filter, never the VAE."""
    normalize = {"cosineA": True, "cosineB": False}[mode]
    parts = [cosine_values(A, B, normalize).to(torch.float64).cpu() for A, B in pairs]
    if not parts:
        raise ValueError(f"{mode}: models A and B share no tensor to compute the cosine statistic on")
    return trimmed_range(torch.cat(parts))


class StatCache:
    """Cosine statistics by (mode, pair token): computed once per pair of source models, so an XY plot or a
    re-queue does not recompute them. The token is the caller's identity of the pair; a small LRU."""

    def __init__(self, size: int = 8):
        self.size, self._items, self.misses = size, {}, 0

    def get(self, mode: str, token, compute: Callable[[], CosineStat]) -> CosineStat:
        key = (mode, token)
        if key in self._items:
            self._items[key] = self._items.pop(key)  # most recent last
            return self._items[key]
        self.misses += 1
        value = compute()
        self._items[key] = value
        while len(self._items) > self.size:
            self._items.pop(next(iter(self._items)))
        return value

    def clear(self):
        self._items.clear()


STAT_CACHE = StatCache()


# ---------------------------------------------------------------- rules: which keys, which pairs, which ratios

def is_merged_name(canonical: str) -> bool:
    """SuperMerger merges only parameters whose checkpoint name contains "weight" or "bias"."""
    return "weight" in canonical or "bias" in canonical


def calc_applies(mode: CalcMode, canonical: str, block: str | None) -> bool:
    """Whether ``mode`` computes this key (True) or the key keeps A's weight (False). Presence of the key in
    the sources and shapes are the engine's business."""
    return mode.compute is not None and block is not None and is_merged_name(canonical)


def keeps_a(mode: CalcMode, canonical: str, block: str | None, a: float, b: float) -> bool:
    """True when the key's merged weight is A's for every possible tensor: the engine's per-calc-mode no-op
    test (no patch, counted "unchanged", not re-merged). ``normal`` is decided by the merge method's steps."""
    if mode.compute is None:
        raise ValueError("keeps_a: the normal calc mode's no-ops come from the merge method's steps")
    if not calc_applies(mode, canonical, block) or mode.keeps_a(a, b):
        return True
    return mode.name == "self" and any(part in canonical for part in SELF_KEEP)


def valid_pairs_text() -> str:
    """'Weight sum: cosineA, cosineB, ...; Add difference: ...; normal: every mode', from the table."""
    by_mode: dict[str, list[str]] = {}
    for m in CALC_MODES.values():
        if m.name != NORMAL:
            for merge_mode in m.merge_modes:
                by_mode.setdefault(merge_mode, []).append(m.name)
    return "; ".join(f"{k}: {', '.join(v)}" for k, v in by_mode.items()) + "; normal: every mode"


def check_pair(merge_mode: str, calc_mode: str) -> None:
    """Raises ValueError naming both when ``calc_mode`` does not work with ``merge_mode`` (SuperMerger
    silently switches the mode; we refuse)."""
    mode = get_calc_mode(calc_mode)
    if merge_mode not in mode.merge_modes:
        raise ValueError(f"calc mode {calc_mode!r} does not work with mode {merge_mode!r}: it needs "
                         f"{' or '.join(repr(m) for m in mode.merge_modes)}. Valid pairs: {valid_pairs_text()}")


def check_gamma(calc_mode: str, gamma: float) -> None:
    mode = get_calc_mode(calc_mode)
    if mode.uses_gamma and not GAMMA.lo <= gamma <= GAMMA.hi:
        raise ValueError(f"calc mode {calc_mode!r}: calc_option (gamma) {gamma} is outside "
                         f"[{GAMMA.lo:g}, {GAMMA.hi:g}]")


def merge_params(method, calc_mode: str = NORMAL) -> tuple[Param, ...]:
    """The parameters a merge in `method` (a MergeMethod) with `calc_mode` reads: the method's, and the calc
    mode's (which replaces the method's formula but pairs only with methods whose parameters it covers)."""
    own = get_calc_mode(calc_mode).params
    return tuple(dict.fromkeys(method.params + own))


def uses_beta(method, calc_mode: str = NORMAL) -> bool:
    """Whether beta decides any weight of this merge: the one rule for sockets, resolution and recipes."""
    return BETA in merge_params(method, calc_mode)


def check_ratios(calc_mode: str, a: float, b: float, where: str) -> None:
    """Rejects a key's alpha/beta outside [0, 1] for the bounded modes (tensor, tensor2, extract); ``where``
    names the key's block (and key) in the message."""
    mode = get_calc_mode(calc_mode)
    if not mode.bounded:
        return
    bad = [f"{name} {value:g}" for name, value in (("alpha", a), ("beta", b)) if not 0 <= value <= 1]
    if bad:
        raise ValueError(f"calc mode {calc_mode!r} needs alpha and beta within [0, 1], but {where} has "
                         f"{' and '.join(bad)}")


# ---------------------------------------------------------------- one key

@torch.no_grad()
def calc_merge(mode, A, B, C, a: float, b: float, args: CalcArgs = CalcArgs()) -> torch.Tensor:
    """The merged float32 tensor of one key (checkpoint layout) under calc mode ``mode`` (name or CalcMode).
    The caller has decided that the mode applies (`calc_applies`) and checked ratios (`check_ratios`)."""
    mode = get_calc_mode(mode) if isinstance(mode, str) else mode
    if mode.compute is None:
        raise ValueError("calc_merge: the normal calc mode is the merge method's own formula")
    if mode.needs_c and C is None:
        raise ValueError(f"calc mode {mode.name!r} needs model C for {args.key or 'this key'}")
    return mode.compute(A, B, C, a, b, args)

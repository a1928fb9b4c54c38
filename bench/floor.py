"""The floor: the least any merge can cost on this device.

Reading both source models' bytes once and writing one model's bytes once, with plain torch on tensors
already in memory: `torch.lerp(a, b, r)` (= a + (b - a) * r in one pass) for every UNet and text-encoder
tensor, in the dtype the merge path keeps the weights in. Two variants:
  strict  into output buffers allocated (and touched) beforehand: pure memory traffic, the true floor;
  alloc   into fresh tensors, as any merge that makes a new model must (on a CPU that includes the
          kernel zeroing the new pages; a GPU's caching allocator hides it).
The ratio of the full-merge time to the strict floor says how much of the merge is overhead. Every bench that
reports a full merge against the floor does it through `versus`, so "the floor" means the strict floor
everywhere, with the fresh-tensor figure beside it, and one target.
"""
from __future__ import annotations

import statistics
import time

# torch is imported where a tensor is touched: bench.run's parent and `python -m bench.report` read TARGET,
# judge and versus without loading torch.

TARGET = 3.0  # full merge / strict floor, on a GPU (a CPU's page zeroing and patch bookkeeping dominate there)


def judge(seconds: float, fl: dict) -> tuple[float, bool | None]:
    """(full merge / strict floor, whether it meets TARGET: None off a GPU, where the target does not apply)."""
    ratio = seconds / fl["strict_s"]
    return ratio, (ratio <= TARGET) if fl["device"].startswith("cuda") else None


def versus(seconds: float, fl: dict) -> str:
    """`seconds` of one full merge against `measure`'s result, in the words every bench uses."""
    ratio, ok = judge(seconds, fl)
    verdict = "not measurable here (no GPU), CPU figure shown" if ok is None else ("MET" if ok else "MISSED")
    return (f"{ratio:.1f}x the floor ({fl['strict_s']:.2f} s into preallocated outputs), "
            f"{seconds / fl['alloc_s']:.1f}x the fresh-tensor floor ({fl['alloc_s']:.2f} s) "
            f"[target <= {TARGET:.0f}x on a GPU: {verdict}]")


def source_tensors(src) -> list[tuple]:
    """(a, b) pairs of every floating-point UNet + text-encoder weight of A and B (the merged keys)."""
    pairs = []
    for pa, pb, keys in ((src.model_a, src.model_b, src.unet_keys),
                         (src.clip_a.patcher, src.clip_b.patcher, src.clip_keys)):
        sa, sb = pa.model_state_dict(), pb.model_state_dict()
        pairs += [(sa[k], sb[k]) for k in keys if k in sb and sa[k].is_floating_point()]
    return pairs


def _sync(t) -> None:
    if t.device.type == "cuda":
        import torch

        torch.cuda.synchronize()


def strict_once(pairs, outs, ratio: float = 0.5) -> float:
    import torch

    t0 = time.perf_counter()
    for (a, b), o in zip(pairs, outs):
        torch.lerp(a, b, ratio, out=o)
    _sync(outs[0])
    return time.perf_counter() - t0


def alloc_once(pairs, ratio: float = 0.5) -> float:
    import torch

    t0 = time.perf_counter()
    out = [torch.lerp(a, b, ratio) for a, b in pairs]
    _sync(out[0])
    seconds = time.perf_counter() - t0
    del out
    return seconds


def measure(src, reps: int = 3) -> dict:
    import torch

    pairs = source_tensors(src)
    outs = [torch.empty_like(a) for a, _ in pairs]
    strict_once(pairs, outs)  # first touch of the output pages, untimed
    strict = [strict_once(pairs, outs) for _ in range(reps)]
    del outs
    alloc = [alloc_once(pairs) for _ in range(reps)]
    nbytes = sum(a.numel() * a.element_size() for a, _ in pairs)
    return {"strict": strict, "alloc": alloc, "strict_s": statistics.median(strict),
            "alloc_s": statistics.median(alloc), "tensors": len(pairs), "model_bytes": nbytes,
            "dtype": str(pairs[0][0].dtype).replace("torch.", ""), "device": str(pairs[0][0].device)}

"""The floor: the least any merge can cost on this device.

Reading both source models' bytes once and writing one model's bytes once, with plain torch on tensors
already in memory: `torch.lerp(a, b, r)` (= a + (b - a) * r in one pass) for every UNet and text-encoder
tensor, in the dtype the merge path keeps the weights in. A merge that goes through ModelPatcher cannot
beat this; the ratio of the full-merge time to it says how much of the merge is overhead.
"""
from __future__ import annotations

import time

import torch


def source_tensors(src) -> list[tuple]:
    """(a, b) pairs of every floating-point UNet + text-encoder weight of A and B (the merged keys)."""
    pairs = []
    for pa, pb, keys in ((src.model_a, src.model_b, src.unet_keys), (src.clip_a.patcher, src.clip_b.patcher,
                                                                     src.clip_keys)):
        sa, sb = pa.model_state_dict(), pb.model_state_dict()
        pairs += [(sa[k], sb[k]) for k in keys if k in sb and sa[k].is_floating_point()]
    return pairs


def floor_once(pairs, ratio: float = 0.5) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        out = [torch.lerp(a, b, ratio) for a, b in pairs]
    if out and out[0].device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    del out
    return seconds


def measure(src, reps: int = 3) -> dict:
    pairs = source_tensors(src)
    times = [floor_once(pairs) for _ in range(reps)]
    nbytes = sum(a.numel() * a.element_size() for a, _ in pairs)
    return {"times": times, "tensors": len(pairs), "model_bytes": nbytes,
            "dtype": str(pairs[0][0].dtype).replace("torch.", ""), "device": str(pairs[0][0].device)}

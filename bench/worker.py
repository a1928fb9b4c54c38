"""One benchmark subprocess: loads checkpoints A and B once, measures, prints one JSON result line.

Roles (``python -m bench.worker ROLE``):
  timing  full merges, ours and native interleaved in one process (a warm-up of each, then `--reps` pairs
          in alternating order, so drift from other load on the machine hits both alike), then the floor
          and `bench.diagnose` (where the patch path's time goes).
  ours    peak RSS of one full merge, then of the XY plot (incremental engine), with their times.
  native  the same with ModelMergeBlocks / CLIPMergeSimple and re-queued ModelMergeBlocks per XY cell.
Ours and native peaks come from separate processes so that neither sees the other's allocations.
`--smoke` (CI's bench smoke): no warm-up, two XY cells, the floor and the diagnosis once; the figures mean
little.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

MARK = "BENCH_RESULT "


def _timing(src, reps: int, smoke: bool) -> dict:
    from . import diagnose, floor, merges, workloads

    ratios = workloads.native_ratios(src.unet_keys, src.clip_keys)
    runs = {"ours": lambda: merges.full_ours(src), "native": lambda: merges.full_native(src, ratios)}
    out = {"native_ratios": ratios, "warmup": {}, "ours": [], "native": []}
    warmups = () if smoke else ("ours", "native")
    for name in warmups:
        out["warmup"][name] = runs[name]()
        merges.reset()
    for i in range(reps):
        order = ("ours", "native") if i % 2 == 0 else ("native", "ours")
        for name in order:
            out[name].append(runs[name]())
            merges.reset()
    out["floor"] = floor.measure(src, reps=1 if smoke else 3)
    out["diagnose"] = diagnose.measure(src, rounds=1 if smoke else 2)
    return out


def _memory(src, role: str, smoke: bool) -> dict:
    from . import merges, workloads
    from .memory import PeakRSS, rss_bytes

    ratios = workloads.native_ratios(src.unet_keys, src.clip_keys)
    xy_ratios = workloads.SMOKE_XY_RATIOS if smoke else workloads.XY_RATIOS
    out = {"rss_sources": rss_bytes()}
    with PeakRSS() as p:
        build, total, cpu, patched = (merges.full_ours(src) if role == "ours" else
                                      merges.full_native(src, ratios))
    out["full"] = {"build": build, "total": total, "cpu": cpu, "patched": patched, "rss_start": p.start, "rss_peak": p.peak, "method": p.method}
    merges.reset()
    with PeakRSS() as p:
        if role == "ours":
            first, cells, stats = merges.xy_ours(src, xy_ratios)
            out["xy_stats"] = stats
        else:
            first, cells = merges.xy_native(src, ratios, xy_ratios)
    out["xy"] = {"first": first, "cells": cells, "rss_start": p.start, "rss_peak": p.peak}
    merges.reset()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.worker")
    p.add_argument("role", choices=("timing", "ours", "native"))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="no warm-up, two XY cells, floor and diagnosis once")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    from .env import setup_comfy

    mm = setup_comfy()
    import torch

    from . import merges

    # ComfyUI executes every prompt under inference_mode (execution.py); so do we.
    with torch.inference_mode():
        return _run(args, mm, torch, merges, t0)


def _run(args, mm, torch, merges, t0) -> int:
    src, load_s = merges.load_sources()
    result = {"role": args.role, "device": str(mm.get_torch_device()),
              "unet_dtype": str(src.model_a.model_dtype()).replace("torch.", ""),
              "unet_keys": len(src.unet_keys), "clip_keys": len(src.clip_keys), "load_s": load_s,
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    if args.role == "timing":
        result.update(_timing(src, args.reps, args.smoke))
    else:
        result.update(_memory(src, args.role, args.smoke))
    result["wall_s"] = time.perf_counter() - t0
    sys.stdout.write(MARK + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

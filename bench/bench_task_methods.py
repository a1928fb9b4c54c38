"""Task-vector methods: what each costs against the linear merge of the same models, and its peak memory.

    flock /tmp/elemental-heavy.lock "$PYTHON" -m bench.bench_task_methods [--reps N]
    ... --smoke     CI's bench smoke: every method per key on small synthetic shapes (the same task_merge code
                    the full merges run), no checkpoint loaded; nothing written to bench/results/

Full (bench/results/task_methods.txt), the SD1.5-layout test checkpoints A and B loaded in-process with
ComfyUI's default dtypes, and C = A merged with B half and half as a ComfyUI patch (no third checkpoint in RAM;
its weight is computed per key, for every method alike):
  [normal]  ElementalMerge "Triple sum" over A, B, C (the linear mode of three models), execute + load of the
            UNet and the text encoder; "Weight sum" over A, B for SLERP's comparison. --reps runs of each
            first, untimed (the first merges of a process ran up to twice as long), then one right before and
            one right after each method: its ratio is to the mean of those two (a shared machine that slows
            down or speeds up moves the baseline with it). Every run starts from a trimmed heap
            (`merges.reset`), so that no run reuses memory the one before it freed.
  [method]  each task-vector method's full merge over A, B, C (SLERP: A, B), one run: seconds, the ratio to
            the linear mode of the same models run beside it, and the peak RSS above the state a user starts
            in (sources loaded, nothing merged), against one float32 copy of the largest key per model.
Targets (the method issue): every method at most 3x normal, the geometric median at most 10x.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench import merges  # noqa: E402
from bench.bench_calc_modes import model_c  # noqa: E402
from bench.env import pack_module  # noqa: E402
from bench.machine import describe as describe_machine  # noqa: E402
from bench.memory import PeakRSS  # noqa: E402
from bench.results_log import ResultsLog  # noqa: E402

OUT = os.path.join(REPO, "bench", "results", "task_methods.txt")
METHODS = ("TIES", "DARE", "DARE-TIES", "DELLA", "Breadcrumbs", "Model Stock", "Geometric median", "SLERP",
           "Average")
TARGET = {"Geometric median": 10.0}
DEFAULT_TARGET = 3.0
VALUES = {"alpha": 0.5, "density": 0.2, "drop_rate": 0.9, "epsilon": 0.1, "outlier_rate": 0.01}


def _normal_of(method: str) -> str:
    """The linear mode over the same models: Weight sum for SLERP (A, B), Triple sum for the others."""
    return "Weight sum" if method == "SLERP" else "Triple sum"


def full(src, method: str, c) -> tuple[float, int]:
    """(seconds from ElementalMerge.execute to weights ready, peak RSS above the start in bytes)."""
    nodes = pack_module("nodes.merge_nodes")
    two = method in ("SLERP", "Weight sum")
    kw = {} if two else dict(model_c=c[0], clip_c=c[1])
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        out = nodes.ElementalMerge.execute(model_a=src.model_a, model_b=src.model_b, mode=method, beta=0.25,
                                           print_change=False, clip_a=src.clip_a, clip_b=src.clip_b,
                                           merge_seed=1, model_weights="", **VALUES, **kw)
        merges._mm().load_models_gpu([out[0], out[1].load_model()])
        seconds = time.perf_counter() - t0
    del out
    merges.reset()
    return seconds, peak.peak - peak.start


def per_key(shapes, reps: int) -> list[str]:
    """Every method on random float32 keys of `shapes` (three models: A the base, B and C), seconds per key."""
    import torch

    tv = pack_module("merge_core.merge.task_vectors")
    lines = []
    for shape in shapes:
        g = torch.Generator().manual_seed(0)
        base = torch.randn(shape, generator=g)
        models = [base + 0.01 * torch.randn(shape, generator=g) for _ in range(2)]
        normal = []
        for _ in range(reps):
            t0 = time.perf_counter()
            base.clone().mul_(0.5).add_(models[0], alpha=0.25).add_(models[1], alpha=0.25)
            normal.append(time.perf_counter() - t0)
        n = statistics.median(normal)
        for method in METHODS:
            loaders = [lambda m=m: m.clone() for m in (models[:1] if method == "SLERP" else models)]
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                tv.task_merge(method, base, loaders, VALUES, 1, "key")
                times.append(time.perf_counter() - t0)
            s = statistics.median(times)
            lines.append(f"[key] {'x'.join(map(str, shape)):<14} {method:<17} {s * 1e3:8.2f} ms = {s / n:6.1f}x "
                         "the three-model lerp")
    return lines


def run(a) -> int:
    log = ResultsLog("task-vector methods benchmark", describe_machine())
    say = log.say
    pack_module("nodes.merge_nodes")  # imports ComfyUI (CPU unless CUDA is usable) and the pack
    if a.smoke:
        for line in per_key([(64, 32), (8, 4, 3, 3)], 1):
            say(line)
        log.write(OUT, True)
        return 0
    src, load_s = merges.load_sources()
    c = model_c(src)
    say(f"# checkpoints A, B loaded in {load_s:.1f} s (untimed); weights {src.model_a.model_dtype()}; "
        "C = A and B half and half, as a patch")
    largest = max(src.model_a.model_state_dict().values(), key=lambda t: t.numel())
    say(f"# one float32 copy of the largest key: {largest.numel() * 4 / 2**20:.0f} MiB")
    for _ in range(a.reps):  # warm-up: the first merges of a process ran up to twice as long as later ones
        for mode in ("Triple sum", "Weight sum"):
            full(src, mode, c)
    measured, beside = {}, {}
    for method in METHODS:  # each between two runs of its normal mode, moments apart
        normal = _normal_of(method)
        before = full(src, normal, c)
        measured[method] = full(src, method, c)
        beside[method] = (before, full(src, normal, c))
    failed = []
    for method in METHODS:
        s, rss = measured[method]
        (b, b_rss), (f, f_rss) = beside[method]
        base = (b + f) / 2
        target = TARGET.get(method, DEFAULT_TARGET)
        ok = s / base <= target
        failed += [] if ok else [method]
        say(f"[method] {method:<17} {s:7.2f} s = {s / base:5.2f}x normal (target <= {target:g}: "
            f"{'met' if ok else 'MISSED'}), peak RSS +{rss / 2**20:.0f} MiB; {_normal_of(method)} "
            f"{b:.2f} s before, {f:.2f} s after, peak RSS +{max(b_rss, f_rss) / 2**20:.0f} MiB")
    say("SUMMARY " + ("every target met" if not failed else "targets missed: " + ", ".join(failed)))
    log.write(OUT, False)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    import torch

    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        return run(a)


if __name__ == "__main__":
    sys.exit(main())

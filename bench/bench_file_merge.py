"""Time and peak memory of the file-to-file merge (`python -m merge_core merge`) against the I/O floor.

Run (the SDXL fixtures are built on first use, about 30 s and 1.3 GB RSS each, and cached):
    source scripts/env.sh && flock /tmp/elemental-heavy.lock $PYTHON -m bench.bench_file_merge [--reps N]
    source scripts/env.sh && $PYTHON -m bench.bench_file_merge --smoke     # SD1.5 test_A/B/C, results under $TMPDIR

Workloads, each a child process `$PYTHON -m merge_core merge ... --quiet --no-hash --precision fp16` on the
full-size seeded SDXL fixtures (devkit.fixtures_arch sdxl A/B/C, 6.9 GB fp16 each): a Weight sum with an
elemental spec (two sources), Add difference (three sources), Add difference with calc mode trainDifference, and
Weight sum with calc mode cosineA (its model-wide statistic takes a first pass over A and B: two reads of each
source, so the targets are not applied to it), each `--reps` times (default 2). The floor of each is
bench.io_floor in a child process of its own: every tensor of the same sources read with one `os.preadv` per
tensor (as the merge's reader does) and a file of the output's size written, no merge. Floor and merge
alternate (floor first in even repetitions, merge first in odd ones), after --settle seconds of rest each;
the ratio is the median of the per-pair ratios, the times shown the medians.

Peak RSS is the child's `ru_maxrss` from `os.wait4` (the kernel's peak for that process alone, whole run,
interpreter and torch included). Time is wall clock from spawn to exit. Page cache (`--cache`): `cold`
(default) evicts the sources' cached pages before every run, floor and merge alike, with
posix_fadvise(POSIX_FADV_DONTNEED) on those files only (nothing else on the machine is dropped), so each run
reads from this machine's disk (a virtual disk may still be cached by its host); `warm` evicts nothing (three
6.9 GB sources do not all stay cached in 24 GiB). Each output is deleted right after its run (pages not yet
written back are then dropped, not written). A thread samples the machine's MemAvailable and kills the child
if it falls below --guard-gib. Results: stdout and bench/results/file_merge.json (a `--smoke` run writes
under $TMPDIR instead).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench.env import CHECKPOINT_DIR, REPO_ROOT, SMOKE_DIR
from bench.machine import describe as describe_machine
from bench.memory_guard import MemoryGuard
from devkit.proc_memory import available_bytes

# This process imports no torch and stays small: a child's ru_maxrss starts from the RSS of the process it
# was forked from (the kernel keeps the larger of the two across exec), so a large parent would inflate it.

HERE = os.path.dirname(os.path.abspath(__file__))
GIB = 2 ** 30
SPEC = "OUT05:attn2:0.25\nIN04-IN05::0.75\nBASE::0.125"  # bench_save's spec (valid for SD1 and SDXL)
TARGET_RSS_GIB = 2.0
TARGET_RATIO = 1.5

# name -> (source letters, merge arguments, what it is, whether the targets apply)
WORKLOADS = {
    "weight_sum_spec": ("AB", ["--mode", "Weight sum", "--alpha", "0.3", "--spec", SPEC],
                        "Weight sum, alpha 0.3, elemental spec", True),
    "add_difference": ("ABC", ["--mode", "Add difference", "--alpha", "0.3", "--spec", SPEC],
                       "Add difference (A + (B - C) x alpha), 3 sources, same spec", True),
    "train_difference": ("ABC", ["--mode", "Add difference", "--alpha", "0.3", "--calc-mode", "trainDifference",
                                 "--spec", SPEC],
                         "Add difference, calc mode trainDifference, 3 sources, same spec", True),
    "cosineA": ("AB", ["--mode", "Weight sum", "--alpha", "0.3", "--calc-mode", "cosineA", "--spec", SPEC],
                "Weight sum, calc mode cosineA (first pass for its statistic), same spec", False),
}


def sources(smoke: bool) -> tuple[dict, str]:
    """{letter: path} of A, B, C and what they are."""
    if smoke:
        paths = {n: os.path.join(CHECKPOINT_DIR, f"test_{n}.safetensors") for n in "ABC"}
        missing = [p for p in paths.values() if not os.path.isfile(p)]
        if missing:
            sys.exit(f"missing {missing}: run `python -m devkit.checkpoints {CHECKPOINT_DIR}`")
        return paths, "seeded SD1.5 test_A/B/C"
    # Built (or found in the cache) by a child process, so that torch stays out of this one.
    lines = subprocess.run([sys.executable, "-m", "devkit.fixtures_arch", CHECKPOINT_DIR, "sdxl:A", "sdxl:B",
                            "sdxl:C"], cwd=REPO_ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout
    paths = dict(zip("ABC", lines.split()))
    return paths, "seeded full-size SDXL base fixtures A/B/C (3.47 B params, 6.9 GB fp16 each)"


def evict(paths: list[str]) -> None:
    """Drops these files' clean pages from the page cache (theirs only)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def run_child(cmd: list[str], out: str, guard: int) -> dict:
    """Runs `cmd` (which writes `out`), returns seconds, peak RSS and output size; deletes `out`."""
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a full pipe would block the child
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        with MemoryGuard(proc.pid, guard, interval=0.2) as watch:
            _, status, usage = os.wait4(proc.pid, 0)  # reaps it: ru_maxrss is this child's own peak
            seconds = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        text = log.read().decode(errors="replace")
    size = os.path.getsize(out) if os.path.exists(out) else 0
    if os.path.exists(out):
        os.remove(out)
    row = {"seconds": round(seconds, 2), "peak_rss_gib": round(usage.ru_maxrss * 1024 / GIB, 3),
           "output_gb": round(size / 1e9, 3), "min_machine_available_gib": round(watch.min_available / GIB, 2)}
    if proc.returncode != 0:
        row["failed"] = (f"exit {proc.returncode}" + (" (killed by the memory guard)" if watch.killed else "")
                         + ": " + text.strip()[-300:])
    return row


def merge_cmd(python: str, paths: list[str], args: list[str], out: str) -> list[str]:
    return [python, "-m", "merge_core", "merge", *paths, "-o", out, *args, "--precision", "fp16",
            "--quiet", "--no-hash"]


def floor_cmd(python: str, paths: list[str], out: str) -> list[str]:
    return [python, "-m", "bench.io_floor", out, *paths]


def measure(name: str, paths: list[str], args: list[str], reps: int, cache: str, settle: float, out_dir: str,
            guard: int) -> dict:
    python = sys.executable
    floors, merges = [], []
    for rep in range(reps):
        order = ("floor", "merge") if rep % 2 == 0 else ("merge", "floor")
        for what in order:
            out = os.path.join(out_dir, f"bench_file_merge_{what}_{os.getpid()}.safetensors")
            if cache == "cold":
                evict(paths)
            time.sleep(settle)  # lets the previous run's deleted output and other I/O settle
            cmd = floor_cmd(python, paths, out) if what == "floor" else merge_cmd(python, paths, args, out)
            row = run_child(cmd, out, guard)
            (floors if what == "floor" else merges).append(row)
            print(f"  {name:>16} rep {rep + 1} {what:>5}: {row['seconds']:7.1f} s, peak RSS "
                  f"{row['peak_rss_gib']:5.2f} GiB, {row['output_gb']} GB output (deleted)"
                  + (f"  FAILED {row['failed']}" if "failed" in row else ""), flush=True)
            if "failed" in row:
                return {"floor_runs": floors, "merge_runs": merges, "failed": row["failed"]}
    ratios = [m["seconds"] / f["seconds"] for m, f in zip(merges, floors)]
    return {"floor_runs": floors, "merge_runs": merges,
            "merge_s": round(statistics.median(m["seconds"] for m in merges), 2),
            "floor_s": round(statistics.median(f["seconds"] for f in floors), 2),
            "ratio": round(statistics.median(ratios), 3),
            "peak_rss_gib": max(m["peak_rss_gib"] for m in merges),
            "floor_peak_rss_gib": max(f["peak_rss_gib"] for f in floors),
            "read_gb": round(sum(os.path.getsize(p) for p in paths) / 1e9, 2)}


def verdict(row: dict, targeted: bool) -> str:
    if "failed" in row:
        return "FAILED"
    if not targeted:
        return "-"
    rss_ok, time_ok = row["peak_rss_gib"] <= TARGET_RSS_GIB, row["ratio"] <= TARGET_RATIO
    row["targets_met"] = {"peak_rss": rss_ok, "ratio": time_ok}
    return (f"RSS <= {TARGET_RSS_GIB:g} GiB {'MET' if rss_ok else 'MISSED'}, "
            f"<= {TARGET_RATIO:g}x floor {'MET' if time_ok else 'MISSED'}")


def table(results: dict) -> str:
    lines = ["| workload | sources read | peak RSS | time | floor (its peak RSS) | time / floor | target |",
             "|---|---|---|---|---|---|---|"]
    for name, row in results.items():
        if "failed" in row:
            lines.append(f"| {name} | - | - | - | - | - | FAILED: {row['failed'][:80]} |")
            continue
        lines.append(f"| {name} | {row['read_gb']} GB | {row['peak_rss_gib']:.2f} GiB | {row['merge_s']:.1f} s | "
                     f"{row['floor_s']:.1f} s ({row['floor_peak_rss_gib']:.2f} GiB) | {row['ratio']:.2f}x | "
                     f"{row['verdict']} |")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=2, help="floor/merge pairs per workload (order alternates)")
    ap.add_argument("--cache", choices=("cold", "warm"), default="cold",
                    help="cold: evict the sources' pages before every run; warm: evict nothing")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds of rest before every run")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset of " +
                    ", ".join(WORKLOADS))
    ap.add_argument("--out-dir", default=tempfile.gettempdir(), help="where the outputs are written (and deleted)")
    ap.add_argument("--min-free-gb", type=float, default=10.0, help="free disk needed in --out-dir")
    ap.add_argument("--guard-gib", type=float, default=0.75,
                    help="kill the child if the machine's MemAvailable falls below this (0: never)")
    ap.add_argument("--smoke", action="store_true", help="SD1.5 test checkpoints, results under $TMPDIR")
    args = ap.parse_args()
    if args.smoke:
        args.reps, args.settle = 1, 0.0
    return args


def main() -> int:
    args = parse_args()
    free = shutil.disk_usage(args.out_dir).free / 1e9
    if free < (3 if args.smoke else args.min_free_gb):
        sys.exit(f"only {free:.1f} GB free in {args.out_dir}: need {args.min_free_gb}")
    paths, models = sources(args.smoke)
    started = time.time()
    print(f"# file-to-file merge bench, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {models}; "
          f"page cache {args.cache}; disk {free:.1f} GB free in {args.out_dir}; MemAvailable "
          f"{available_bytes() / GIB:.1f} GiB", flush=True)
    results = {}
    for name in args.workloads.split(","):
        letters, merge_args, what, targeted = WORKLOADS[name]
        row = measure(name, [paths[n] for n in letters], merge_args, args.reps, args.cache, args.settle,
                      args.out_dir, int(args.guard_gib * GIB))
        row["what"] = what
        row["verdict"] = verdict(row, targeted)
        results[name] = row
    print(table(results), flush=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": describe_machine(),
              "models": models, "sources": {n: os.path.basename(p) for n, p in paths.items()},
              "page_cache": args.cache, "reps": args.reps, "settle_s": args.settle, "spec": SPEC, "precision": "fp16",
              "run_s": round(time.time() - started, 1), "workloads": results}
    out_dir = SMOKE_DIR if args.smoke else os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "file_merge.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"written: {path}", flush=True)
    return 0 if all("failed" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

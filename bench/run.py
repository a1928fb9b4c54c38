"""The benchmark: one run, one line per figure, a summary line of the ratios against the targets.

    python -m bench.run [--reps N] [--out bench/results/latest.txt]      (COMFYUI_DIR set; see bench/run.sh)
    python -m bench.run --smoke      CI's bench smoke: one pair, two XY cells, output under $TMPDIR; no verdict

Three worker subprocesses load the SD1.5-layout test checkpoints (`bench.worker`): `timing` (full merges,
ours and native interleaved, and the floor), then `ours` and `native` (peak RSS of the full merge and of an
XY plot, each in its own process so the peaks do not mix, and the per-cell XY times). Ratio resolution
comes from bench/bench_resolve.py (run as is). The workers hold /tmp/elemental-heavy.lock, the machine's
lock for checkpoint-sized work, unless this process already holds it (started under `flock`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

from . import report
from .env import REPO_ROOT, SMOKE_DIR
from .machine import cpu_model

HEAVY_LOCK = "/tmp/elemental-heavy.lock"
WORKER_TIMEOUT = 420


def _holds_lock_fd() -> bool:
    """True when an inherited descriptor already refers to the heavy lock (we run under `flock LOCK ...`)."""
    try:
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}") == HEAVY_LOCK:
                    return True
            except OSError:
                pass
    except OSError:
        pass
    return False


class HeavyLock:
    def __enter__(self):
        self.fh = None
        if _holds_lock_fd():
            return self
        import fcntl

        self.fh = open(HEAVY_LOCK, "a")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[bench] waiting for {HEAVY_LOCK} (another heavy job runs)", file=sys.stderr, flush=True)
            t = time.perf_counter()
            fcntl.flock(self.fh, fcntl.LOCK_EX)
            print(f"[bench] got the lock after {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        return self

    def __exit__(self, *exc):
        if self.fh is not None:
            self.fh.close()
        return False


def run_worker(role: str, reps: int, log_dir: str, smoke: bool) -> dict:
    cmd = [sys.executable, "-m", "bench.worker", role, "--reps", str(reps)] + (["--smoke"] if smoke else [])
    log_path = os.path.join(log_dir, f"worker-{role}.log")
    t = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
                              timeout=WORKER_TIMEOUT)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            out = json.loads(line[len("BENCH_RESULT "):])
            print(f"[bench] worker {role}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
            return out
    with open(log_path) as f:
        tail = f.read()[-3000:]
    raise RuntimeError(f"worker {role} failed (exit {proc.returncode}); log {log_path}:\n{tail}")


def run_resolve(smoke: bool) -> tuple[list[str], dict]:
    """bench/bench_resolve.py's own lines, and {(arch, case): ms} parsed from them for the summary."""
    script = os.path.join(REPO_ROOT, "bench", "bench_resolve.py")
    if not os.path.isfile(script):
        return ["bench/bench_resolve.py not present"], {}
    proc = subprocess.run([sys.executable, script] + (["--smoke"] if smoke else []), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    if proc.returncode != 0:
        lines.append(f"bench_resolve.py exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return lines, _parse_resolve(lines)


def _parse_resolve(lines: list[str]) -> dict:
    """{(arch, case): ms}: the median for "cached", the single figure for "cold" and "alpha"."""
    figures = {}
    for l in lines:
        m = re.match(r"(\w+)\s+(cold|cached|alpha)\b.*?([\d.]+) ms(?: best, ([\d.]+) ms median)?", l)
        if m:
            figures[(m.group(1), m.group(2))] = float(m.group(4) or m.group(3))
    return figures


def machine() -> dict:
    info = {"cpu": cpu_model(), "cores": os.cpu_count(),
            "python": platform.python_version(), "load_before": os.getloadavg()}
    try:
        import psutil

        info["ram_gib"] = psutil.virtual_memory().total / 2**30
    except ImportError:
        pass
    try:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA install just means "no GPU" here
        info["gpu"] = None
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description="Elemental Merge benchmark")
    p.add_argument("--reps", type=int, default=6, help="timed full-merge pairs after the warm-up (default 6)")
    p.add_argument("--out", default=None, help="default bench/results/latest.txt ($TMPDIR/elemental-bench-smoke/ "
                                               "with --smoke: a smoke run never replaces the committed figures)")
    p.add_argument("--smoke", action="store_true",
                   help="one pair, two XY cells, one repetition of everything: checks that the bench runs")
    args = p.parse_args(argv)
    if args.smoke:
        args.reps = 1
    if args.out is None:
        args.out = os.path.join(SMOKE_DIR if args.smoke else os.path.join(REPO_ROOT, "bench", "results"), "latest.txt")

    if not os.path.isfile(os.path.join(os.environ.get("COMFYUI_DIR", ""), "main.py")):
        print("COMFYUI_DIR must point at a ComfyUI tree: run bench/run.sh, or `source scripts/env.sh` first",
              file=sys.stderr)
        return 2
    started = time.perf_counter()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    log_dir = os.path.join(tempfile.gettempdir(), "elemental-bench-logs")  # ComfyUI's logs, one per worker
    os.makedirs(log_dir, exist_ok=True)
    info = machine()
    resolve_lines, resolve = run_resolve(args.smoke)
    with HeavyLock():
        info["load_at_start"] = os.getloadavg()
        workers = {role: run_worker(role, args.reps, log_dir, args.smoke) for role in ("timing", "ours", "native")}
    info["load_after"] = os.getloadavg()
    wall = time.perf_counter() - started

    lines = report.render(stamp, info, workers, resolve_lines, resolve, wall)
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(args.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"stamp": stamp, "machine": info, "workers": workers, "resolve": resolve_lines,
                   "wall_s": wall}, f, indent=1)
    print(f"[bench] written {args.out} and its .json", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

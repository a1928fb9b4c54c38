"""The benchmarks still run: every bench/ entry point in its `--smoke` mode (one repetition, the smallest
workload that goes through all of its code), as a subprocess with this process's environment.

Each must exit 0 and print the lines of its report; no figure is judged. The committed figures in
bench/results/ must come out untouched (a smoke run writes under $TMPDIR). One bench runs at a time, each
holding at most one SD1.5 pair in memory; bench.run takes /tmp/elemental-heavy.lock itself, as always.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from tests.helpers.pack import REPO_ROOT

RESULTS = os.path.join(REPO_ROOT, "bench", "results")
TIMEOUT = 900  # seconds per bench; a smoke run takes a small fraction of it on a 2-core CPU

# id -> (arguments after `python`, lines the output must contain: regular expressions, one per line)
BENCHES = {
    "resolve": (["bench/bench_resolve.py", "--smoke"],
                [r"^sd1\s+cold", r"^sdxl\s+cached .* median of 1", r"^sdxl\s+alpha"]),
    "calc_modes_keys": (["-m", "bench.bench_calc_modes", "--smoke"],
                        [r"^\[floor\]", r"^\[normal\]", r"^\[calc\]\s+cosineA", r"^\[calc\]\s+smoothAdd",
                         r"^\[calc\]\s+self", r"^\[cosine\] cosineB", r"^\[smooth\]", r"^# smoke run: .* not written"]),
    "calc_modes_full": (["-m", "bench.bench_calc_modes", "--full", "--smoke"],
                        [r"^# checkpoints A, B loaded", r"^\[normal\] full merge", r"^\[calc\] tensor ",
                         r"^\[calc\] trainDifference", r"^\[cosine\] cosineB statistic", r"^\[smooth\] smoothAdd",
                         r"^# smoke run: .* not written"]),
    "task_methods": (["-m", "bench.bench_task_methods", "--smoke"],
                     [r"^\[key\] 64x32 +TIES ", r"^\[key\] 8x4x3x3 +Average ",
                      r"^# smoke run: .* not written"]),
    "run": (["-m", "bench.run", "--smoke"],
            [r"^\[1\] full merge", r"^\[1\] where it goes", r"^\[1\] cold", r"^\[2\] XY re-merge per cell",
             r"^\[3\] SDXL resolution", r"^\[4\] peak RSS during the full merge", r"^\[4\] peak RSS during the XY",
             r"^\[5\] floor", r"^SUMMARY full ours/native="]),
    "save": (["-m", "bench.bench_save", "--smoke"],
             [r"^sources loaded, nothing merged: RSS", r"^sources loaded and merged: RSS",
              r"SaveMergedCheckpoint fp16: .* peak RSS", r"^written: "]),
    "xy_plot": (["-m", "bench.bench_xy_plot", "--smoke"],
                [r"^plot: ", r"^native: ", r"^ours re-queued: .* identical to the plot's: \d+/1",
                 r"^native/plot total", r"^written "]),
    "session_growth": (["-m", "bench.bench_session_growth", "--smoke"],
                       [r"^ours +1/1 ", r"^native +1/1 ", r"^ours +RSS prompt", r"^native +RSS prompt",
                        r"^\(smoke run", r"^written "]),
}


def _results_state() -> dict:
    return {name: (st.st_size, st.st_mtime_ns) for name in sorted(os.listdir(RESULTS))
            for st in [os.stat(os.path.join(RESULTS, name))]}


def _run(args: list[str]) -> tuple[int, str, str]:
    """Runs `python ARGS` in the repository in its own process group (killed whole on a timeout: bench.run's
    workers and the benches' ComfyUI servers go with it)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return -signal.SIGKILL, out, err + f"\n[killed after {TIMEOUT} s]"
    return proc.returncode, out, err


def _tail(text: str, chars: int = 4000) -> str:
    return text[-chars:] if len(text) > chars else text


@pytest.mark.parametrize("bench", list(BENCHES))
def test_bench_smoke_runs(bench, comfyui_dir, checkpoints):
    args, expected = BENCHES[bench]
    before = _results_state()
    code, out, err = _run(args)
    shown = f"--- stdout (tail) ---\n{_tail(out)}\n--- stderr (tail) ---\n{_tail(err)}"
    assert code == 0, f"python {' '.join(args)} exited {code}\n{shown}"
    missing = [p for p in expected if not re.search(p, out, re.MULTILINE)]
    assert not missing, f"python {' '.join(args)}: no line matches {missing}\n{shown}"
    assert _results_state() == before, f"python {' '.join(args)} changed bench/results/\n{shown}"

"""Peak memory of saving a merge: the ComfyUI server's RSS with the two sources loaded and nothing merged,
against its peak RSS while it merges them and saves the merge with SaveMergedCheckpoint (streaming), per
precision.

Run (needs the provisioned ComfyUI and the seeded checkpoints; SD1.5: about 2 minutes per precision):
    source scripts/env.sh && flock /tmp/elemental-heavy.lock $PYTHON -m bench.bench_save [--stock] [--unet fp16]
    source scripts/env.sh && flock /tmp/elemental-heavy.lock $PYTHON -m bench.bench_save --sdxl
    source scripts/env.sh && $PYTHON -m bench.bench_save --smoke      # CI's bench smoke: SD1.5, fp16 only

How: a fresh server (`main.py --cpu`) loads the two sources through MergeCheckpointLoader and nothing else
(prompt 1: the loaders and a preview of each one's name). Its RSS then is the baseline: "sources loaded",
nothing merged. Before each save the kernel's peak-RSS mark of the server process is reset (/proc/PID/
clear_refs), then one prompt merges the sources with an elemental spec (the report previewed, so that
everything runs; a new alpha each time, so ComfyUI's cache skips nothing) and saves the merge; VmHWM afterwards
is the peak of that span, the first merge included. The RSS a few seconds after each span is recorded too
(what the session keeps). Each saved file is deleted right after it is measured. A thread
(bench.memory_guard) also samples the server's RSS and the machine's MemAvailable: if the server dies (OOM
killer), the largest RSS seen is what gets recorded, and if MemAvailable falls below --guard-gib the bench
kills its own server first (this is a shared machine). `--stock` also measures ComfyUI's own CheckpointSave of the same
merge (it builds the whole merged state dict and its serialized bytes in memory).

Sources: SD1.5 test_A/test_B (devkit.checkpoints; ComfyUI's CPU default fp32 UNet, or `--unet fp16`), or with
`--sdxl` the full-size seeded SDXL fixtures sdxl A/B (devkit.fixtures_arch, 6.9 GB each) in a server started
with `--fp16-unet --fp16-text-enc`, so the sources stay fp16 on the CPU. `--sdxl` saves fp16 only by default,
refuses `--stock` (known to be OOM-killed at 23.8 GB on a 24 GiB machine), needs --min-free-gb on the disk of
the server's output folder, and first waits (up to --wait-min minutes) until MemAvailable is at least
--min-available-gib. Results go to stdout and bench/results/save.json (save_fp16_unet.json with
`--unet fp16`, save_sdxl.json with `--sdxl`); a `--smoke` run (one save, fp16) writes its JSON under $TMPDIR
instead, so that it never replaces the committed figures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

from bench.env import SMOKE_DIR
from bench.machine import describe as describe_machine
from bench.memory_guard import MemoryGuard
from devkit.checkpoints import ensure_checkpoints
from devkit.comfy_env import comfyui_dir
from devkit.proc_memory import available_bytes, peak_rss_bytes, reset_peak, rss_bytes
from devkit.server import ComfyError, ComfyServer

HERE = os.path.dirname(os.path.abspath(__file__))
# Valid for SD1 and SDXL alike (both have BASE, IN00-IN11/IN08, M00, OUT00-OUT11/OUT08).
SPEC = "OUT05:attn2:0.25\nIN04-IN05::0.75\nBASE::0.125"
GIB = 2 ** 30


@dataclass
class Setup:
    """One pair of sources: what the server is given and how the results are labelled."""
    arch: str
    names: tuple  # (A, B) checkpoint file names as the loader lists them
    checkpoints: dict  # {name: path} linked into the server's models/checkpoints
    server_args: tuple
    models: str
    unet_dtype: str
    result_name: str


def sd1_setup(unet: str) -> Setup:
    checkpoints = ensure_checkpoints(os.environ.get("ELEMENTAL_CHECKPOINTS",
                                                    os.path.expanduser("~/.cache/comfyui-elemental-merge/checkpoints")))
    return Setup("sd1", ("test_A.safetensors", "test_B.safetensors"), checkpoints,
                 ("--fp16-unet",) if unet == "fp16" else (), "seeded SD1.5 test_A/test_B (1.07 B params each)",
                 unet, "save.json" if unet == "default" else f"save_{unet}_unet.json")


def sdxl_setup() -> Setup:
    from devkit.fixtures_arch import checkpoints_dir, ensure_fixture
    paths = [ensure_fixture(checkpoints_dir(), "sdxl", n) for n in ("A", "B")]
    names = tuple(os.path.basename(p) for p in paths)
    return Setup("sdxl", names, dict(zip(names, paths)), ("--fp16-unet", "--fp16-text-enc"),
                 f"seeded full-size SDXL base {names[0]}/{names[1]} (3.47 B params, 6.9 GB fp16 each)",
                 "fp16 (UNet and text encoders)", "save_sdxl.json")


def graph(setup: Setup, alpha: float, save: dict | None) -> dict:
    prompt = {
        "LA": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": setup.names[0]}},
        "LB": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": setup.names[1]}},
        "S": {"class_type": "ElementalSpec", "inputs": {"spec": SPEC, "architecture": setup.arch}},
        "M": {"class_type": "ElementalMerge", "inputs": {
            "model_a": ["LA", 0], "model_b": ["LB", 0], "clip_a": ["LA", 1], "clip_b": ["LB", 1],
            "mode": "Weight sum", "alpha": alpha, "beta": 0.25, "elemental_alpha": ["S", 0],
            "print_change": False}},
        "P": {"class_type": "PreviewAny", "inputs": {"source": ["M", 2]}},
    }
    if save:
        prompt["W"] = save
    return prompt


def ours(precision: str) -> dict:
    return {"class_type": "SaveMergedCheckpoint", "inputs": {
        "model": ["M", 0], "clip": ["M", 1], "vae": ["LA", 2], "filename_prefix": f"checkpoints/bench_{precision}",
        "precision": precision}}


def stock() -> dict:
    return {"class_type": "CheckpointSave", "inputs": {
        "model": ["M", 0], "clip": ["M", 1], "vae": ["LA", 2], "filename_prefix": "checkpoints/bench_stock"}}


def failure(label: str, err: Exception, server, watch: MemoryGuard, baseline: int | None) -> dict:
    """The row of a span that did not finish: how the server ended and the largest RSS sampled before."""
    code = server.proc.poll()
    if watch.killed:
        how = "killed by this bench: the machine's MemAvailable fell below the guard"
    elif code is None:
        how = "prompt failed, server alive"
    else:
        how = f"server exited with {code}" + (" (SIGKILL: the OOM killer)" if code == -9 else "")
    row = {"save": label, "failed": how, "error": str(err).splitlines()[0][:300],
           "rss_reached_gib": round(watch.max_rss / GIB, 3),
           "min_machine_available_gib": round(watch.min_available / GIB, 3)}
    if baseline:
        row["over_loaded_pct"] = round(100 * (watch.max_rss - baseline) / baseline, 1)
    print(f"{label:>22}: FAILED ({how}); RSS reached {watch.max_rss / GIB:.2f} GiB", flush=True)
    return row


def drop_saves(server) -> float:
    """Deletes every model file saved under the server's output folder; returns their total size in GB."""
    size = sum(os.path.getsize(os.path.join(root, n)) for root, _, names in os.walk(server.output_dir)
               for n in names if n.endswith(".safetensors"))
    server.delete_saved_models()
    return round(size / 1e9, 3)


def measure(server, setup: Setup, label: str, alpha: float, save: dict, baseline: int, guard: int) -> dict:
    pid = server.proc.pid
    exact = reset_peak(pid)
    t = time.time()
    with MemoryGuard(pid, guard, track_rss=True) as watch:
        try:
            server.run(graph(setup, alpha, save), timeout=3600, poll_timeout=300)
        except (ComfyError, OSError) as err:  # OSError: a dead server refuses the /history poll
            return failure(label, err, server, watch, baseline)
    seconds = time.time() - t
    peak = peak_rss_bytes(pid)
    row = {"save": label, "seconds": round(seconds, 1), "peak_gib": round(peak / GIB, 3),
           "over_loaded_pct": round(100 * (peak - baseline) / baseline, 1), "peak_exact": exact,
           "file_gb": drop_saves(server), "min_machine_available_gib": round(watch.min_available / GIB, 3)}
    time.sleep(3)
    row["rss_after_gib"] = round(rss_bytes(pid) / GIB, 3)
    print(f"{label:>22}: {seconds:6.1f} s, peak RSS {peak / GIB:6.2f} GiB "
          f"({row['over_loaded_pct']:+.1f} % over sources loaded, nothing merged), {row['file_gb']} GB file "
          f"(deleted); RSS afterwards {row['rss_after_gib']:.2f} GiB", flush=True)
    return row


def loaders_only(setup: Setup) -> dict:
    """The two loaders of `graph` and a preview of each one's checkpoint name: loads, merges nothing."""
    prompt = {k: v for k, v in graph(setup, 0.5, None).items() if k in ("LA", "LB")}
    prompt.update({f"P{k}": {"class_type": "PreviewAny", "inputs": {"source": [k, 3]}} for k in ("LA", "LB")})
    return prompt


def load_sources(server, setup: Setup, guard: int) -> tuple[int | None, dict | None]:
    """Prompt 1 (load the sources, merge nothing); (RSS afterwards, None), or (None, failure row)."""
    with MemoryGuard(server.proc.pid, guard, track_rss=True) as watch:
        try:
            server.run(loaders_only(setup), timeout=3600, poll_timeout=300)
        except (ComfyError, OSError) as err:
            return None, failure("load sources", err, server, watch, None)
    time.sleep(2)
    baseline = rss_bytes(server.proc.pid)
    print(f"sources loaded, nothing merged: RSS {baseline / GIB:.2f} GiB", flush=True)
    return baseline, None


def run_all(setup: Setup, precisions: list, with_stock: bool, guard: int) -> tuple[int | None, list]:
    """One server: the baseline, then each save (stopping at the first that kills the server)."""
    with ComfyServer(comfyui_dir(), os.environ.get("COMFYUI_PYTHON", "python"), checkpoints=setup.checkpoints,
                     extra_args=setup.server_args) as server:
        baseline, failed = load_sources(server, setup, guard)
        if failed:
            return None, [failed]
        saves = [(f"SaveMergedCheckpoint {p}", ours(p)) for p in precisions]
        saves += [("stock CheckpointSave", stock())] if with_stock else []
        rows = []
        for i, (label, node) in enumerate(saves):
            rows.append(measure(server, setup, label, 0.5 + 0.01 * i, node, baseline, guard))
            if server.proc.poll() is not None:
                break
            if i == 0:  # the state an earlier version of this bench took as its baseline
                after = rows[0]["rss_after_gib"] * GIB
                print(f"sources loaded and merged: RSS {after / GIB:.2f} GiB (after the first merge and save; "
                      f"{100 * (after - baseline) / baseline:+.1f} % over nothing merged)", flush=True)
    return baseline, rows


def comfyui_version() -> str:
    try:
        with open(os.path.join(comfyui_dir(), "comfyui_version.py")) as f:
            return f.read().split("=")[-1].strip().strip("\"'")
    except OSError:
        return "unknown"


def wait_for_memory(min_gib: float, minutes: float) -> None:
    """Blocks until MemAvailable >= min_gib (checked every 30 s); exits after `minutes` without it."""
    deadline = time.time() + 60 * minutes
    while available_bytes() < min_gib * GIB:
        if time.time() > deadline:
            sys.exit(f"MemAvailable stayed below {min_gib} GiB for {minutes} minutes: not started")
        print(f"MemAvailable {available_bytes() / GIB:.1f} GiB < {min_gib} GiB: waiting", flush=True)
        time.sleep(30)
    print(f"MemAvailable {available_bytes() / GIB:.1f} GiB: starting", flush=True)


def check_disk(min_gb: float) -> None:
    free = shutil.disk_usage(tempfile.gettempdir()).free / 1e9
    if free < min_gb:
        sys.exit(f"only {free:.1f} GB free under {tempfile.gettempdir()} (the server's output): need {min_gb}")
    print(f"disk: {free:.1f} GB free under {tempfile.gettempdir()}", flush=True)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sdxl", action="store_true", help="the full-size SDXL fixtures (fp16 sources) instead of SD1.5")
    ap.add_argument("--precisions", default=None, help="default: fp16,fp32,fp8_e4m3fn (SD1.5), fp16 (--sdxl)")
    ap.add_argument("--stock", action="store_true", help="also ComfyUI's CheckpointSave (needs much more RAM)")
    ap.add_argument("--unet", choices=("default", "fp16"), default="default",
                    help="SD1.5 UNet dtype of the loaded sources (default: ComfyUI's CPU default, fp32)")
    ap.add_argument("--min-available-gib", type=float, default=18.0, help="--sdxl: MemAvailable to wait for")
    ap.add_argument("--wait-min", type=float, default=60.0, help="--sdxl: how long to wait for it, minutes")
    ap.add_argument("--min-free-gb", type=float, default=15.0, help="--sdxl: free disk needed for the saves")
    ap.add_argument("--guard-gib", type=float, default=0.75,
                    help="kill the bench's server if the machine's MemAvailable falls below this (0: never)")
    ap.add_argument("--smoke", action="store_true", help="SD1.5, one save (fp16), results under $TMPDIR")
    args = ap.parse_args()
    if args.smoke and (args.sdxl or args.stock):
        ap.error("--smoke is SD1.5 and SaveMergedCheckpoint only")
    if args.sdxl and args.stock:
        ap.error("--stock with --sdxl: ComfyUI's CheckpointSave of an SDXL merge was OOM-killed at 23.8 GB")
    if args.sdxl and args.unet != "default":
        ap.error("--unet applies to SD1.5; --sdxl always loads fp16 sources")
    args.precisions = args.precisions or ("fp16" if args.sdxl or args.smoke else "fp16,fp32,fp8_e4m3fn")
    return args


def main() -> int:
    args = parse_args()
    if args.sdxl:
        check_disk(args.min_free_gb)
        setup = sdxl_setup()
        wait_for_memory(args.min_available_gib, args.wait_min)
    else:
        setup = sd1_setup(args.unet)
    baseline, rows = run_all(setup, args.precisions.split(","), args.stock, int(args.guard_gib * GIB))
    result = {"date": time.strftime("%Y-%m-%d"), "machine": describe_machine(), "comfyui": comfyui_version(),
              "models": setup.models,
              "unet_dtype": setup.unet_dtype, "server_args": ["--cpu", *setup.server_args],
              "baseline": "sources loaded, nothing merged",
              "sources_loaded_gib": round(baseline / GIB, 3) if baseline else None,
              "completed": all("failed" not in r for r in rows), "saves": rows}
    out_dir = SMOKE_DIR if args.smoke else os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, setup.result_name)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"written: {path}", flush=True)
    return 0 if result["completed"] else 1


if __name__ == "__main__":
    sys.exit(main())

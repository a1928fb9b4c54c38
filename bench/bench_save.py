"""Peak memory of saving a merge (issue 14): the ComfyUI server's RSS with the two sources loaded and merged,
against its peak RSS while it merges again and saves with SaveMergedCheckpoint (streaming), per precision.

Run (needs the provisioned ComfyUI and the seeded SD1.5 checkpoints; about 2 minutes per precision):
    source scripts/env.sh && flock /tmp/elemental-heavy.lock $PYTHON -m bench.bench_save [--stock] [--unet fp16]

How: a fresh server (`main.py --cpu`) loads test_A/test_B through MergeCheckpointLoader and merges them with
an elemental spec (prompt 1, the report previewed so that everything runs). Its RSS then is the baseline:
"sources loaded". Before each save the kernel's peak-RSS mark of the server process is reset (/proc/PID/
clear_refs), the merge runs again with a new alpha (so the merge is part of the measured span) and the file is
saved; VmHWM afterwards is the peak of that span. `--stock` also measures ComfyUI's own CheckpointSave of the
same merge (it builds the whole merged state dict and its serialized bytes in memory). Results go to stdout
and bench/results/save.json (save_fp16_unet.json with `--unet fp16`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

from devkit.checkpoints import ensure_checkpoints
from devkit.comfy_env import comfyui_dir
from devkit.proc_memory import peak_rss_bytes, reset_peak, rss_bytes
from devkit.server import ComfyServer

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = "OUT05:attn2:0.25\nIN04-IN05::0.75\nBASE::0.125"
GIB = 2 ** 30


def graph(alpha: float, save: dict | None) -> dict:
    prompt = {
        "LA": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "test_A.safetensors"}},
        "LB": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "test_B.safetensors"}},
        "S": {"class_type": "ElementalSpec", "inputs": {"spec": SPEC, "architecture": "sd1"}},
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


def measure(server, label: str, alpha: float, save: dict, baseline: int) -> dict:
    pid = server.proc.pid
    exact = reset_peak(pid)
    t = time.time()
    server.run(graph(alpha, save), timeout=1800)
    seconds = time.time() - t
    peak = peak_rss_bytes(pid)
    row = {"save": label, "seconds": round(seconds, 1), "peak_gib": round(peak / GIB, 3),
           "over_loaded_pct": round(100 * (peak - baseline) / baseline, 1), "peak_exact": exact}
    print(f"{label:>22}: {seconds:6.1f} s, peak RSS {peak / GIB:6.2f} GiB "
          f"({row['over_loaded_pct']:+.1f} % over sources loaded)", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precisions", default="fp16,fp32,fp8_e4m3fn")
    ap.add_argument("--stock", action="store_true", help="also ComfyUI's CheckpointSave (needs much more RAM)")
    ap.add_argument("--unet", choices=("default", "fp16"), default="default",
                    help="UNet dtype of the loaded sources (default: ComfyUI's CPU default, fp32)")
    args = ap.parse_args()
    checkpoints = ensure_checkpoints(os.environ.get("ELEMENTAL_CHECKPOINTS",
                                                    os.path.expanduser("~/.cache/comfyui-elemental-merge/checkpoints")))
    extra = ("--fp16-unet",) if args.unet == "fp16" else ()
    with ComfyServer(comfyui_dir(), os.environ.get("COMFYUI_PYTHON", "python"), checkpoints=checkpoints,
                     extra_args=extra) as server:
        server.run(graph(0.5, None), timeout=1800)
        time.sleep(2)
        baseline = rss_bytes(server.proc.pid)
        print(f"sources loaded and merged: RSS {baseline / GIB:.2f} GiB", flush=True)
        rows = [measure(server, f"SaveMergedCheckpoint {p}", 0.5 + 0.01 * (i + 1), ours(p), baseline)
                for i, p in enumerate(args.precisions.split(","))]
        if args.stock:
            rows.append(measure(server, "stock CheckpointSave", 0.45, stock(), baseline))
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
              "models": "seeded SD1.5 test_A/test_B (1.07 B params each)", "unet_dtype": args.unet,
              "sources_loaded_gib": round(baseline / GIB, 3), "saves": rows}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    name = "save.json" if args.unet == "default" else f"save_{args.unet}_unet.json"
    with open(os.path.join(HERE, "results", name), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

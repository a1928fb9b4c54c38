"""Does anything grow over a long session? N merges with sampling in a row through one real ComfyUI server
(--cpu), ours against ComfyUI's native merge node, with the server's memory sampled after every prompt.

Run (needs the provisioned ComfyUI and the seeded SD1.5 checkpoints; ~6 minutes on a 2-core CPU for N=24):
    source scripts/env.sh && flock /tmp/elemental-heavy.lock "$PYTHON" -m bench.bench_session_growth [--n 24]
    ... --smoke          N=1, for CI's bench smoke (each loop runs once and reports, no verdict; results under $TMPDIR)
    ... --probe          also ask the server what it holds after each prompt (bench/session_probe.py: live
                         MergePatch/ModelPatcher counts, the pack's caches, ComfyUI's
                         output cache entries, glibc heap figures)
    ... --phases ours    only one loop (ours, native or both: "ours,native")
    ... --server-args "--cache-classic"   extra ComfyUI arguments (here: 0.33 with the pre-0.33 cache)
The runtime is the one COMFYUI_VERSION provisioned (scripts/env.sh exports COMFYUI_DIR).

Each loop runs in a fresh server: prompt i is CheckpointLoaderSimple A and B + a merge at a new ratio
(ours: ElementalMerge Weight sum, alpha_i, text encoders too; native: ModelMergeSimple + CLIPMergeSimple at
the same share of B) + CLIPTextEncode x2 + KSampler (1 step, 64x64) + VAEDecode + SaveImage. Prompts are queued
one at a time; after each completes and the server has had `--settle` seconds, its VmRSS and RssAnon are read
from /proc. Growth after warm-up: from prompt 4 (the first three load the files and fill the caches) to the
last, in percent of prompt 4's figure. Results: stdout and bench/results/session_growth_<version>_<date>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time

from bench.env import SMOKE_DIR
from bench.machine import describe as describe_machine
from devkit.checkpoints import ensure_checkpoints
from devkit.comfy_env import comfyui_dir
from devkit.proc_memory import anon_rss_bytes, rss_bytes
from devkit.server import ComfyServer

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLING = {"seed": 5, "steps": 1, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}
SIZE = 64
WARMUP = 3  # prompts before the baseline: growth is measured from prompt WARMUP + 1
SMOKE_N = 1  # CI's smoke: one prompt per loop runs every line of the loop and of the report
GIB = 2 ** 30
PROBE_DIR = "elemental_session_probe"


def alpha_of(i: int) -> float:
    """A new share of B for every prompt (golden-ratio steps through 0.1..0.9), so the cache reuses no merge."""
    return round(0.1 + 0.8 * ((i * 0.6180339887) % 1.0), 4)


def loaders() -> dict:
    return {"LA": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "test_A.safetensors"}},
            "LB": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "test_B.safetensors"}}}


def tail(model: list, clip: list, prefix: str) -> dict:
    return {
        "P": {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": "a red cube"}},
        "N": {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": "blurry"}},
        "E": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "K": {"class_type": "KSampler", "inputs": {"model": model, "positive": ["P", 0], "negative": ["N", 0],
                                                   "latent_image": ["E", 0], **SAMPLING}},
        "D": {"class_type": "VAEDecode", "inputs": {"samples": ["K", 0], "vae": ["LA", 2]}},
        "S": {"class_type": "SaveImage", "inputs": {"images": ["D", 0], "filename_prefix": prefix}},
    }


def ours_prompt(alpha: float) -> dict:
    return {**loaders(),
            "M": {"class_type": "ElementalMerge", "inputs": {
                "model_a": ["LA", 0], "model_b": ["LB", 0], "clip_a": ["LA", 1], "clip_b": ["LB", 1],
                "mode": "Weight sum", "alpha": alpha, "beta": 0.25, "print_change": False}},
            **tail(["M", 0], ["M", 1], "session/ours")}


def native_prompt(alpha: float) -> dict:
    """ModelMergeSimple's and CLIPMergeSimple's ratio is model1's (A's) share: 1 - alpha."""
    ratio = round(1.0 - alpha, 4)
    return {**loaders(),
            "M": {"class_type": "ModelMergeSimple", "inputs": {"model1": ["LA", 0], "model2": ["LB", 0],
                                                               "ratio": ratio}},
            "C": {"class_type": "CLIPMergeSimple", "inputs": {"clip1": ["LA", 1], "clip2": ["LB", 1],
                                                              "ratio": ratio}},
            **tail(["M", 0], ["C", 0], "session/native")}


PROMPTS = {"ours": ours_prompt, "native": native_prompt}


def growth(values: list[int], start: int) -> dict:
    base, last = values[start], values[-1]
    return {"from_prompt": start + 1, "base_gib": round(base / GIB, 3), "last_gib": round(last / GIB, 3),
            "max_after_base_gib": round(max(values[start:]) / GIB, 3),
            "growth_pct": round(100.0 * (last - base) / base, 2)}


def install_probe(server: ComfyServer) -> None:
    dest = os.path.join(server.base_dir, "custom_nodes", PROBE_DIR)
    os.makedirs(dest, exist_ok=True)
    shutil.copy(os.path.join(HERE, "session_probe.py"), os.path.join(dest, "__init__.py"))


def probe_line(snap: dict) -> str:
    caches = snap["output_caches"]
    entries = sum(len(c["entries"]) for c in caches)
    models = sum(t in ("ModelPatcher", "ModelPatcherDynamic") for c in caches for e in c["entries"]
                 for t in e["types"])
    o = snap["objects"]
    heap = snap.get("heap") or {}
    return (f"MergePatch {o['MergePatch']} "
            f"ModelPatcher {o['ModelPatcher'] + o['ModelPatcherDynamic']} CLIP {o['CLIP']} | caches "
            f"{snap['pack_caches']} | output cache {entries} entries, {models} MODEL | loaded "
            f"{len(snap['loaded_models'])} | heap free {heap.get('free', 0) / GIB:.2f} GiB")


def run_loop(name: str, n: int, checkpoints: dict, settle: float, probe: bool, server_args: tuple = ()) -> dict:
    server = ComfyServer(comfyui_dir(), os.environ.get("COMFYUI_PYTHON", "python"), checkpoints=checkpoints,
                         extra_args=server_args)
    if probe:
        install_probe(server)
    samples = []
    with server:
        pid = server.proc.pid
        idle = {"rss": rss_bytes(pid), "anon": anon_rss_bytes(pid)}
        for i in range(n):
            alpha = alpha_of(i)
            t0 = time.perf_counter()
            server.run(PROMPTS[name](alpha), timeout=1800)
            seconds = time.perf_counter() - t0
            time.sleep(settle)
            sample = {"prompt": i + 1, "alpha": alpha, "seconds": round(seconds, 2), "rss": rss_bytes(pid),
                      "anon": anon_rss_bytes(pid)}
            line = (f"{name} {i + 1:>3}/{n} alpha {alpha:.4f} {seconds:6.2f} s  RSS {sample['rss'] / GIB:6.3f} GiB"
                    f"  anon {sample['anon'] / GIB:6.3f} GiB")
            if probe:
                sample["probe"] = server.get_json("/elemental_probe", timeout=300)
                line += "  | " + probe_line(sample["probe"])
            samples.append(sample)
            print(line, flush=True)
        if probe:
            trimmed = server.get_json("/elemental_probe?trim=1", timeout=300)
            print(f"{name}: malloc_trim(0) after the last prompt gave back "
                  f"{trimmed['trim_gave_back'] / GIB:.3f} GiB (RSS now {trimmed['rss'] / GIB:.3f} GiB)", flush=True)
        log = server.log_text()
    start = WARMUP if n > WARMUP + 1 else 0  # a smoke run has no warm-up to leave out
    return {"idle_rss_gib": round(idle["rss"] / GIB, 3), "samples": samples,
            "rss": growth([s["rss"] for s in samples], start), "anon": growth([s["anon"] for s in samples], start),
            "trimmed": trimmed if probe else None,
            "cache_line": next((ln for ln in log.splitlines() if "cache" in ln.lower() and "Using" in ln), None)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="prompts per loop (default 24)")
    ap.add_argument("--smoke", action="store_true", help="N=1: checks that it runs; growth figures mean nothing")
    ap.add_argument("--phases", default="ours,native", help="comma-separated: ours, native")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds between a prompt's end and the sample")
    ap.add_argument("--probe", action="store_true", help="install the debug route and record what the server holds")
    ap.add_argument("--server-args", default="", help='extra ComfyUI arguments, e.g. "--cache-classic"')
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/session_growth_<version>_<date>.json)")
    args = ap.parse_args()
    n = SMOKE_N if args.smoke else args.n
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    version = os.environ.get("COMFYUI_VERSION", "unknown")
    checkpoints = ensure_checkpoints(os.environ.get(
        "ELEMENTAL_CHECKPOINTS", os.path.expanduser("~/.cache/comfyui-elemental-merge/checkpoints")), ("A", "B"))
    t0 = time.time()
    loops = {}
    for name in phases:
        loops[name] = run_loop(name, n, checkpoints, args.settle, args.probe, tuple(args.server_args.split()))
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "comfyui_version": version,
              "machine": describe_machine(), "n": n, "settle_s": args.settle,
              "server_args": args.server_args, "loops": loops,
              "seconds": round(time.time() - t0, 1)}
    print(f"\n# session growth, ComfyUI {version}, {n} prompts per loop, fresh server per loop, --cpu "
          f"{args.server_args}".rstrip())
    for name, loop in loops.items():
        r, a = loop["rss"], loop["anon"]
        print(f"{name:<7} RSS prompt {r['from_prompt']} -> {n}: {r['base_gib']:.3f} -> {r['last_gib']:.3f} GiB "
              f"({r['growth_pct']:+.2f} %, max {r['max_after_base_gib']:.3f}) | anon {a['base_gib']:.3f} -> "
              f"{a['last_gib']:.3f} GiB ({a['growth_pct']:+.2f} %) | {loop['cache_line'] or 'cache: ?'}")
    if args.smoke:
        print(f"(smoke run: {n} prompt per loop, the figures above are not a growth measurement)")
    path = args.out or os.path.join(SMOKE_DIR if args.smoke else os.path.join(HERE, "results"),
                                    f"session_growth_{version}_{time.strftime('%Y-%m-%d', time.gmtime())}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"written {path}")


if __name__ == "__main__":
    main()

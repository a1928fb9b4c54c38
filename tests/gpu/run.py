"""The GPU check: the pack on a real CUDA device under ComfyUI 0.33 with dynamic VRAM, end to end.

    bash tests/gpu/run.sh OUT_DIR            # on a machine with an NVIDIA GPU
    bash tests/gpu/run.sh OUT_DIR --cpu      # the same script on the CPU server (plumbing check)

Writes OUT_DIR/summary.json and OUT_DIR/summary.txt (and the compared images under OUT_DIR/images); exits 1
when a check fails. See tests/gpu/README.md.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import time
import traceback

import numpy as np

from devkit.server import ComfyServer
from devkit.workflows import png_pixels
from tests.gpu import graphs as g
from tests.gpu.tensor_checks import check_saved

DYNAMIC_VRAM_LINE = "DynamicVRAM support detected and enabled"  # what ComfyUI 0.33's main.py logs


def image(server, outputs, node_id) -> np.ndarray:
    pngs = server.images(outputs, node_id)
    assert len(pngs) == 1, f"node {node_id} saved {len(pngs)} images"
    return png_pixels(pngs[0])


def diff(x: np.ndarray, y: np.ndarray) -> dict:
    d = np.abs(x.astype(np.int16) - y.astype(np.int16))
    return {"identical": bool((d == 0).all()), "mean_abs": round(float(d.mean()), 4), "max_abs": int(d.max())}


class Check:
    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.results: dict = {}
        os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)

    def save_image(self, name: str, pixels: np.ndarray) -> None:
        from PIL import Image

        Image.fromarray(pixels).save(os.path.join(self.out_dir, "images", f"{name}.png"))

    def run_phase(self, name: str, fn, *args) -> None:
        t = time.time()
        try:
            res = fn(*args)
        except Exception as err:  # one phase failing still leaves the others' results
            res = {"ok": False, "error": f"{type(err).__name__}: {err}"[:4000], "traceback": traceback.format_exc()[-4000:]}
        res["seconds"] = round(time.time() - t, 1)
        self.results[name] = res
        print(f"[gpu-check] {name}: {'ok' if res.get('ok') else 'FAILED'} ({res['seconds']} s)", flush=True)


def environment(server: ComfyServer, want_dynamic: bool) -> dict:
    stats = server.get_json("/system_stats")
    system, devices = stats.get("system", {}), stats.get("devices", [])
    log = server.log_text()
    dynamic = DYNAMIC_VRAM_LINE in log
    lines = [ln for ln in log.splitlines() if "dynamic" in ln.lower() or "aimdo" in ln.lower()
             or ln.startswith(("Device:", "Total VRAM", "pytorch version", "Set vram state"))]
    return {"ok": dynamic == want_dynamic, "dynamic_vram_on": dynamic, "dynamic_vram_expected": want_dynamic,
            "comfyui_version": system.get("comfyui_version"), "torch": system.get("pytorch_version"),
            "python": system.get("python_version", "").split()[0], "argv": system.get("argv"),
            "devices": [{k: d.get(k) for k in ("name", "type", "index", "vram_total")} for d in devices],
            "log_lines": lines[:20]}


def newest_save(server: ComfyServer, prefix: str) -> str:
    saved = sorted(glob.glob(os.path.join(server.output_dir, "checkpoints", f"{prefix}_*_.safetensors")))
    assert saved, f"no checkpoint saved with prefix {prefix}"
    return saved[-1]


def merge_checks(server: ComfyServer, checkpoints: dict, size: int, steps: int, check: Check) -> dict:
    ws, ad = g.WEIGHT_SUM, g.ADD_DIFFERENCE
    # Weight sum at a per-block spec: saved fp32, and sampled beside A itself.
    prompt = {**g.loaders(), **g.elemental_merge("ws", "Weight sum", ws["alpha"], ws["spec"]),
              **g.save_merged("ws", ["Mws", 0], ["Mws", 1], "gpu_ws"),
              **g.sample("ws", ["Mws", 0], ["Mws", 1], size, steps, "ws"),
              **g.sample("a", ["A", 0], ["A", 1], size, steps, "a")}
    out = server.run(prompt, timeout=1800, poll_timeout=300)
    img_ws, img_a = image(server, out, "Iws"), image(server, out, "Ia")
    saved_ws = check_saved(newest_save(server, "gpu_ws"), checkpoints, "Weight sum", ws["alpha"], ws["spec"])
    server.delete_saved_models()
    # Add difference A + (B - C) a, saved fp32 and sampled.
    prompt = {**g.loaders(c=True), **g.elemental_merge("ad", "Add difference", ad["alpha"], ad["spec"], with_c=True),
              **g.save_merged("ad", ["Mad", 0], ["Mad", 1], "gpu_ad"),
              **g.sample("ad", ["Mad", 0], ["Mad", 1], size, steps, "ad")}
    out = server.run(prompt, timeout=1800, poll_timeout=300)
    img_ad = image(server, out, "Iad")
    saved_ad = check_saved(newest_save(server, "gpu_ad"), checkpoints, "Add difference", ad["alpha"], ad["spec"])
    server.delete_saved_models()
    # Ratios the stock ModelMergeBlocks can express: ours (as block weights) against it.
    r = (0.3, 0.6, 0.8)
    prompt = {**g.loaders(), **g.elemental_merge("bw", "Weight sum", 0.5, block_weights=g.blocks_as_weights(*r)),
              **g.stock_blocks_merge("st", *r),
              **g.sample("bw", ["Mbw", 0], ["Mbw", 1], size, steps, "bw"),
              **g.sample("st", ["Nst", 0], ["A", 1], size, steps, "st")}
    out = server.run(prompt, timeout=1800, poll_timeout=300)
    img_bw, img_st = image(server, out, "Ibw"), image(server, out, "Ist")
    for name, px in (("A", img_a), ("weight_sum_spec", img_ws), ("add_difference", img_ad),
                     ("ours_blocks", img_bw), ("stock_ModelMergeBlocks", img_st)):
        check.save_image(name, px)
    images = {"weight_sum_vs_A": diff(img_ws, img_a), "add_difference_vs_A": diff(img_ad, img_a),
              "ours_blocks_vs_A": diff(img_bw, img_a), "ours_blocks_vs_stock": diff(img_bw, img_st),
              "stock_vs_A": diff(img_st, img_a)}
    # A merge that silently returned A would give A's image. Ours must equal the stock node at the same
    # ratios, or at least sit far closer to it than to A (then the report shows by how much it is off).
    differs = all(not images[k]["identical"] for k in ("weight_sum_vs_A", "add_difference_vs_A", "ours_blocks_vs_A"))
    stock = images["ours_blocks_vs_stock"]
    matches_stock = stock["identical"] or stock["mean_abs"] < 0.1 * images["ours_blocks_vs_A"]["mean_abs"]
    return {"ok": saved_ws["ok"] and saved_ad["ok"] and differs and matches_stock,
            "merged_images_differ_from_A": differs, "ours_matches_stock_blocks": matches_stock,
            "stock_ratios_b_share": dict(zip(("input", "middle", "out"), r)), "images": images,
            "saved_weight_sum": saved_ws, "saved_add_difference": saved_ad}


def plot_checks(server: ComfyServer, size: int, steps: int, check: Check) -> dict:
    out = server.run(g.xy_plot(size, steps), timeout=1800, poll_timeout=300)
    cells = [png_pixels(p) for p in server.images(out, "XI")]
    rows = []
    for i, (alpha, spec) in enumerate(g.plot_cells()):
        single = {**g.loaders(), **g.elemental_merge("c", "Weight sum", alpha, spec),
                  **g.sample("c", ["Mc", 0], ["Mc", 1], size, steps, f"cell{i}")}
        px = image(server, server.run(single, timeout=1800, poll_timeout=300), "Ic")
        rows.append({"cell": i, "alpha": alpha, "spec": spec,
                     **(diff(cells[i], px) if i < len(cells) else {"identical": False, "missing": True})})
        check.save_image(f"xy_cell{i}", cells[i]) if i < len(cells) else None
    distinct = len({c.tobytes() for c in cells})
    return {"ok": len(cells) == 4 and all(r["identical"] for r in rows) and distinct == 4,
            "cells": len(cells), "distinct_cells": distinct, "per_cell": rows}


def timed_run(server: ComfyServer, prompt: dict) -> float:
    t = time.perf_counter()
    server.run(prompt, timeout=1800, poll_timeout=300)
    return time.perf_counter() - t


def timing(server: ComfyServer, size: int, steps: int, repeats: int) -> dict:
    """Full merge + one 1-step sample, re-queued with new ratios each time (so the merge runs again), ours
    (ElementalMerge with block weights) and native (ModelMergeBlocks) alternating; the first of each loads
    the checkpoints and is not counted."""
    def ours(r):
        return {**g.loaders(), **g.elemental_merge("t", "Weight sum", 0.5, block_weights=g.blocks_as_weights(*r)),
                **g.sample("t", ["Mt", 0], ["Mt", 1], size, 1, "t_ours")}

    def native(r):
        return {**g.loaders(), **g.stock_blocks_merge("t", *r), **g.sample("t", ["Nt", 0], ["A", 1], size, 1, "t_native")}

    warm = {"ours": timed_run(server, ours((0.2, 0.2, 0.2))), "native": timed_run(server, native((0.2, 0.2, 0.2)))}
    runs = {"ours": [], "native": []}
    for i in range(repeats):
        r = (0.3 + 0.1 * i, 0.5 + 0.05 * i, 0.7 - 0.1 * i)
        runs["ours"].append(timed_run(server, ours(r)))
        runs["native"].append(timed_run(server, native(r)))
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {"ok": True, "size": size, "steps": 1, "first_run_s": {k: round(v, 3) for k, v in warm.items()},
            "runs_s": {k: [round(x, 3) for x in v] for k, v in runs.items()},
            "median_s": {k: round(v, 3) for k, v in med.items()},
            "ours_over_native": round(med["ours"] / med["native"], 3)}


def text_summary(res: dict) -> str:
    env = res.get("environment", {})
    lines = [f"GPU check ({res['mode']}): {'ALL OK' if res['ok'] else 'FAILED'}",
             f"devices: {', '.join(d['name'] or '?' for d in env.get('devices', []))}",
             f"torch {env.get('torch')}, ComfyUI {env.get('comfyui_version')}, python {env.get('python')}",
             f"dynamic VRAM on: {env.get('dynamic_vram_on')} (expected {env.get('dynamic_vram_expected')})"]
    for name in ("environment", "merge", "xy_plot", "timing"):
        r = res.get(name, {})
        lines.append(f"[{name}] {'ok' if r.get('ok') else 'FAILED'} in {r.get('seconds')} s"
                     + (f": {r['error']}" if "error" in r else ""))
    m = res.get("merge", {})
    for key in ("saved_weight_sum", "saved_add_difference"):
        s = m.get(key)
        if s:
            lines.append(f"  {key}: {s['sampled']} tensors sampled, classes {json.dumps(s['classes'])}, "
                         f"max error {json.dumps(s['max_abs_error'])}, dtypes {s['saved_dtypes']}, "
                         f"failures {len(s['failures'])}")
            lines += [f"    {f}" for f in s["failures"][:5]]
    for k, v in m.get("images", {}).items():
        lines.append(f"  image {k}: {json.dumps(v)}")
    xy = res.get("xy_plot", {})
    for row in xy.get("per_cell", []):
        lines.append(f"  xy cell {row['cell']} alpha={row['alpha']} spec={row['spec']!r}: "
                     f"{'identical' if row['identical'] else 'DIFFERS ' + json.dumps(row)}")
    t = res.get("timing", {})
    if "median_s" in t:
        lines.append(f"  timing (merge + 1-step {t['size']}px sample, median of {len(t['runs_s']['ours'])}): ours "
                     f"{t['median_s']['ours']} s, native ModelMergeBlocks {t['median_s']['native']} s, "
                     f"ours/native {t['ours_over_native']}; runs {json.dumps(t['runs_s'])}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--cpu", action="store_true", help="start ComfyUI with --cpu (no dynamic VRAM): plumbing check")
    ap.add_argument("--size", type=int, help="image size (default 512 on a GPU, 64 with --cpu)")
    ap.add_argument("--steps", type=int, help="sampling steps of the image checks (default 4 on a GPU, 1 with --cpu)")
    ap.add_argument("--repeats", type=int, default=3, help="timed re-queues per side")
    ap.add_argument("--skip", nargs="*", default=[], choices=["merge", "xy_plot", "timing"])
    args = ap.parse_args(argv)
    size = args.size or (64 if args.cpu else 512)
    steps = args.steps or (1 if args.cpu else 4)
    comfyui_dir = os.environ["COMFYUI_DIR"]
    python = os.environ.get("COMFYUI_PYTHON") or os.environ.get("PYTHON") or sys.executable
    ckpt_dir = os.environ.get("ELEMENTAL_CHECKPOINTS",
                              os.path.expanduser("~/.cache/comfyui-elemental-merge/checkpoints"))
    checkpoints = {n: os.path.join(ckpt_dir, f"test_{n}.safetensors") for n in "ABC"}
    missing = [p for p in checkpoints.values() if not os.path.isfile(p)]
    if missing:
        print(f"missing test checkpoints: {missing} (run.sh makes them)", file=sys.stderr)
        return 2
    os.makedirs(args.out_dir, exist_ok=True)
    check = Check(args.out_dir)
    res = {"mode": "cpu" if args.cpu else "gpu", "size": size, "steps": steps}
    t0 = time.time()
    server = ComfyServer(comfyui_dir, python, checkpoints=checkpoints, cpu=args.cpu)
    try:
        server.start(timeout=600)
        check.run_phase("environment", environment, server, not args.cpu)
        if "merge" not in args.skip:
            check.run_phase("merge", merge_checks, server, checkpoints, size, steps, check)
            server.free_memory()
        if "xy_plot" not in args.skip:
            check.run_phase("xy_plot", plot_checks, server, size, steps, check)
            server.free_memory()
        if "timing" not in args.skip:
            check.run_phase("timing", timing, server, size, steps, args.repeats)
    finally:
        with open(os.path.join(args.out_dir, "comfyui.log"), "w") as f:
            f.write(server.log_text())
        server.cleanup()
    res.update(check.results)
    res["ok"] = all(r.get("ok") for r in check.results.values())
    res["total_seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(args.out_dir, "summary.json"), "w") as f:
        json.dump(res, f, indent=1)
    text = text_summary(res)
    with open(os.path.join(args.out_dir, "summary.txt"), "w") as f:
        f.write(text)
    print(text, end="")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Turns the workers' raw results into the printed figures: one line per figure, then the summary line.

Kept apart from `run` so the wording of a figure and its target lives in one place, and so a saved
bench/results/latest.json can be re-rendered without re-running anything (`python -m bench.report`).
"""
from __future__ import annotations

import json
import statistics
import sys

from . import floor

GIB = 2 ** 30

# The targets the figures are judged against.
T_FULL = 1.05      # ours / native, full merge
T_XY = 20.0        # native / ours, per XY cell
T_RESOLVE = 5.0    # ms, SDXL
T_PEAK = 1.05      # ours / native, peak RSS (the floor's target is floor.TARGET)


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "MISSED")


def _med(xs):
    return statistics.median(xs) if xs else float("nan")


def _s(x: float) -> str:
    return f"{x:.2f} s" if x >= 0.1 else f"{x * 1000:.1f} ms"


def _header(stamp: str, info: dict, tw: dict) -> list[str]:
    gpu = info.get("gpu") or "no GPU"
    return [
        f"# Elemental Merge benchmark, {stamp}",
        f"# machine: {info['cpu']}, {info['cores']} cores, {info.get('ram_gib', 0):.1f} GiB RAM, {gpu}; "
        f"torch {tw['torch']} ({tw['threads']} threads), Python {info['python']}; merge device "
        f"{tw['device']}, weights {tw['unet_dtype']}; load average at start "
        f"{' '.join(f'{x:.2f}' for x in info['load_at_start'])} (machine shared: figures are noisy)",
        f"# checkpoints: SD1.5 layout, random weights ({tw['unet_keys']} UNet + {tw['clip_keys']} "
        f"text-encoder keys merged); each worker loads A and B once ({tw['load_s']:.0f} s), untimed"]


def _full_merge(out: list, tw: dict, ow: dict, nw: dict) -> tuple[float, bool, float, float]:
    """[1] lines; returns (ours/native, met, ours' median total, native's). Runs are (build_s, total_s,
    cpu_s); pairs were interleaved, so the median of the per-pair ratios cancels drift from other jobs better
    than the ratio of the medians."""
    o_tot = _med([r[1] for r in tw["ours"]])
    n_tot = _med([r[1] for r in tw["native"]])
    o_b = _med([r[0] for r in tw["ours"]])
    n_b = _med([r[0] for r in tw["native"]])
    r_full = _med([o[1] / n[1] for o, n in zip(tw["ours"], tw["native"])])
    r_cpu = _med([o[2] / n[2] for o, n in zip(tw["ours"], tw["native"])])
    r_best = min(r[1] for r in tw["ours"]) / min(r[1] for r in tw["native"])
    ok_full = r_full <= T_FULL
    nr = tw["native_ratios"]
    out.append(f"[1] full merge, queue -> weights ready (in-process: node execute + load_models_gpu of UNet and "
               f"text encoder; warm; {len(tw['ours'])} interleaved pairs): ours {_s(o_tot)} (build {_s(o_b)}) | "
               f"native {_s(n_tot)} (build {_s(n_b)}) | ours/native {r_full:.3f} (median of per-pair ratios; "
               f"ratio of medians {o_tot / n_tot:.3f}; of the best runs {r_best:.3f}; CPU time {r_cpu:.3f}) "
               f"[target <= {T_FULL}: {_verdict(ok_full)}]")
    out.append(f"    ours: ElementalMerge Weight sum, 10-entry spec (mean UNet alpha {nr['unet_mean_alpha']:.3f}); "
               f"native: ModelMergeBlocks input/middle/out {nr['input']:.3f}/{nr['middle']:.3f}/{nr['out']:.3f} "
               f"+ CLIPMergeSimple {nr['clip']:.3f} (model1 shares); keys patched ours {tw['ours'][0][3]}, native "
               f"{tw['native'][0][3]}; all runs (wall) ours "
               f"{', '.join(f'{r[1]:.2f}' for r in tw['ours'])} s, native "
               f"{', '.join(f'{r[1]:.2f}' for r in tw['native'])} s")
    dg = tw.get("diagnose")
    if dg:
        pk, gl, gp = dg["per_key_list"], dg["grouped_list"], dg["grouped_plain"]
        out.append(f"[1] where it goes (UNet only, ours' ratios, best of {dg['rounds']}; bench/diagnose.py): build with "
                   f"one add_patches per key {_s(pk['build'])} vs one per ratio ({dg['groups']} calls) "
                   f"{_s(gl['build'])}; load with get_key_patches() list sources {_s(gl['load'])} vs plain "
                   f"(weight,) sources {_s(gp['load'])}; both changes: {_s(pk['build'] + pk['load'])} -> "
                   f"{_s(gp['build'] + gp['load'])}")
    out.append(f"[1] cold: first merge in a fresh process (1 run each, from the memory workers): ours "
               f"{_s(ow['full']['total'])} | native {_s(nw['full']['total'])} | ours/native "
               f"{ow['full']['total'] / nw['full']['total']:.3f}")

    return r_full, ok_full, o_tot, n_tot


def _xy(out: list, ow: dict, nw: dict) -> tuple[float, bool]:
    o_cell = _med(ow["xy"]["cells"])
    n_cell = _med(nw["xy"]["cells"])
    r_xy = n_cell / o_cell
    ok_xy = r_xy >= T_XY
    st = ow.get("xy_stats", {})
    n = len(ow["xy"]["cells"])
    out.append(f"[2] XY re-merge per cell (pinpoint element IN04 attn2, {n + 1} ratios; median of the {n} "
               f"cells after the first; resolve + re-merge + load): ours incremental {_s(o_cell)} "
               f"({st.get('changed', '?')} keys recomputed) | native re-queued ModelMergeBlocks {_s(n_cell)} "
               f"(full re-patch) | native/ours {r_xy:.0f}x [target >= {T_XY:.0f}x: {_verdict(ok_xy)}]")
    out.append(f"    first cell (a full merge on both sides): ours {_s(ow['xy']['first'])} | native "
               f"{_s(nw['xy']['first'])}")

    return r_xy, ok_xy


def _resolution(out: list, resolve_lines: list, resolve: dict) -> tuple:
    out.append("[3] ratio resolution, all keys (bench/bench_resolve.py):")
    out += [f"    {l}" for l in resolve_lines]
    sdxl = resolve.get(("sdxl", "cached"))
    sdxl_cold = resolve.get(("sdxl", "cold"))
    ok_res = None if sdxl is None else sdxl < T_RESOLVE
    if sdxl is not None:
        out.append(f"[3] SDXL resolution (cached, as on every re-queue): {sdxl:.2f} ms; cold {sdxl_cold:.2f} ms "
                   f"[target < {T_RESOLVE:.0f} ms: {_verdict(ok_res)}]")

    return sdxl, ok_res


def _peak_line(out: list, ow: dict, nw: dict, phase: str, label: str) -> float:
    o, n = ow[phase], nw[phase]
    r = o["rss_peak"] / n["rss_peak"]
    out.append(f"[4] peak RSS during {label} (separate processes, VmHWM): ours {o['rss_peak'] / GIB:.2f} GiB "
               f"(+{(o['rss_peak'] - ow['rss_sources']) / GIB:.2f} over A+B loaded) | native "
               f"{n['rss_peak'] / GIB:.2f} GiB (+{(n['rss_peak'] - nw['rss_sources']) / GIB:.2f}) | "
               f"ours/native {r:.3f} [target <= {T_PEAK}: {_verdict(r <= T_PEAK)}]")
    return r


def _floor(out: list, tw: dict, o_tot: float, n_tot: float) -> tuple:
    fl = tw["floor"]
    f_t = fl["strict_s"]
    r_floor, ok_floor = floor.judge(o_tot, fl)
    on_gpu = ok_floor is not None
    gbps = 3 * fl["model_bytes"] / f_t / 1e9
    out.append(f"[5] floor: torch.lerp(a, b, r) over the {fl['tensors']} merged tensors already in memory "
               f"({fl['model_bytes'] / 1e9:.2f} GB per model, {fl['dtype']} on {fl['device']}; median of "
               f"{len(fl['strict'])}; {gbps:.1f} GB/s into preallocated outputs) | ours full merge "
               f"{floor.versus(o_tot, fl)} | native {n_tot / f_t:.1f}x the floor")
    out.append("[SDXL] full merge at SDXL size: skipped (GPU only; this machine has none)" if not on_gpu else
               "[SDXL] full merge at SDXL size: no SDXL-layout checkpoints provisioned; skipped")
    return r_floor, ok_floor, on_gpu


def render(stamp: str, info: dict, workers: dict, resolve_lines: list, resolve: dict, wall: float) -> list[str]:
    tw, ow, nw = workers["timing"], workers["ours"], workers["native"]
    out = _header(stamp, info, tw)
    r_full, ok_full, o_tot, n_tot = _full_merge(out, tw, ow, nw)
    r_xy, ok_xy = _xy(out, ow, nw)
    sdxl, ok_res = _resolution(out, resolve_lines, resolve)
    r_pf = _peak_line(out, ow, nw, "full", "the full merge")
    r_px = _peak_line(out, ow, nw, "xy", f"the XY plot ({len(ow['xy']['cells']) + 1} cells)")
    r_floor, ok_floor, on_gpu = _floor(out, tw, o_tot, n_tot)
    out.append(f"# run took {wall:.0f} s")

    res = f"{sdxl:.2f} ms ({_verdict(ok_res)})" if sdxl is not None else "n/a"
    floor_v = _verdict(ok_floor) if on_gpu else "CPU, GPU target n/a"
    out.append(f"SUMMARY full ours/native={r_full:.3f} ({_verdict(ok_full)}) | XY cell native/ours={r_xy:.0f}x "
               f"({_verdict(ok_xy)}) | resolve SDXL={res} | peak RSS ours/native full={r_pf:.3f} "
               f"XY={r_px:.3f} ({_verdict(max(r_pf, r_px) <= T_PEAK)}) | full/floor={r_floor:.1f}x ({floor_v})")
    return out


def main(argv=None) -> int:
    """Re-renders a saved results JSON: python -m bench.report bench/results/latest.json"""
    path = (argv or sys.argv[1:] or ["bench/results/latest.json"])[0]
    with open(path) as f:
        data = json.load(f)
    from .run import _parse_resolve

    lines = render(data["stamp"], data["machine"], data["workers"], data["resolve"],
                   _parse_resolve(data["resolve"]), data["wall_s"])
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

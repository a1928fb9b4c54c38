"""Calc modes: what each costs. Two parts, one file:

    "$PYTHON" -m bench.bench_calc_modes [--reps N]            # per key, synthetic SD1.5 shapes: no lock needed
    flock /tmp/elemental-heavy.lock "$PYTHON" -m bench.bench_calc_modes --full [--reps N] [--smooth-seconds S]
    ... --smoke        CI's bench smoke, either part: one repetition, no warm-up, smoothAdd's budget 1 s, the
                       per-key shapes cut to 64 per dimension; --full: two calc modes' full merges and the
                       cosine statistic of the text encoder only; nothing written to bench/results/

Per key (default; bench/results/calc_modes_keys.txt): for representative SD1.5 keys (the largest convolutions
and linears, a text-encoder MLP, the token embedding, a bias), random A/B/C in float32 (ComfyUI's CPU dtype):
  [floor]   torch.lerp(A, B, a) into a fresh tensor, per key: the least a merge that makes a new weight costs
  [normal]  what ComfyUI's patch path does with our fused patch: the float32 copy of A it always makes, then
            MergePatch.calculate_weight (in-place lerp_) -> ratio to the floor
  [calc]    the same for every calc mode -> ratio to normal (smoothAdd without the largest convolution)
  [cosine]  the cosine statistic over these keys: cold and cached
  [smooth]  smoothAdd's filter per value for 1-D, 2-D and 4-D keys, extrapolated to one SD1.5 merge with the
            element counts of the test checkpoint's header (UNet + text encoder)

Full (--full; bench/results/calc_modes.txt), the SD1.5-layout test checkpoints loaded in-process:
  [normal]  ElementalMerge "Weight sum" (bench/workloads.py's 10-entry spec) execute + load of UNet and text
            encoder, median of N, against bench/floor.py's floor (floor.versus: the same words as bench.run)
            and native ModelMergeBlocks + CLIPMergeSimple (median of N).
  [calc]    each calc mode's full merge (execute + load), one run each, against normal's median. Three-model
            modes use C = A merged with B half and half as a ComfyUI patch (no third checkpoint in RAM).
  [cosine]  the model-wide cosine statistic (cosineA and cosineB): cold (cache emptied) and cached.
  [smooth]  smoothAdd over every UNet + text-encoder key, key by key with calc_merge; past the budget the rest
            is extrapolated per value from the keys of the same rank measured so far (said so).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench import floor, merges, workloads  # noqa: E402
from bench.machine import describe as describe_machine  # noqa: E402
from bench.env import pack_module  # noqa: E402
from bench.results_log import ResultsLog  # noqa: E402

FULL_CALCS = ("cosineA", "cosineB", "trainDifference", "extract", "tensor", "tensor2", "self")
# A smoke run's full merges: one two-model and one three-model mode (every calc mode runs in the per-key
# smoke, and the cosine statistic in [cosine]); the other full merges cost minutes on a 2-core CPU.
SMOKE_FULL_CALCS = ("tensor", "trainDifference")
THREE = {"trainDifference", "smoothAdd", "extract"}
OUT = os.path.join(REPO, "bench", "results", "calc_modes.txt")


def _mm():
    import comfy.model_management

    return comfy.model_management


def model_c(src):
    """C = A merged with B half and half, as ComfyUI patches on a clone of A (lazy: no RAM)."""
    mc, cc = src.model_a.clone(), src.clip_a.clone()
    mc.add_patches(src.model_b.get_key_patches("diffusion_model."), 0.5, 0.5)
    cc.add_patches(src.clip_b.get_key_patches(), 0.5, 0.5)
    return mc, cc


def full(src, calc: str, c=None) -> float:
    """Seconds from ElementalMerge.execute to weights ready (UNet + text encoder), calc mode ``calc``."""
    nodes = pack_module("nodes.merge_nodes")
    spec = nodes.ElementalSpec.execute(workloads.FULL_SPEC, "auto")[0]
    mode = "Add difference" if calc in THREE else "Weight sum"
    kw = dict(model_c=c[0], clip_c=c[1]) if mode == "Add difference" else {}
    t0 = time.perf_counter()
    out = nodes.ElementalMerge.execute(model_a=src.model_a, model_b=src.model_b, mode=mode,
                                       alpha=workloads.ALPHA, beta=0.25, print_change=False, clip_a=src.clip_a,
                                       clip_b=src.clip_b, elemental_alpha=spec, calc_mode=calc,
                                       calc_option=0.3, **kw)
    _mm().load_models_gpu([out[0], out[1].load_model()])
    seconds = time.perf_counter() - t0
    del out
    merges.reset()
    return seconds


def cosine_figures(src, smoke: bool = False) -> dict:
    """Cold and cached cosine statistic of A and B: over UNet and text encoder, or (smoke) the text encoder."""
    cm = pack_module("merge_core.merge.calc_modes")  # the pack's own module: its STAT_CACHE is the one merges use
    mp = pack_module("nodes.engine.merge_adapter")
    info = pack_module("nodes.engine.model_info")
    arch = info.architecture_of(src.model_a)
    parts = [(arch, src.model_a.get_key_patches("diffusion_model."), src.model_b.get_key_patches("diffusion_model.")),
             (arch, src.clip_a.get_key_patches(), src.clip_b.get_key_patches())]
    token = mp.pair_token(src.model_a, src.model_b, src.clip_a.patcher, src.clip_b.patcher)
    if smoke:
        parts = parts[1:]
    out = {}
    for mode in ("cosineA", "cosineB"):
        cm.STAT_CACHE.clear()
        t0 = time.perf_counter()
        stat = mp.cosine_stat(mode, token, parts)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(1000):
            mp.cosine_stat(mode, token, parts)
        out[mode] = (cold, (time.perf_counter() - t0) / 1000, stat.count)
    return out


def smooth_figure(src, c, budget: float) -> dict:
    """smoothAdd over every key (or extrapolated past ``budget`` seconds), with the tensors as loaded."""
    from merge_core.merge import calc_modes as cm

    mp = pack_module("nodes.engine.merge_adapter")
    import torch

    cpu = torch.device("cpu")
    pairs = []
    for pa, pb, pc, prefix in ((src.model_a, src.model_b, c[0], "diffusion_model."),
                               (src.clip_a.patcher, src.clip_b.patcher, c[1].patcher, None)):
        ea, eb, ec = pa.get_key_patches(prefix), pb.get_key_patches(prefix), pc.get_key_patches(prefix)
        pairs += [(k, ea[k], eb[k], ec[k]) for k in ea if ea[k][0][0].is_floating_point()]
    timed, per_elem, skipped = 0.0, {}, 0
    start = time.perf_counter()
    for key, ea, eb, ec in sorted(pairs, key=lambda p: p[1][0][0].numel()):
        A = ea[0][0]
        cls = A.dim()
        if time.perf_counter() - start > budget and cls in per_elem:
            skipped += 1
            timed += per_elem[cls][0] / per_elem[cls][1] * A.numel()
            continue
        t0 = time.perf_counter()
        cm.calc_merge("smoothAdd", mp.source_weight(ea, cpu), mp.source_weight(eb, cpu), mp.source_weight(ec, cpu),
                      0.5, 0.0)
        dt = time.perf_counter() - t0
        timed += dt
        s, n = per_elem.get(cls, (0.0, 0))
        per_elem[cls] = (s + dt, n + A.numel())
    return {"seconds": timed, "keys": len(pairs), "extrapolated_keys": skipped,
            "elements": sum(p[1][0][0].numel() for p in pairs)}


def machine() -> str:
    import torch

    return f"{describe_machine()}; torch {torch.__version__} ({torch.get_num_threads()} threads)"


def main_full(a) -> int:
    import torch

    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        return run(a)


def run(a) -> int:
    log = ResultsLog("calc modes benchmark", machine())
    say = log.say
    pack_module("nodes.merge_nodes")  # imports ComfyUI (CPU unless CUDA is usable) and the pack
    src, load_s = merges.load_sources()
    say(f"# checkpoints A, B loaded in {load_s:.1f} s (untimed); weights {src.model_a.model_dtype()}")
    ratios = workloads.native_ratios(src.unet_keys, src.clip_keys)
    if not a.smoke:
        full(src, "normal")  # warm-up
    normal = [full(src, "normal") for _ in range(a.reps)]
    native = []
    for _ in range(a.reps):
        native.append(merges.full_native(src, ratios)[1])
        merges.reset()
    fl = floor.measure(src, reps=a.reps)
    n_med, nat_med = statistics.median(normal), statistics.median(native)
    say(f"[normal] full merge {n_med:.2f} s (runs {', '.join(f'{x:.2f}' for x in normal)}) | "
        f"{floor.versus(n_med, fl)} | native {nat_med:.2f} s | ours/native {n_med / nat_med:.3f} (target <= 0.35)")
    c = model_c(src)
    for calc in SMOKE_FULL_CALCS if a.smoke else FULL_CALCS:
        s = full(src, calc, c)
        say(f"[calc] {calc:<16} {s:7.2f} s  = {s / n_med:5.2f}x normal")
    for mode, (cold, cached, count) in cosine_figures(src, a.smoke).items():
        say(f"[cosine] {mode} statistic: cold {cold:.2f} s, cached {cached * 1e6:.1f} us ({count} values kept)")
    sm = smooth_figure(src, c, a.smooth_seconds)
    say(f"[smooth] smoothAdd filter over one SD1.5 merge ({sm['keys']} keys, {sm['elements'] / 1e6:.0f} M values): "
        f"{sm['seconds']:.0f} s" + (f" ({sm['extrapolated_keys']} largest keys extrapolated per element)"
                                    if sm["extrapolated_keys"] else ""))
    log.write(OUT, a.smoke)
    return 0


SHAPES = {  # name -> shape (ComfyUI key form; the names decide blocks and calc-mode rules)
    "diffusion_model.middle_block.0.in_layers.2.weight": (1280, 1280, 3, 3),
    "diffusion_model.output_blocks.0.0.in_layers.2.weight": (1280, 2560, 3, 3),
    "diffusion_model.input_blocks.4.1.transformer_blocks.0.ff.net.0.proj.weight": (5120, 640),
    "diffusion_model.output_blocks.5.1.transformer_blocks.0.attn1.to_q.weight": (1280, 1280),
    "diffusion_model.output_blocks.5.1.transformer_blocks.0.attn1.to_q.bias": (1280,),
    "clip_l.transformer.text_model.encoder.layers.3.mlp.fc1.weight": (3072, 768),
    "clip_l.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
}
CALCS = ("cosineA", "cosineB", "trainDifference", "smoothAdd", "extract", "tensor", "tensor2", "self")
SMOOTH_SKIP = {"diffusion_model.output_blocks.0.0.in_layers.2.weight"}  # timed per element via [smooth]


def header_shapes(path: str) -> dict:
    """key -> shape from a safetensors header (8-byte length + JSON), without reading any tensor."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
    return {k: tuple(v["shape"]) for k, v in head.items() if k != "__metadata__"}


def best(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def smoke_shape(shape: tuple) -> tuple:
    return tuple(min(d, 64) for d in shape)


def _synthetic_sources(torch, shapes: dict) -> dict:
    """key -> {"a"/"b"/"c": get_key_patches()-style entry}: B and C are A plus 10 % noise, seeded."""
    g = torch.Generator().manual_seed(0)
    ident = lambda t, **kw: t  # noqa: E731
    tensors = {}
    for k, s in shapes.items():
        A = torch.randn(s, generator=g)
        tensors[k] = {n: [(t, ident)] for n, t in (("a", A), ("b", A + 0.1 * torch.randn(s, generator=g)),
                                                      ("c", A + 0.1 * torch.randn(s, generator=g)))}
    return tensors


def _time_modes(a, torch, mp, core, cm, arch, tensors, say) -> None:
    """The fresh-tensor floor, `normal` and every calc mode, summed over the keys."""
    ws = core.get_merge_method("Weight sum")
    stat = mp.cosine_stat("cosineA", ("bench",), [(arch, {k: v["a"] for k, v in tensors.items()},
                                                     {k: v["b"] for k, v in tensors.items()})])
    cm.STAT_CACHE.clear()
    floor = normal = 0.0
    per_calc = {c: 0.0 for c in CALCS}
    for k, ent in tensors.items():
        A, B = ent["a"][0][0], ent["b"][0][0]
        floor += best(lambda: torch.lerp(A, B, 0.4), a.reps)
        patch = mp.make_patch(k, ws.steps(0.4, 0.0), sources={"b": (ent["b"],)})
        normal += best(lambda: patch.calculate_weight(A.to(torch.float32, copy=True), k, 1.0, 1.0, None, None),
                       a.reps)
        for c in CALCS:
            if c == "smoothAdd" and k in SMOOTH_SKIP:
                continue
            args = cm.CalcArgs(core.canonical_key(k, arch), 0.3, stat)
            q = mp.make_patch(k, (), c, 0.4, 0.3, {"b": (ent["b"],), "c": (ent["c"],)}, None, args)
            reps = 1 if c == "smoothAdd" else a.reps
            per_calc[c] += best(lambda: q.calculate_weight(A.to(torch.float32, copy=True), k, 1.0, 1.0, None,
                                                           None), reps)
    say(f"[floor]  lerp into fresh tensors, {len(tensors)} keys: {floor * 1e3:.0f} ms")
    say(f"[normal] A's float32 copy + fused patch (lerp_): {normal * 1e3:.0f} ms = {normal / floor:.2f}x "
        f"the fresh-tensor floor (target <= 2.0)")
    for c in CALCS:
        note = " (without the 2560x1280x3x3 key)" if c == "smoothAdd" else ""
        say(f"[calc]   {c:<16} {per_calc[c] * 1e3:8.0f} ms = {per_calc[c] / normal:6.2f}x normal{note}")


def _time_cosine_statistic(mp, cm, arch, tensors, say) -> None:
    pairs = [(arch, {k: v["a"] for k, v in tensors.items()}, {k: v["b"] for k, v in tensors.items()})]
    for mode in ("cosineA", "cosineB"):
        cm.STAT_CACHE.clear()
        cold = best(lambda: (cm.STAT_CACHE.clear(), mp.cosine_stat(mode, ("bench",), pairs)), 1)
        cached = best(lambda: mp.cosine_stat(mode, ("bench",), pairs), 100)
        n = sum(v["a"][0][0].numel() for v in tensors.values())
        say(f"[cosine] {mode} statistic over these keys ({n / 1e6:.0f} M values): cold {cold * 1e3:.0f} ms "
            f"({cold / n * 1e9:.1f} ns per value), cached {cached * 1e6:.1f} us")


def _time_smooth_add(torch, cm, tensors, checkpoint_dir, say) -> None:
    """smoothAdd's cost per value by tensor rank, extrapolated to every UNet and text-encoder value of SD1.5."""
    per_elem = {}
    for k, ent in tensors.items():
        A, B, C = (ent[n][0][0] for n in "abc")
        if k in SMOOTH_SKIP:
            continue
        cls = {1: "1-D", 2: "2-D", 4: "4-D"}[A.dim()]
        t = best(lambda: cm.calc_merge("smoothAdd", A, B, C, 0.4, 0.0), 1)
        s, n = per_elem.get(cls, (0.0, 0))
        per_elem[cls] = (s + t, n + A.numel())
    shapes = header_shapes(os.path.join(checkpoint_dir, "test_A.safetensors"))
    counts = {}
    for key, shape in shapes.items():
        if key.startswith(("model.diffusion_model.", "cond_stage_model.")) and len(shape) in (1, 2, 4):
            cls = {1: "1-D", 2: "2-D", 4: "4-D"}[len(shape)]
            counts[cls] = counts.get(cls, 0) + torch.Size(shape).numel()
    total = sum(per_elem[c][0] / per_elem[c][1] * counts.get(c, 0) for c in per_elem)
    detail = ", ".join(f"{c} {per_elem[c][0] / per_elem[c][1] * 1e9:.0f} ns/value x {counts.get(c, 0) / 1e6:.0f} M"
                       for c in sorted(per_elem))
    say(f"[smooth] smoothAdd per SD1.5 merge (extrapolated per value from these keys): {total:.0f} s ({detail})")


def main_keys(a) -> int:
    import torch

    from bench.env import CHECKPOINT_DIR

    mp = pack_module("nodes.engine.merge_adapter")
    core = pack_module("merge_core")
    cm = pack_module("merge_core.merge.calc_modes")
    arch = core.get_architecture("sd1")
    tensors = _synthetic_sources(torch, {k: smoke_shape(s) for k, s in SHAPES.items()} if a.smoke else SHAPES)
    log = ResultsLog()
    say = log.say
    say(f"# calc modes per key (synthetic SD1.5 shapes, float32, CPU, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f})")
    with torch.inference_mode():
        _time_modes(a, torch, mp, core, cm, arch, tensors, say)
        _time_cosine_statistic(mp, cm, arch, tensors, say)
        _time_smooth_add(torch, cm, tensors, CHECKPOINT_DIR, say)
    log.write(os.path.join(os.path.dirname(OUT), "calc_modes_keys.txt"), a.smoke)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the full-merge figures on the test checkpoints")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--smooth-seconds", type=float, default=240.0)
    p.add_argument("--smoke", action="store_true", help="one repetition of everything, small: checks that it runs")
    a = p.parse_args(argv)
    if a.smoke:
        a.reps, a.smooth_seconds = 1, min(a.smooth_seconds, 1.0)
    return main_full(a) if a.full else main_keys(a)


if __name__ == "__main__":
    sys.exit(main())

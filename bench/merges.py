"""One full merge or one XY cell, ours or native, timed from "queued" to "weights ready for the sampler".

"Queued" starts the clock where ComfyUI would start executing the changed nodes (the checkpoints are
already loaded and cached by the loader nodes, as they are on every queue after the first). "Weights
ready" is the return of `comfy.model_management.load_models_gpu`, which a sampler (UNet) and a text
encode (CLIP) call before running: that is where ModelPatcher computes the patched weights on the device.
Everything runs in-process through the very node classes a server would call.
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass

from . import workloads
from .env import pack_module


@dataclass
class Sources:
    """Checkpoints A and B as the loader nodes hand them over, plus their key lists."""
    model_a: object
    clip_a: object
    model_b: object
    clip_b: object
    unet_keys: list
    clip_keys: list


def load_sources() -> tuple[Sources, float]:
    from .env import load_checkpoint

    t0 = time.perf_counter()
    model_a, clip_a = load_checkpoint("A")
    model_b, clip_b = load_checkpoint("B")
    seconds = time.perf_counter() - t0
    info = pack_module("nodes.engine.model_info")
    return Sources(model_a, clip_a, model_b, clip_b, list(info.unet_shapes(model_a)),
                   list(info.clip_shapes(clip_a))), seconds


def _mm():
    import comfy.model_management

    return comfy.model_management


def reset() -> None:
    """Back to "nothing merged is loaded": unpatches A's weights and hands the freed memory back to the system
    (untimed). Without the trim, glibc keeps what a merge freed and the next merge reuses it without faulting
    it in: a run after a task method that freed 1 GiB took 4.4 s where the same merge from a trimmed heap took
    6.1-6.6 s, so each run's time depended on what ran before it."""
    _mm().unload_all_models()
    gc.collect()
    pack_module("merge_core.merge.scratch").return_freed_memory()


def full_ours(src: Sources) -> tuple[float, float, float, int]:
    """ElementalSpec (queue-time validation + execute) -> ElementalMerge -> load.

    Returns (build_s, total_s, cpu_s, keys_patched): wall seconds to the end of the node and to weights
    ready, the process CPU seconds of the whole (less sensitive to other jobs taking the cores), and how
    many UNet + text-encoder keys carry merge patches (both sides must patch the same keys)."""
    nodes = pack_module("nodes.merge_nodes")
    c0, t0 = time.process_time(), time.perf_counter()
    ok = nodes.ElementalSpec.validate_inputs(workloads.FULL_SPEC, "auto")
    if ok is not True:
        raise RuntimeError(f"benchmark spec rejected: {ok}")
    spec = nodes.ElementalSpec.execute(workloads.FULL_SPEC, "auto")[0]
    out = nodes.ElementalMerge.execute(model_a=src.model_a, model_b=src.model_b, mode=workloads.MODE,
                                       alpha=workloads.ALPHA, beta=0.0, print_change=False,
                                       clip_a=src.clip_a, clip_b=src.clip_b, elemental_alpha=spec)
    model, clip = out[0], out[1]
    t1 = time.perf_counter()
    _mm().load_models_gpu([model, clip.load_model()])
    t2, c2 = time.perf_counter(), time.process_time()
    return t1 - t0, t2 - t0, c2 - c0, len(model.patches) + len(clip.patcher.patches)


def full_native(src: Sources, ratios: dict) -> tuple[float, float, float, int]:
    """ModelMergeBlocks + CLIPMergeSimple -> load. Returns (build_s, total_s, cpu_s, keys_patched) as `full_ours`."""
    from comfy_extras.nodes_model_merging import CLIPMergeSimple, ModelMergeBlocks

    c0, t0 = time.process_time(), time.perf_counter()
    model = ModelMergeBlocks().merge(src.model_a, src.model_b, input=ratios["input"],
                                     middle=ratios["middle"], out=ratios["out"])[0]
    clip = CLIPMergeSimple().merge(src.clip_a, src.clip_b, ratios["clip"])[0]
    t1 = time.perf_counter()
    _mm().load_models_gpu([model, clip.load_model()])
    t2, c2 = time.perf_counter(), time.process_time()
    return t1 - t0, t2 - t0, c2 - c0, len(model.patches) + len(clip.patcher.patches)


def xy_ours(src: Sources, xy_ratios=workloads.XY_RATIOS) -> tuple[float, list[float], dict]:
    """Pinpoint-element plot with the incremental engine: (first cell s, later cells s, last apply stats).

    Per cell, what the Elemental XY Plot node does before sampling: the cell's settings resolved through
    ElementalMerge's own resolver (`plot_job.settings_ratios`: spec parse + resolve_ratios), then
    `IncrementalMerge.apply` (recomputes the changed keys on the loaded model), then the load a sampler
    calls (`IncrementalMerge.load`). The first cell is a full merge; the others are the per-cell figure."""
    remerge = pack_module("nodes.engine.remerge")
    plot_job = pack_module("nodes.plot.plot_job")
    axes = pack_module("merge_core.plot.axes")
    method = pack_module("merge_core").get_merge_method(workloads.MODE)
    times = []
    inc = None
    stats = {}
    for i, r in enumerate(xy_ratios):
        t0 = time.perf_counter()
        if inc is None:
            inc = remerge.IncrementalMerge(src.model_a, src.model_b, None, method, src.clip_a, src.clip_b)
            arch = pack_module("nodes.engine.model_info").architecture_of(src.model_a)
        settings = axes.Settings(workloads.ALPHA, 0.0, elemental_alpha=workloads.xy_spec(r))
        ra, rb = plot_job.settings_ratios(method, arch, inc.keys, settings)
        inc.apply(ra, rb)
        inc.load()
        times.append(time.perf_counter() - t0)
        if i > 0:
            last = inc.last
            stats = {"in_place": dict(last.in_place), "deferred": dict(last.deferred),
                     "changed": len(last.changed), "apply_s": last.seconds}
    return times[0], times[1:], stats


def xy_native(src: Sources, ratios: dict, xy_ratios=workloads.XY_RATIOS) -> tuple[float, list[float]]:
    """The same plot by re-queueing ModelMergeBlocks with its `input` ratio changed per cell: a new clone,
    which ComfyUI's next load re-patches in full. The first cell also merges and loads the text encoder
    (CLIPMergeSimple), as ours does; later cells do not re-merge it (ComfyUI caches that node's output and
    the loaded CLIP stays loaded), exactly like ours, whose cells leave the text encoder alone."""
    from comfy_extras.nodes_model_merging import CLIPMergeSimple, ModelMergeBlocks

    times = []
    previous = clip = None
    for r in xy_ratios:
        t0 = time.perf_counter()
        model = ModelMergeBlocks().merge(src.model_a, src.model_b, input=1.0 - r, middle=ratios["middle"],
                                         out=ratios["out"])[0]
        to_load = [model]
        if clip is None:
            clip = CLIPMergeSimple().merge(src.clip_a, src.clip_b, ratios["clip"])[0]
            to_load.append(clip.load_model())
        _mm().load_models_gpu(to_load)
        times.append(time.perf_counter() - t0)
        previous = model  # ComfyUI's cache holds the latest output until the node runs again
    del previous, clip
    return times[0], times[1:]

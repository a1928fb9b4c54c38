"""Where a ModelPatcher merge's time goes, measured on ours' own ratios (UNet only), for the merge path's owner.

Two costs that both ours and native pay, each compared with the cheaper way to state the same patches:
  build  `ModelPatcher.add_patches` rebuilds `model.state_dict()` on every call, so one call per key costs
         O(keys^2); one call per distinct (strength, strength_model) adds the very same patch tuples.
  load   a source given as its `get_key_patches()` list makes `comfy.lora.calculate_weight` first copy the
         source tensor (`cast_to_device(..., copy=True)`) before using it; a source without patches of its
         own can be given as the plain `(weight,)` tuple, which gives the same numbers without that copy.
"""
from __future__ import annotations

import gc
import time
from collections import defaultdict

from . import workloads


def _build(model_a, keys, sources, ratios, grouped: bool):
    m = model_a.clone()
    t0 = time.perf_counter()
    if grouped:
        groups = defaultdict(dict)
        for k in keys:
            groups[ratios[k]][k] = sources[k]
        for a, patches in groups.items():
            m.add_patches(patches, a, 1.0 - a)
    else:
        for k in keys:
            m.add_patches({k: sources[k]}, ratios[k], 1.0 - ratios[k])
    return m, time.perf_counter() - t0


def measure(src, rounds: int = 2) -> dict:
    """Best of `rounds` for each variant: {variant: {build, load}} in seconds."""
    import comfy.model_management as mm

    keys = list(src.unet_keys)
    ratios = workloads.resolved_alpha(tuple(keys), workloads.FULL_SPEC)
    ratios = {k: ratios.get(k, workloads.ALPHA) for k in keys}
    kp = src.model_b.get_key_patches("diffusion_model.")
    plain = {k: (v[0][0],) if len(v) == 1 else v for k, v in kp.items()}
    out = {"groups": len(set(ratios.values())), "rounds": rounds}
    for _ in range(rounds):
        for name, grouped, sources in (("per_key_list", False, kp), ("grouped_list", True, kp),
                                       ("grouped_plain", True, plain)):
            m, build = _build(src.model_a, keys, sources, ratios, grouped)
            t0 = time.perf_counter()
            mm.load_models_gpu([m])
            load = time.perf_counter() - t0
            del m
            mm.unload_all_models()
            gc.collect()
            best = out.setdefault(name, {"build": build, "load": load})
            best["build"], best["load"] = min(best["build"], build), min(best["load"], load)
    return out

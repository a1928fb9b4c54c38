"""The behaviour of ComfyUI's patch paths that the merge engine relies on, checked on a 4x6 weight.

A merged key is a `merge_adapter.MergePatch` in A's patch list. ComfyUI computes it on one of three paths:
the classic `patch_weight_to_device` (float32 compute), the same with its compute dtype at float16 (0.33 on
most GPUs), and the dynamic-VRAM loader (0.33 on NVIDIA), which first rebuilds every adapter through
`comfy.lora.prefetch_prepared_value`. A ComfyUI release that changes any of them could make a merge silently
return model A, which no attribute check sees. `load_path_problems()` runs one Weight sum through each path
that this ComfyUI has and names each that no longer gives the formula; `require_load_paths()` raises with
those names, once per process, before the first merge.
"""
from __future__ import annotations

import functools

import torch

import comfy.lora
import comfy.model_patcher

from ...merge_core.merge.methods import get_merge_method
from .comfy_internals import COMFYUI_VERSION_READ, dynamic_prepared_patches
from .merge_adapter import make_patch

_KEY = "probe.weight"
_ALPHA = 0.375


def _probe_patchers():
    cpu = torch.device("cpu")
    out = []
    for start in (0.0, 1.0):
        module = torch.nn.Module()
        module.probe = torch.nn.Linear(6, 4, bias=False)
        with torch.no_grad():
            module.probe.weight.copy_(torch.arange(24, dtype=torch.float32).reshape(4, 6) / 8 + start)
        out.append(comfy.model_patcher.ModelPatcher(module.half(), load_device=cpu, offload_device=cpu))
    return out


def load_path_problems() -> list[str]:
    """One line per patch path of this ComfyUI that does not compute a merge as the engine expects."""
    pa, pb = _probe_patchers()
    A, B = (p.model.probe.weight.detach().double() for p in (pa, pb))
    expected = (A * (1 - _ALPHA) + B * _ALPHA).half()
    target = pa.clone()
    patch = make_patch(_KEY, get_merge_method("Weight sum").steps(_ALPHA, 0.0),
                       sources={"b": (pb.get_key_patches()[_KEY],)})
    target.add_patches({_KEY: patch})
    problems = []

    def check(name, compute):
        try:
            got = compute()
        except Exception as e:  # noqa: BLE001 - the point is to name the path that broke
            problems.append(f"{name}: {type(e).__name__}: {e}")
            return
        if got.dtype != torch.float16 or not torch.equal(got.half(), expected):
            same_as_a = torch.equal(got.double(), A)
            problems.append(f"{name}: the merged weight is {'model A unchanged' if same_as_a else 'wrong'}")

    weight = pa.model.probe.weight.detach()
    check("classic patch compute (float32)",
          lambda: comfy.lora.calculate_weight(target.patches[_KEY], weight.float(), _KEY).half())
    check("float16 patch compute",
          lambda: comfy.lora.calculate_weight(target.patches[_KEY], weight.clone(), _KEY))
    prepared = None
    try:
        prepared = dynamic_prepared_patches(target, _KEY)
    except Exception as e:  # noqa: BLE001
        problems.append(f"dynamic-VRAM patch preparation: {type(e).__name__}: {e}")
    if prepared is not None:
        check("dynamic-VRAM patch preparation",
              lambda: comfy.lora.calculate_weight(prepared, weight.clone(), _KEY, intermediate_dtype=torch.float16))
    return problems


@functools.cache
def _checked() -> tuple:
    return tuple(load_path_problems())


def require_load_paths() -> None:
    """Raises RuntimeError naming every patch path that would compute merges wrongly (checked once)."""
    problems = _checked()
    if problems:
        raise RuntimeError(
            "Elemental Merge: this ComfyUI computes merge patches differently from the ComfyUI "
            f"{COMFYUI_VERSION_READ} the engine was written against, so a merge would be wrong; not merging. "
            + "; ".join(problems))

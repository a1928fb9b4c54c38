"""The ways ComfyUI turns a key's patch list into the weight a sampler uses, each callable on a CPU.

* ``classic``: `ModelPatcher.patch_weight_to_device`, the path of ComfyUI 0.3.75 and of `--cpu`; patches compute
  in float32 (`lora_compute_dtype` is float32 on a CPU).
* ``fp16 compute``: the same call with `model_management.LORA_COMPUTE_DTYPES[cpu]` forced to float16, as
  ComfyUI 0.33 sets it wherever `should_use_fp16` holds (most GPUs): A's weight is handed over in float16.
* ``dynamic``: the dynamic-VRAM loader's path (ComfyUI >= 0.33 on NVIDIA; `comfy/ops.py` and
  `ModelPatcherDynamic.load`): a `LowVramPatch` sizes its patches (`memory_required`), copies them into a
  staging buffer with `prepare` (`comfy.lora.prefetch_prepared_value`, which rebuilds every weight adapter from
  its `loaded_keys` and `weights`), then is called on the weight cast to the layer's compute dtype.
* ``dynamic fp16``: the dynamic path with a float16 compute dtype (an fp16 layer on a GPU).

`weight_via(patcher, key, path)` returns the weight as that path computes it, in the dtype the model stores,
and leaves the model as it found it.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

CPU = torch.device("cpu")
CLASSIC, FP16_COMPUTE, DYNAMIC, DYNAMIC_FP16 = "classic", "fp16 compute", "dynamic", "dynamic fp16"
LOAD_PATHS = (CLASSIC, FP16_COMPUTE, DYNAMIC, DYNAMIC_FP16)


def has_dynamic_path() -> bool:
    """Whether this ComfyUI has the dynamic loader's patch preparation (0.33 and later)."""
    import comfy.lora

    return hasattr(comfy.lora, "prefetch_prepared_value")


@contextmanager
def lora_compute_dtype(dtype):
    """ComfyUI's patch compute dtype on the CPU forced to `dtype` (the cache `lora_compute_dtype` reads)."""
    import comfy.model_management as mm

    table = getattr(mm, "LORA_COMPUTE_DTYPES", None)
    if table is None:  # 0.3.75: patches always compute in float32
        if dtype != torch.float32:
            raise RuntimeError("this ComfyUI has no LORA_COMPUTE_DTYPES: patches always compute in float32")
        yield
        return
    saved = table.get(CPU)
    table[CPU] = dtype
    try:
        yield
    finally:
        if saved is None:
            table.pop(CPU, None)
        else:
            table[CPU] = saved


def _classic(patcher, key, compute_dtype):
    import comfy.utils

    with lora_compute_dtype(compute_dtype):
        patcher.patch_weight_to_device(key, device_to=CPU)
    weight = comfy.utils.get_attr(patcher.model, key).detach().clone()
    backup = patcher.backup.pop(key)
    comfy.utils.set_attr_param(patcher.model, key, backup.weight)
    return weight


def _dynamic(patcher, key, compute_dtype):
    import comfy.float
    import comfy.model_patcher
    import comfy.utils

    weight, _set, convert = comfy.model_patcher.get_key_weight(patcher.model, key)
    stored = weight.dtype
    patch = comfy.model_patcher.LowVramPatch(key, patcher.patches)
    staging = torch.empty((max(patch.memory_required(), 1),), dtype=torch.uint8)
    patch.prepare(staging, None, copy=True, commit=True)
    x = weight.detach().to(compute_dtype, copy=True)
    if convert is not None:
        x = convert(x, inplace=True)
    out = patch(x)
    patch.clear_prepared()
    seed = comfy.utils.string_to_seed(key) if hasattr(comfy.utils, "string_to_seed") else 0
    return comfy.float.stochastic_rounding(out, stored, seed=seed)


def weight_via(patcher, key: str, path: str) -> torch.Tensor:
    """`key`'s patched weight as ComfyUI's `path` computes it (see the module docstring)."""
    import comfy.utils

    if key not in patcher.patches:
        return comfy.utils.get_attr(patcher.model, key).detach().clone()
    if path == CLASSIC:
        return _classic(patcher, key, torch.float32)
    if path == FP16_COMPUTE:
        return _classic(patcher, key, torch.float16)
    stored = comfy.utils.get_attr(patcher.model, key).dtype
    if path == DYNAMIC:
        return _dynamic(patcher, key, stored)
    if path == DYNAMIC_FP16:
        return _dynamic(patcher, key, torch.float16)
    raise ValueError(f"unknown load path {path!r}; one of {LOAD_PATHS}")


def compute_dtype_of(path: str, stored: torch.dtype) -> torch.dtype:
    """The dtype A's weight is handed to the patches in, on `path`."""
    return torch.float16 if path in (FP16_COMPUTE, DYNAMIC_FP16) else (
        torch.float32 if path == CLASSIC else stored)

"""A sample of a saved merge's tensors against the merge formula computed here from the source files.

Each sampled tensor is classed by its largest error against the formula in float64: `exact` (equal to the
formula written in float32, as the CPU tests check), `fp32` (within the rounding bound of the formula's few
float32 operations: 2 ulps of fp32 at the sum of the terms' magnitudes), `fp16` (only within one fp16 ulp:
the merge went through an fp16 weight, as the text encoder does), or `wrong`. The UNet must be `exact` or
`fp32`; the text encoder (kept in fp16 by ComfyUI, merged with its stochastic rounding) at most `fp16`; keys
in no block (the VAE) must be A's exactly.
"""
from __future__ import annotations

import torch
from safetensors import safe_open

ORDER = ("exact", "fp32", "fp16", "wrong")


def ulp(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    h = x.to(dtype)
    up = torch.nextafter(h, torch.tensor(float("inf"), dtype=dtype)).double() - h.double()
    down = h.double() - torch.nextafter(h, torch.tensor(float("-inf"), dtype=dtype)).double()
    return torch.maximum(up, down)


def formula(mode: str, A, B, C, a: float):
    """(float64 value, float32 value as the CPU tests write it, magnitude of the terms)."""
    if mode == "Weight sum":
        exact = A.double() * (1 - a) + B.double() * a
        f32 = A * (1 - a) + a * B
        scale = A.double().abs() * abs(1 - a) + B.double().abs() * abs(a)
    else:  # Add difference
        exact = A.double() + (B.double() - C.double()) * a
        f32 = A + (B - C) * a
        scale = A.double().abs() + (B.double().abs() + C.double().abs()) * abs(a)
    return exact, f32, scale


def classify(got: torch.Tensor, exact, f32, scale) -> tuple[str, float]:
    g = got.double()
    err = (g - exact).abs()
    if torch.equal(got.float(), f32.float()):
        return "exact", float(err.max())
    if (err <= 2 * ulp(scale, torch.float32) + 1e-45).all():
        return "fp32", float(err.max())
    if (err <= ulp(exact, torch.float16) + 2 * ulp(scale, torch.float32)).all():
        return "fp16", float(err.max())
    return "wrong", float(err.max())


def sample_keys(keys: list[str], arch, every: int) -> list[str]:
    """Every `every`-th key of each block (its first included), and a few keys in no block."""
    by_block: dict = {}
    for k in keys:
        by_block.setdefault(arch.block_of(k), []).append(k)
    out = []
    for block, ks in by_block.items():
        out += ks[::every] if block is not None else ks[:3]
    return out


def check_saved(path: str, checkpoints: dict, mode: str, alpha: float, spec: str, every: int = 8) -> dict:
    import merge_core as mc

    arch = mc.get_architecture("sd1")
    with safe_open(path, "pt") as out, safe_open(checkpoints["A"], "pt") as fa, \
            safe_open(checkpoints["B"], "pt") as fb, safe_open(checkpoints["C"], "pt") as fc:
        keys = [k for k in fa.keys() if not k.endswith("position_ids")]
        blocked = [k for k in keys if arch.block_of(k) is not None]
        ratios = mc.resolve_ratios(blocked, arch, alpha, spec=mc.parse_spec(spec, arch, keys=blocked)).ratios
        saved = set(out.keys())
        counts = {part: dict.fromkeys(ORDER, 0) for part in ("unet", "text_encoder")}
        worst = {"unet": 0.0, "text_encoder": 0.0}
        failures, vae_checked, dtypes = [], 0, set()
        sampled = sample_keys(keys, arch, every)
        for key in sampled:
            if key not in saved:
                failures.append(f"{key}: missing from the saved file")
                continue
            got = out.get_tensor(key)
            dtypes.add(str(got.dtype))
            A = fa.get_tensor(key)
            if key not in ratios:
                vae_checked += 1
                if not torch.equal(got.float(), A.float()):
                    failures.append(f"{key}: in no block, but not A's value")
                continue
            a = ratios[key]
            C = fc.get_tensor(key).float() if mode == "Add difference" else None
            exact, f32, scale = formula(mode, A.float(), fb.get_tensor(key).float(), C, a)
            kind, err = classify(got, exact, f32, scale)
            part = "unet" if key.startswith("model.") else "text_encoder"
            counts[part][kind] += 1
            worst[part] = max(worst[part], err)
            allowed = ("exact", "fp32") if part == "unet" else ("exact", "fp32", "fp16")
            if kind not in allowed:
                failures.append(f"{key} (ratio {a}): {kind}, max error {err:.3g}")
    return {"file": path, "mode": mode, "alpha": alpha, "spec": spec, "sampled": len(sampled),
            "no_block_checked": vae_checked, "classes": counts, "max_abs_error": worst,
            "saved_dtypes": sorted(dtypes), "failures": failures[:20], "ok": not failures}

"""The LoRA formula written out for the in-process ElementalLoRA tests (SD1.5 layouts, SDXL): each module's
tensors as the file holds them, the patched weight in fp32 in the order ComfyUI's adapters compute it, and the
float64 formula that bounds it. Independent of the pack; ComfyUI's key map only finds each module's key."""
from __future__ import annotations

import torch


def lora_modules(path: str, key_map: dict):
    """model key -> (kind, tensors, alpha) for each module of the file, found through ComfyUI's key map (LoKr:
    (w1, w2_a, w2_b) or (w1, w2))."""
    from safetensors.torch import load_file

    sd = load_file(path)
    out = {}
    suffixes = {".lora_up.weight": "lora", ".lora_B.weight": "peft", ".hada_w1_a": "loha", ".lokr_w1": "lokr"}
    for name in sd:
        for suffix, kind in suffixes.items():
            if name.endswith(suffix):
                base = name[:-len(suffix)]
                alpha = sd[base + ".alpha"].item() if base + ".alpha" in sd else None
                if kind == "lora":
                    t = (sd[base + ".lora_up.weight"], sd[base + ".lora_down.weight"])
                elif kind == "peft":
                    t = (sd[base + ".lora_B.weight"], sd[base + ".lora_A.weight"])
                elif kind == "lokr":
                    w2 = ("lokr_w2",) if base + ".lokr_w2" in sd else ("lokr_w2_a", "lokr_w2_b")
                    t = tuple(sd[f"{base}.{n}"] for n in ("lokr_w1",) + w2)
                else:
                    t = tuple(sd[f"{base}.hada_w{i}_{ab}"] for i in (1, 2) for ab in "ab")
                out[key_map[base]] = (kind, t, alpha)
    return out


def formula32(W, kind, t, alpha, s):
    """The patched weight in fp32, in the order ComfyUI's adapters compute it."""
    f = [x.float() for x in t]
    if kind == "lokr":
        w1, w2 = f[0], (f[1] if len(f) == 2 else torch.mm(f[1], f[2]))
        if w2.ndim == 4:
            w1 = w1[:, :, None, None]
        diff = torch.kron(w1, w2).reshape(W.shape)
        scale = alpha / f[2].shape[0] if len(f) == 3 and alpha is not None else 1.0  # none if both are full
    elif kind == "loha":
        diff = (torch.mm(f[0], f[1]) * torch.mm(f[2], f[3])).reshape(W.shape)
        scale = alpha / f[1].shape[0]
    else:
        diff = torch.mm(f[0].flatten(start_dim=1), f[1].flatten(start_dim=1)).reshape(W.shape)
        scale = alpha / f[1].shape[0] if alpha is not None else 1.0
    return W.float() + (s * scale) * diff


def formula64(W, kind, t, alpha, s):
    """(the patched weight in float64, a bound on the magnitudes summed: for the rounding tolerance)."""
    d = [x.double() for x in t]
    rank = d[1].shape[0]
    scale = alpha / rank if alpha is not None else 1.0
    if kind == "lokr":
        # kron(w1, w2)[a * out2 + b, c * in2 + d] = w1[a, c] * w2[b, d] (w2's input and kernel dims flattened)
        scale = alpha / d[2].shape[0] if len(d) == 3 and alpha is not None else 1.0
        w2, w2_abs = (d[1], d[1].abs()) if len(d) == 2 else (d[1] @ d[2], d[1].abs() @ d[2].abs())
        outer = lambda x, y: torch.einsum("ac,bd->abcd", x, y.flatten(1)).reshape(-1, W[0].numel())
        diff = outer(d[0], w2)[:W.shape[0]].reshape(W.shape)
        size = outer(d[0].abs(), w2_abs)[:W.shape[0]].reshape(W.shape)
    elif kind == "loha":
        diff = ((d[0] @ d[1]) * (d[2] @ d[3])).reshape(W.shape)
        size = ((d[0].abs() @ d[1].abs()) * (d[2].abs() @ d[3].abs())).reshape(W.shape)
    else:
        diff = (d[0].flatten(1) @ d[1].flatten(1)).reshape(W.shape)
        size = (d[0].flatten(1).abs() @ d[1].flatten(1).abs()).reshape(W.shape)
    return W.double() + s * scale * diff, W.double().abs() + abs(s * scale) * size


def first_rows(kind, t, n=8):
    """The factors' parts that make the first n rows of the weight."""
    if kind == "loha":
        return [t[0][:n], t[1], t[2][:n], t[3]]
    if kind == "lokr":  # rows a * out2 + b of kron(w1, w2): w1's first ceil(n / out2) rows
        return [t[0][:-(-n // t[1].shape[0])]] + list(t[1:])
    return [x[:n] for x in t]


def assert_float64_close(W, kind, t, alpha, s, want32, key, n=8):
    """The fp32 formula is the exact one within fp32 rounding, on the first n rows."""
    exact, size = formula64(W[:n], kind, first_rows(kind, t, n), alpha, s)
    assert ((want32[:n].double() - exact).abs() <= 2.0 ** -21 * size).all(), f"{key}: fp32 is not the formula"

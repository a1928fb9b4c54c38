"""SuperMerger's "Adjust": eight numbers that nudge detail, contrast, brightness and colour of a UNet.

Why these keys: the UNet's first conv (``input_blocks.0.0``) sees the latent, and its output GroupNorm
(``out.0``) and conv (``out.2``) write the predicted noise, one output channel per latent channel. Scaling them
changes how much detail/noise survives; shifting the output bias shifts every latent channel, which the VAE
turns into brightness and colour casts. Only these six tensors change:

==========================================  ==============================================
key (checkpoint form)                       change
==========================================  ==============================================
``model.diffusion_model.input_blocks.0.0.weight``  times ``1 - IN*0.01``
``model.diffusion_model.input_blocks.0.0.bias``    times ``1 + IN*0.02``
``model.diffusion_model.out.0.weight``             times ``1 - OUT*0.01``
``model.diffusion_model.out.0.bias``               times ``1 + OUT*0.02``
``model.diffusion_model.out.2.weight``             times ``1 - OUT2*0.01``
``model.diffusion_model.out.2.bias``               plus ``[CONT*0.02, c1, c2, c3]``
==========================================  ==============================================

``(c1, c2, c3) = sum_i cols[i] * 0.02 * M[i]`` with ``cols = [BRI, COL1, COL2, COL3]`` and the per-architecture
colour matrix `COLOUR_MATRICES` (the latent channels mean different colours in SD1/SD2 and SDXL).

Arithmetic is ComfyUI's patch arithmetic: the weight is taken to float32, multiplied by the factor (a Python
float, i.e. a float32 scalar in torch's kernel) or added the float32 vector, and cast back to the weight's
dtype (fp16/bf16/fp32 by plain rounding; ComfyUI rounds only fp8 stochastically). `adjusted_tensor` is that formula on plain tensors; the node expresses the same as ModelPatcher
patches. Architectures without these keys (Flux, SD3) get `AdjustError`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from ..arch.architectures import ARCHITECTURES
from ..numbers import finite_float

NAMES = ("IN", "OUT", "OUT2", "CONT", "BRI", "COL1", "COL2", "COL3")
UNET = "model.diffusion_model."

# Latent channels 1..3 per colour slider (rows: BRI, COL1, COL2, COL3), declared on the architecture records
# where Adjust is defined; channel 0 takes CONT.
COLOUR_MATRICES = {a.name: a.adjust_colours for a in ARCHITECTURES.values() if a.adjust_colours is not None}
SUPPORTED = tuple(COLOUR_MATRICES)

# (key suffix after the UNet prefix, slider index into NAMES, coefficient): factor = 1 + coefficient * value.
SCALED = (
    ("input_blocks.0.0.weight", 0, -0.01),
    ("input_blocks.0.0.bias", 0, 0.02),
    ("out.0.weight", 1, -0.01),
    ("out.0.bias", 1, 0.02),
    ("out.2.weight", 2, -0.01),
)
SHIFTED = "out.2.bias"
KEYS = tuple(UNET + s for s, _, _ in SCALED) + (UNET + SHIFTED,)


class AdjustError(ValueError):
    """Invalid adjust values, or a model the adjustment does not apply to."""


@dataclass(frozen=True)
class AdjustValues:
    """The eight adjust numbers, in `NAMES` order."""
    values: tuple = (0.0,) * 8

    def __post_init__(self):
        if len(self.values) != len(NAMES):
            raise AdjustError(f"adjust needs {len(NAMES)} values ({', '.join(NAMES)}), got {len(self.values)}")
        for name, v in zip(NAMES, self.values):
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise AdjustError(f"adjust {name}: {v!r} is not a finite number")
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))

    @classmethod
    def from_named(cls, **named) -> "AdjustValues":
        unknown = [k for k in named if k.upper() not in NAMES]
        if unknown:
            raise AdjustError(f"unknown adjust name(s) {', '.join(unknown)} (valid: {', '.join(NAMES)})")
        upper = {k.upper(): v for k, v in named.items()}
        return cls(tuple(float(upper.get(n, 0.0)) for n in NAMES))

    def get(self, name: str) -> float:
        return self.values[NAMES.index(name.upper())]

    def with_value(self, name: str, value: float) -> "AdjustValues":
        """These values with one of them replaced (the `pinpoint adjust` axis)."""
        i = _name_index(name)
        return AdjustValues(self.values[:i] + (float(value),) + self.values[i + 1:])

    @property
    def is_zero(self) -> bool:
        return not any(self.values)

    def text(self) -> str:
        """The 8-number string that `parse_adjust` reads back to exactly these values."""
        return ",".join(_num(v) for v in self.values)

    def label(self) -> str:
        """Short label: the non-zero values by name (``IN=2 COL1=-1``), or ``none``."""
        parts = [f"{n}={_num(v)}" for n, v in zip(NAMES, self.values) if v]
        return " ".join(parts) or "none"


def _num(v: float) -> str:
    """Shortest text that reads back as the same float (ints without '.0')."""
    return str(int(v)) if v == int(v) and abs(v) < 1e15 else repr(v)


def _name_index(name: str) -> int:
    key = str(name).strip().upper()
    if key not in NAMES:
        raise AdjustError(f"unknown adjust name '{name}' (valid: {', '.join(NAMES)})")
    return NAMES.index(key)


_TOKEN = re.compile(r"[^,\s]+")


def parse_adjust(text: str, where: str = "adjust") -> AdjustValues:
    """Eight numbers separated by commas/spaces (``2,0,0,0,0,1,0,0``), or ``NAME=value`` pairs (``IN=2,
    COL1=1``; the others 0). Empty text is all zeros. Errors name the token, its 1-based position and the
    valid names."""
    tokens = [(m.group(0), m.start() + 1) for m in _TOKEN.finditer(text or "")]
    if not tokens:
        return AdjustValues()
    named = ["=" in t for t, _ in tokens]
    if any(named) and not all(named):
        raise AdjustError(f"{where}: mix of plain numbers and NAME=value pairs in '{text.strip()}' (use 8 numbers "
                          f"in the order {', '.join(NAMES)}, or NAME=value pairs only)")
    if all(named):
        values = [0.0] * len(NAMES)
        seen = set()
        for tok, col in tokens:
            name, _, raw = tok.partition("=")
            if name.strip().upper() not in NAMES:
                raise AdjustError(f"{where}: unknown name '{name}' at column {col} (valid: {', '.join(NAMES)})")
            i = NAMES.index(name.strip().upper())
            if i in seen:
                raise AdjustError(f"{where}: {NAMES[i]} given twice (column {col})")
            seen.add(i)
            values[i] = _number(raw, f"{where}: {NAMES[i]} at column {col}")
        return AdjustValues(tuple(values))
    if len(tokens) != len(NAMES):
        raise AdjustError(f"{where}: expected {len(NAMES)} numbers ({', '.join(NAMES)}), got {len(tokens)} in "
                          f"'{text.strip()}'")
    return AdjustValues(tuple(_number(t, f"{where}: value {i + 1} ({NAMES[i]}) at column {c}")
                              for i, (t, c) in enumerate(tokens)))


def _number(raw: str, where: str) -> float:
    v = finite_float(raw)
    if v is None:
        raise AdjustError(f"{where}: '{raw}' is not a finite number")
    return v


def colour_shift(values: AdjustValues, arch_name: str) -> tuple:
    """The 4-vector added to ``out.2.bias``: ``[CONT*0.02, c1, c2, c3]`` (Python floats)."""
    matrix = _matrix(arch_name)
    cols = values.values[4:8]
    c = [0.0, 0.0, 0.0]
    for i, row in enumerate(matrix):
        for j in range(3):
            c[j] += cols[i] * 0.02 * row[j]
    return (values.get("CONT") * 0.02, c[0], c[1], c[2])


def _matrix(arch_name: str):
    if arch_name not in COLOUR_MATRICES:
        raise AdjustError(f"Adjust works on SD1, SD2 and SDXL UNets (first conv input_blocks.0.0, output "
                          f"GroupNorm out.0 and conv out.2); '{arch_name}' has no such layers "
                          f"(supported: {', '.join(SUPPORTED)})")
    return COLOUR_MATRICES[arch_name]


@dataclass(frozen=True)
class KeyChange:
    """One key's change: ``scale`` multiplies by `amount` (a float), ``shift`` adds `amount` (a 4-tuple)."""
    key: str          # checkpoint form (model.diffusion_model....)
    kind: str         # "scale" | "shift"
    amount: object

    def describe(self) -> str:
        if self.kind == "scale":
            return f"{self.key}: x {self.amount:.6g}"
        return f"{self.key}: + [{', '.join(f'{a:.6g}' for a in self.amount)}]"


def key_changes(values: AdjustValues, arch_name: str) -> list[KeyChange]:
    """The changes `values` make on architecture `arch_name`; keys left exactly as they are are omitted."""
    _matrix(arch_name)
    out = []
    for suffix, i, coef in SCALED:
        factor = 1.0 + coef * values.values[i]
        if factor != 1.0:
            out.append(KeyChange(UNET + suffix, "scale", factor))
    shift = colour_shift(values, arch_name)
    if any(shift):
        out.append(KeyChange(UNET + SHIFTED, "shift", shift))
    return out


def check_keys(shapes: dict, arch_name: str, prefix: str = UNET) -> None:
    """AdjustError unless a model with key -> shape `shapes` (keys under `prefix`) has the six keys and a
    4-channel output bias."""
    _matrix(arch_name)
    missing = [k for k in KEYS if prefix + k[len(UNET):] not in shapes]
    if missing:
        raise AdjustError(f"Adjust: the model lacks {', '.join(missing)} (it changes the UNet's first conv and "
                          "output layers; Flux and SD3 have none)")
    bias = tuple(shapes[prefix + SHIFTED])
    if bias != (4,):
        raise AdjustError(f"Adjust: {UNET + SHIFTED} has shape {bias}, expected (4,) (one per latent channel)")


def shift_tensor(change: KeyChange) -> torch.Tensor:
    """The float32 vector a ``shift`` change adds."""
    return torch.tensor(change.amount, dtype=torch.float32)


def adjusted_tensor(weight: torch.Tensor, change: KeyChange) -> torch.Tensor:
    """`weight` after `change`, in ComfyUI's patch arithmetic (float32 intermediate, cast back)."""
    w = weight.to(torch.float32, copy=True)
    if change.kind == "scale":
        w *= change.amount
    else:
        w += shift_tensor(change).to(w.device)
    return w.to(weight.dtype)


def adjust_state_dict(state: dict, values: AdjustValues, arch_name: str, prefix: str = UNET) -> dict:
    """key -> adjusted tensor for the keys `values` change, from a state dict whose UNet keys start with
    `prefix` (checkpoint ``model.diffusion_model.`` or ComfyUI's ``diffusion_model.``)."""
    check_keys({k: tuple(v.shape) for k, v in state.items() if k.startswith(prefix)}, arch_name, prefix)
    out = {}
    for change in key_changes(values, arch_name):
        key = prefix + change.key[len(UNET):]
        out[key] = adjusted_tensor(state[key], change)
    return out

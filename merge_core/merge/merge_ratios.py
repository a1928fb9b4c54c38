"""Every key's alpha and beta from one set of merge settings: the plain ratios, block weights and elemental
specs, each text checked against the models' architecture first.

The one resolver of ElementalMerge, the XY plot's cells and the diff checker's targets. Order: alpha (or
beta), then block weights, then the spec (`resolve_ratios`); keys outside every block merge at the plain
ratio (`Resolution.ratio`).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..arch.architectures import ALTERNATE_TABLES, ARCHITECTURES, get_architecture
from ..text.block_weights import parse_block_weights
from ..text.spec import parse_spec
from ..text.spec import validate_spec
from ..text.validation import AUTO, validate_block_weights
from ..text.written import TextInput, check_written_for, parse_text
from .resolve import Resolution, resolve_ratios


@dataclass(frozen=True)
class Ratios:
    """The per-key ratios of one set of merge settings."""
    a: object                          # key -> alpha
    b: object                          # key -> beta
    resolution_a: Resolution
    resolution_b: Resolution | None    # None when beta is not used


def block_table(arch, weights: TextInput | None, spec: TextInput | None, ratio: float | None = None):
    """The block table the texts of one ratio are read with: `arch`, or one of its `ALTERNATE_TABLES` (same keys,
    another block list) when a text was written for it, or when the texts fit it and not `arch` (a 110-value
    SDXL string, a spec naming an extended SDXL block)."""
    alternates = [get_architecture(n) for n in ALTERNATE_TABLES.get(arch.name, ())]
    texts = [t for t in (weights, spec) if t is not None]
    for alt in alternates:
        if any(t.architecture == alt.name for t in texts):
            return alt
    written = [(t, fn) for t, fn in ((weights, lambda text, a: validate_block_weights(text, a, alpha=ratio)),
                                     (spec, validate_spec)) if t is not None and t.text.strip()]
    if not alternates or not written:
        return arch

    def fits(a) -> bool:
        return all(not any(d.is_error for d in fn(t.text, a)) for t, fn in written)

    if fits(arch):
        return arch
    return next((alt for alt in alternates if fits(alt)), arch)


def resolve_side(keys, arch, ratio: float, weights: TextInput | None, spec: TextInput | None,
                 label: str) -> Resolution:
    """The Resolution of one ratio (`label`: "alpha" or "beta"), after checking its texts against `arch` (or
    the alternate block table they were written for: `block_table`)."""
    arch = block_table(arch, weights, spec, ratio)
    check_written_for(f"block_weights_{label}", weights, arch)
    check_written_for(f"elemental_{label}", spec, arch)
    bw = None
    if weights is not None:
        with _named_other_architecture(f"block_weights_{label}", weights, arch,
                                       lambda text, a: validate_block_weights(text, a, alpha=ratio)):
            bw = parse_text(f"block_weights_{label}", parse_block_weights, weights.text, arch, alpha=ratio)
    parsed = None
    if spec is not None and spec.text.strip():
        with _named_other_architecture(f"elemental_{label}", spec, arch, validate_spec):
            parsed = parse_text(f"elemental_{label}", parse_spec, spec.text, arch, keys=keys)
    return resolve_ratios(keys, arch, ratio, block_weights=bw, spec=parsed)


class _named_other_architecture:
    """Around the parse of an `auto` text: when it fails for the models' architecture but is valid for another
    record, the error says so, naming both ("written for Wan 2.1/2.2 but the models are Qwen-Image: ...")."""

    def __init__(self, what: str, given: TextInput, arch, validate):
        self.what, self.given, self.arch, self.validate = what, given, arch, validate

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is not ValueError or self.given.architecture != AUTO or not self.given.text.strip():
            return False
        fits = [a.label for a in ARCHITECTURES.values() if a.name != self.arch.name
                and not any(d.is_error for d in self.validate(self.given.text, a))]
        if not fits:
            return False
        written = fits[0] if len(fits) == 1 else f"another architecture (it fits {', '.join(fits)})"
        detail = str(exc)[len(self.what) + 2:] if str(exc).startswith(self.what + ": ") else str(exc)
        raise ValueError(f"{self.what} was written for {written} but the models are {self.arch.label}: "
                         f"{detail}") from None


def resolve(arch, keys, alpha: float, beta: float, with_beta: bool, block_weights_alpha=None,
            block_weights_beta=None, elemental_alpha=None, elemental_beta=None) -> Ratios:
    """Every key's alpha, and beta when `with_beta` (the method's or calc mode's use of it: `uses_beta`)."""
    res_a = resolve_side(keys, arch, alpha, block_weights_alpha, elemental_alpha, "alpha")
    res_b = resolve_side(keys, arch, beta, block_weights_beta, elemental_beta, "beta") if with_beta else None
    return Ratios(res_a.ratio, res_b.ratio if res_b is not None else (lambda key: float(beta)), res_a, res_b)

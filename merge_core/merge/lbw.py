"""LoRA Block Weight strings (the A1111 extension's ``lbw=`` weights), mapped exactly onto our blocks.

Users of hako-mikan's "LoRA Block Weight" (LBW) paste its weight lists and preset names; `ElementalLoRA`
takes them in its own input so that the merge nodes' `BlockWeights` stay strict. Facts from LBW's code (see
docs/lora-block-weight.md for the whole comparison):

* A list has one value per block of one of LBW's forms, in the order of `LBW_FORMS`. A short form leaves
  blocks out; LBW sets every block it omits to 0.
* LBW finds a key's block by name. UNet keys outside ``input_blocks``/``middle_block``/``output_blocks``
  (``time_embed``, ``label_emb``, the final ``out.``) and text-encoder keys outside the transformer layers
  (token/position embeddings, final layer norm, text projection) belong to no LBW block and keep strength 1,
  whatever the list says. Our own block table puts them in IN00, OUT11/OUT08 and BASE, so `lbw_assigns`
  says which keys LBW leaves alone.
* LBW accepts every length for every model and fills the blocks a form lacks with 0. We accept, per
  architecture, only the forms written for it (SD1/SD2: 17 or 26; SDXL: 12 or 20; Flux: 61): a list of
  another architecture's length puts values on other blocks than the user read them for. LBW has no form for
  the other architectures (SD3, Wan, Qwen-Image, Z-Image, ...): `lbw_forms` refuses them, naming
  block_weights and the elemental spec instead.
* LBW's random (``R``, ``U``) and inherited (``X``) values are refused: a LoRA setting must be reproducible.

Pure: no ComfyUI import.
"""
from __future__ import annotations

import math
import re
from dataclasses import replace

from ..arch.architectures import ARCHITECTURES, get_architecture
from ..diagnostics import ERROR, Diagnostic, MergeSpecError
from ..arch.keys import canonical_key
from .resolve import Resolution, resolve_ratios


# LBW's forms, per architecture (declared on the records): value count -> the blocks its values go to.
LBW_FORMS: dict[str, dict[int, tuple[str, ...]]] = {a.name: dict(a.lbw_forms) for a in ARCHITECTURES.values()
                                                    if a.lbw_forms}
# What each form is called in LBW's README, for error messages.
_FORM_NAMES = {17: "SD1/SD2 LoRA", 26: "SD1/SD2 LyCORIS", 12: "SDXL LoRA", 20: "SDXL LyCORIS", 61: "Flux"}

# LBW's built-in presets (its DEF_WEIGHT_PRESET): SD1/SD2 17-value lists, and FLUXALL.
_P17 = {
    "NONE": "0" + ",0" * 16,
    "ALL": "1" + ",1" * 16,
    "INS": "1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0",
    "IND": "1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0",
    "INALL": "1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0",
    "MIDD": "1,0,0,0,1,1,1,1,1,1,1,1,0,0,0,0,0",
    "OUTD": "1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0",
    "OUTS": "1,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1",
    "OUTALL": "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1",
    "ALL0.5": "0.5" + ",0.5" * 16,
}
LBW_PRESETS: dict[str, tuple[float, ...]] = {
    **{name: tuple(float(v) for v in text.split(",")) for name, text in _P17.items()},
    "FLUXALL": (1.0,) * 61,
}

# Canonical-name patterns of the keys LBW gives a block (the records' `lbw_keys`); every other key keeps
# strength 1 under LBW.
_COMPILED = {a.name: tuple(re.compile(p) for p in a.lbw_keys) for a in ARCHITECTURES.values() if a.lbw_keys}
_SPECIAL = {"R": "LoRA Block Weight's random value (0..1)", "U": "LoRA Block Weight's random value (-0.5..1.5)",
            "X": "LoRA Block Weight's inherited value (x=)"}


def lbw_forms(arch) -> dict[int, tuple[str, ...]]:
    """The value counts LBW has for ``arch`` and the blocks of each; ValueError for SD3 (LBW has none)."""
    a = get_architecture(arch)
    if a.name not in LBW_FORMS:
        raise ValueError(f"LoRA Block Weight has no weight lists for {a.label}: use block_weights "
                         "(a Block Weights node) or an elemental spec")
    return LBW_FORMS[a.name]


def expected_lbw_counts(arch) -> str:
    """``17 (BASE, IN01, ..., OUT03-OUT11) or 26 (...)``: what an error message lists."""
    return " or ".join(f"{n} ({_describe(blocks)})" for n, blocks in lbw_forms(arch).items())


def _describe(blocks: tuple[str, ...]) -> str:
    """Block names with runs of consecutive numbers shortened: ``BASE, IN00-IN11, M00, OUT00-OUT11``."""
    parts: list[list[str]] = []
    for b in blocks:
        m = re.match(r"^([A-Z]+)(\d\d)$", b)
        prev = re.match(r"^([A-Z]+)(\d\d)$", parts[-1][-1]) if parts else None
        if m and prev and m.group(1) == prev.group(1) and int(m.group(2)) == int(prev.group(2)) + 1:
            parts[-1].append(b)
        else:
            parts.append([b])
    return ", ".join(", ".join(p) if len(p) < 3 else f"{p[0]}-{p[-1]}" for p in parts)


def lbw_assigns(key: str, arch) -> bool:
    """Whether LBW gives ``key`` (any accepted key form) a block; if not, the key keeps strength 1."""
    a = get_architecture(arch)
    lbw_forms(a)
    canon = canonical_key(key, a)
    return any(p.match(canon) for p in _COMPILED[a.name])


def _tokens(text: str):
    """(value text, line, column) for every comma/whitespace-separated token, 1-based positions."""
    for n, line in enumerate(text.splitlines(), start=1):
        for m in re.finditer(r"[^,\s]+", line):
            yield m.group(0), n, m.start() + 1


_PREFIX = re.compile(r"\s*(?:(?:lbw|w)=)?(?:[^:,\s]+:)?")


def _strip_prefix(text: str) -> tuple[str, int]:
    """Drops a pasted ``lbw=`` or a preset line's ``NAME:``; returns the rest and how many characters went."""
    head = _PREFIX.match(text).group(0)
    return text[len(head):], len(head)


def parse_lbw(text: str, arch) -> dict[str, float]:
    """Every block of ``arch`` -> its LBW ratio (blocks the form omits: 0). Raises MergeSpecError.

    ``text``: an LBW preset name (NONE, ALL, INS, ..., FLUXALL; any case), or its values separated by commas,
    optionally as pasted from a preset file (``NAME:1,0,...``) or a prompt (``lbw=...``).
    """
    a = get_architecture(arch)
    try:
        forms = lbw_forms(a)
    except ValueError as exc:
        raise MergeSpecError([Diagnostic(1, 1, str(exc), ERROR, text.strip())]) from None
    source = text.strip()
    body, skipped = _strip_prefix(text)
    preset = {k.upper(): v for k, v in LBW_PRESETS.items()}.get(body.strip().upper())
    if preset is not None:
        values = list(preset)
    else:
        values = _numbers(body, source, skipped)
    blocks = forms.get(len(values))
    if blocks is None:
        what = f"preset {body.strip()} has" if preset is not None else "got"
        other = f"; {len(values)} is LoRA Block Weight's {_FORM_NAMES[len(values)]} form" \
            if len(values) in _FORM_NAMES else ""
        raise MergeSpecError([Diagnostic(
            1, 1, f"{a.label} LoRA Block Weight lists take {expected_lbw_counts(a)} values; "
                  f"{what} {len(values)}{other}", ERROR, source)])
    weights = {b: 0.0 for b in a.blocks}
    weights.update(zip(blocks, values))
    return weights


def _numbers(body: str, source: str, skipped: int) -> list[float]:
    diags: list[Diagnostic] = []
    values: list[float] = []
    for token, line, col in _tokens(body):
        col += skipped if line == 1 else 0
        try:
            v = float(token)
        except ValueError:
            v = math.nan
        if not math.isfinite(v):
            special = _SPECIAL.get(token[:1].upper()) if re.fullmatch(r"[RUXrux][+\-\d.]*", token) else None
            if special:
                msg = f"'{token}' is {special}: not supported (results must be reproducible); write a number"
            else:
                msg = f"'{token}' is not a finite number or a LoRA Block Weight preset"
            diags.append(Diagnostic(line, col, msg, ERROR, source, "presets: " + ", ".join(LBW_PRESETS)))
        values.append(v)
    if diags:
        raise MergeSpecError(diags)
    if not values:
        raise MergeSpecError([Diagnostic(1, 1, "empty LoRA Block Weight list", ERROR, source)])
    return values


def lbw_errors(text: str, arch) -> list[Diagnostic]:
    """The errors of ``text`` as an LBW list for ``arch`` (empty when valid), for queue-time checks."""
    try:
        parse_lbw(text, arch)
    except MergeSpecError as exc:
        return exc.errors
    return []


def resolve_lbw(keys, arch, text: str, spec=None) -> Resolution:
    """Per-key ratios from an LBW list (then ``spec``, as in the merge), with LBW's unassigned keys at 1.

    `resolve_ratios` starts every key at its block's weight; a key LBW assigns no block starts at 1 instead,
    and the spec's changes to such a key are restated from 1.
    """
    a = get_architecture(arch)
    keys = tuple(keys)
    res = resolve_ratios(keys, a, 1.0, parse_lbw(text, a), spec)
    free = {k for k in res.ratios if not lbw_assigns(k, a)}
    if not free:
        return res
    changes, seen = [], set()
    for c in res.changes:
        if c.key in free and c.key not in seen:
            c = replace(c, before=1.0)
        seen.add(c.key)
        changes.append(c)
    ratios = dict(res.ratios)
    for k in free - seen:
        ratios[k] = 1.0
    return Resolution(ratios, res.blocks, changes, res.warnings, res.arch_name, res.base)

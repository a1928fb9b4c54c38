"""Block-weight strings and named presets (SuperMerger's format).

A weight string lists one ratio per block in the architecture's order, BASE first:
26 values for SD1/SD2 (``BASE, IN00..IN11, M00, OUT00..OUT11``), 20 for SDXL; or 25 / 19 without BASE, in
which case BASE takes ``alpha``. An SD1 string (26/25 values) given for SDXL is converted as SuperMerger does:
BASE is kept and, of the values after BASE, positions 0-8 (IN00..IN08) and 12-21 (M00, OUT00..OUT08).
Flux and SD3 have no BASE: their strings list exactly one value per block (see `Architecture.blocks`).

Presets are data (``presets/<arch>.tsv``: ``name<TAB>comma-separated values``, BASE first). SD1's are
SuperMerger's list; SDXL's are derived from them by the conversion above (tests check that they agree).
"""
from __future__ import annotations

import math
import os
import re

from ..arch.architectures import ARCHITECTURES, DERIVED, Architecture, get_architecture
from ..cache import cached
from ..diagnostics import ERROR, Diagnostic, MergeSpecError
from ..numbers import finite_float
from .spec import describe_blocks

_PRESET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets")
_PRESET_FILES = {"sd1": "sd1.tsv", "sd2": "sd1.tsv", "sdxl": "sdxl.tsv"}


def sd1_to_sdxl(values) -> tuple[float, ...]:
    """SuperMerger's conversion of an SD1 weight list (26 with BASE, or 25 without) to SDXL (20 / 19)."""
    values = tuple(values)
    if len(values) == 26:
        return (values[0],) + sd1_to_sdxl(values[1:])
    if len(values) != 25:
        raise ValueError(f"an SD1 weight list has 26 or 25 values, not {len(values)}")
    return values[0:9] + values[12:22]


def _parse_tsv(text: str, source: str) -> dict[str, tuple[float, ...]]:
    presets: dict[str, tuple[float, ...]] = {}
    diags: list[Diagnostic] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#") or line.lower().startswith("preset_name"):
            continue
        parts = line.split("\t", 1) if "\t" in line else line.split(None, 1)
        if len(parts) != 2:
            diags.append(Diagnostic(n, 1, f"{source}: expected 'name<TAB>values'", ERROR, line))
            continue
        name, values = parts[0].strip(), parts[1].strip()
        try:
            nums = tuple(float(v) for v in values.split(","))
            if not all(math.isfinite(v) for v in nums):
                raise ValueError
        except ValueError:
            diags.append(Diagnostic(n, len(parts[0]) + 2, f"{source}: values of preset '{name}' are not all finite "
                                                           "numbers", ERROR, line))
            continue
        presets[name] = nums
    if diags:
        raise MergeSpecError(diags)
    return presets


def load_user_presets(path) -> dict[str, tuple[float, ...]]:
    """Presets from a tsv file in the built-in format (header line and ``#`` comments optional)."""
    with open(path, encoding="utf-8") as f:
        return _parse_tsv(f.read(), os.path.basename(str(path)))


def list_presets(arch) -> dict[str, tuple[float, ...]]:
    """Built-in presets of ``arch``, name -> values (BASE first); empty for Flux and SD3."""
    a = get_architecture(arch)
    fname = _PRESET_FILES.get(a.name)
    if fname is None:
        return {}
    return dict(_builtin_presets(fname))


@cached(maxsize=None)
def _builtin_presets(fname: str) -> dict[str, tuple[float, ...]]:
    with open(os.path.join(_PRESET_DIR, fname), encoding="utf-8") as f:
        return _parse_tsv(f.read(), fname)


def expected_counts(arch) -> str:
    a = get_architecture(arch)
    n = len(a.blocks)
    text = f"{n} values ({describe_blocks(a)})"
    if a.has_base:
        text += f" or {n - 1} without BASE"
    if a.name == "sdxl":
        text += f", or an SD1 list of 26/25, or {len(ARCHITECTURES['sdxl_ext'].blocks)} for the extended table"
    return text


def _find_preset(name: str, presets: dict) -> tuple[float, ...] | None:
    if not presets:
        return None
    by_upper = {k.upper(): v for k, v in presets.items()}
    return by_upper.get(name.upper())


def _as_weights(values, a: Architecture, alpha, line, col, source) -> dict[str, float]:
    n = len(a.blocks)
    values = tuple(float(v) for v in values)
    if a.name == "sdxl" and len(values) in (26, 25):
        values = sd1_to_sdxl(values)
    if len(values) == n:
        return dict(zip(a.blocks, values))
    if a.has_base and len(values) == n - 1:
        if alpha is None:
            raise MergeSpecError([Diagnostic(line, col, f"{len(values)} values leave BASE unset and no alpha was "
                                                        "given", ERROR, source, f"give alpha or {n} values")])
        return dict(zip(a.blocks, (float(alpha),) + values))
    raise MergeSpecError([Diagnostic(line, col, f"{a.label} block weights need {expected_counts(a)}{_lbw_note(a)}, "
                                                f"got {len(values)}{_closest_note(a, len(values))}", ERROR,
                                     source)])


def accepted_counts(arch) -> tuple[int, ...]:
    """The value counts a weight string for `arch` may have: one per block, one fewer without BASE, and SD1's
    26/25 for SDXL (converted)."""
    a = get_architecture(arch)
    n = len(a.blocks)
    counts = [n] + ([n - 1] if a.has_base else []) + ([26, 25] if a.name == "sdxl" else [])
    return tuple(dict.fromkeys(counts))


def closest_counts(count: int, exclude=None, limit: int = 3) -> list[tuple[Architecture, int]]:
    """The architectures (records, then those derived in this session) whose weight-string lengths are closest
    to `count`, each with its length nearest to it; `exclude` (an architecture) is left out."""
    skip = get_architecture(exclude).name if exclude is not None else None
    found = []
    for order, a in enumerate(list(ARCHITECTURES.values()) + list(DERIVED.values())):
        if a.name == skip:
            continue
        near = min(accepted_counts(a), key=lambda c: (abs(c - count), -c))
        found.append((abs(near - count), order, a, near))
    found.sort(key=lambda t: (t[0], t[1]))
    return [(a, near) for _, _, a, near in found[:limit]]


def _closest_note(a: Architecture, count: int) -> str:
    near = closest_counts(count, exclude=a)
    if not near:
        return ""
    return "; closest: " + ", ".join(f"{b.label} {n}" for b, n in near)


def _lbw_note(a: Architecture) -> str:
    """LoRA Block Weight's own list lengths for `a`, where they differ from the block count."""
    other = sorted(n for n in a.lbw_forms if n not in accepted_counts(a))
    return f" (LoRA Block Weight's lists: {' or '.join(map(str, other))})" if other else ""


def parse_block_weights(text_or_preset: str, arch, alpha: float | None = None,
                        user_presets: dict | None = None) -> dict[str, float]:
    """A ratio for every block of ``arch`` (BASE included) from a preset name or a list of numbers.

    Preset names are case-insensitive; user presets win over built-in ones. Numbers are separated by commas
    (spaces and newlines also accepted). Empty text gives every block ``alpha``. Raises MergeSpecError.
    """
    a = get_architecture(arch)
    text = (text_or_preset or "").strip()
    if not text:
        if alpha is None:
            raise MergeSpecError([Diagnostic(1, 1, "empty block weights and no alpha", ERROR)])
        return {b: float(alpha) for b in a.blocks}
    preset = _find_preset(text, user_presets or {})
    if preset is None:
        preset = _find_preset(text, list_presets(a))
    if preset is None and a.name == "sdxl":
        preset = _find_preset(text, list_presets("sd1"))  # user lists given as SD1 are converted anyway
    if preset is not None:
        return _as_weights(preset, a, alpha, 1, 1, text)

    diags: list[Diagnostic] = []
    values: list[float] = []
    for n, line in enumerate(text.splitlines(), start=1):
        for m in re.finditer(r"[^,\s]+", line):
            v = finite_float(m.group(0))
            if v is None:
                names = ", ".join(sorted(set(list_presets(a)) | set(user_presets or {})))
                hint = f"presets: {names}" if names else ""
                what = "not a finite number or a preset name" if "," in text or " " in text else \
                    "not a finite number or a known preset"
                diags.append(Diagnostic(n, m.start() + 1, f"'{m.group(0)}' is {what}", ERROR, text, hint))
            values.append(v)
    if diags:
        raise MergeSpecError(diags)
    return _as_weights(values, a, alpha, 1, 1, text)

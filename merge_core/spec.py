"""The elemental spec language: which keys of which blocks get which ratio.

Grammar (one *entry* per comma and/or newline; ``#`` starts a comment that runs to the end of the line)::

    entry    := blocks ":" elements ":" ratio
    blocks   := ["NOT"] (BLOCK | BLOCK "-" BLOCK)*     names separated by spaces, case-insensitive
    elements := ["NOT"] WORD*                          substrings of the canonical parameter name
    ratio    := a finite number

* empty blocks field = every block; ``NOT`` first = every block except those listed; ``IN02-IN05`` (either
  order) = the blocks between, inclusive, within one family (IN, OUT, D, S, J).
* empty elements field = the whole block; ``NOT`` first (upper case) = keys containing none of the words;
  ``NOT`` alone = every key. Words are matched against the canonical checkpoint-style name (see
  `merge_core.keys`), so one element works for checkpoint and ComfyUI key forms alike.
* entries apply in order; the last entry that selects a key decides its ratio.

Where SuperMerger silently ignores mistakes, we report them (see `merge_core.diagnostics`): a wrong number
of fields, an unknown block (with the nearest valid name), a range across families, a ratio that is not a
finite number are errors; an element that matches no key of the architecture, and an entry that selects no
key at all, are warnings. Empty words (stray spaces) are ignored rather than matching every key.
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Iterable

from .architectures import Architecture, get_architecture
from .diagnostics import ERROR, WARNING, Diagnostic, MergeSpecError
from .keys import canonical_key


@dataclass(frozen=True)
class SpecEntry:
    blocks: frozenset[str]  # the blocks listed (every block when the field is empty)
    elements: tuple[str, ...]  # substrings; () = every key of the selected blocks
    invert_blocks: bool
    invert_elements: bool
    ratio: float
    line: int
    column: int
    source: str

    def selects(self, block: str, canonical: str) -> bool:
        """Whether this entry sets the ratio of the key ``canonical`` in ``block``."""
        if (block in self.blocks) == self.invert_blocks:
            return False
        if not self.elements:
            return True
        hit = False
        for e in self.elements:
            if e in canonical:
                hit = True
                break
        return hit != self.invert_elements


@dataclass(frozen=True)
class ElementalSpec:
    text: str
    arch_name: str
    entries: tuple[SpecEntry, ...]
    diagnostics: tuple[Diagnostic, ...]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == WARNING]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == ERROR]


def describe_blocks(arch: Architecture) -> str:
    """``BASE, IN00..IN11, M00, OUT00..OUT11``: the valid names, runs of a family shortened."""
    parts: list[str] = []
    run: list[str] = []

    def flush():
        if len(run) > 2:
            parts.append(f"{run[0]}..{run[-1]}")
        else:
            parts.extend(run)
        run.clear()

    for b in arch.blocks:
        if run and (arch.group_of(b) != arch.group_of(run[-1]) or arch.group_of(b) == b):
            flush()
        run.append(b)
    flush()
    return ", ".join(parts)


_BLOCK_ALIASES = {"MID": "M00", "M": "M00", "M0": "M00", "MIDDLE": "M00"}


def _suggest(word: str, arch: Architecture) -> str | None:
    up = word.upper()
    if up in _BLOCK_ALIASES and _BLOCK_ALIASES[up] in arch.blocks:
        return _BLOCK_ALIASES[up]
    m = re.fullmatch(r"([A-Z]+)0*(\d+)", up)
    if m:
        cand = f"{m.group(1)}{int(m.group(2)):02d}"
        if cand in arch.blocks:
            return cand
    close = difflib.get_close_matches(up, arch.blocks, n=1, cutoff=0.5)
    return close[0] if close else None


class _Pool:
    """Canonical names of a key set, joined for fast "does any key contain X" tests."""

    def __init__(self, arch: Architecture, keys: tuple[str, ...]):
        self.items = [(arch.block_of(k), canonical_key(k, arch)) for k in keys]
        self.items = [(b, c) for b, c in self.items if b is not None]
        self.joined = "\n".join(c for _, c in self.items)


_POOLS: dict[tuple, _Pool] = {}
_PARSED: dict[tuple, ElementalSpec] = {}
_CACHE_LIMIT = 256


def _pool(arch: Architecture, keys: tuple[str, ...] | None) -> _Pool:
    cache_key = (arch.name, keys)
    pool = _POOLS.get(cache_key)
    if pool is None:
        if len(_POOLS) > _CACHE_LIMIT:
            _POOLS.clear()
        pool = _POOLS[cache_key] = _Pool(arch, tuple(arch.default_keys()) if keys is None else keys)
    return pool


def _words(text: str, col0: int):
    """(word, 1-based column) for each non-empty word of ``text`` starting at 0-based column ``col0``."""
    return [(m.group(0), col0 + m.start() + 1) for m in re.finditer(r"\S+", text)]


def _parse(text: str, arch: Architecture, keys: tuple[str, ...] | None) -> ElementalSpec:
    diags: list[Diagnostic] = []
    entries: list[SpecEntry] = []
    by_upper = {b.upper(): b for b in arch.blocks}
    index = {b: i for i, b in enumerate(arch.blocks)}
    valid = describe_blocks(arch)

    def err(line, col, msg, entry, hint=""):
        diags.append(Diagnostic(line, col, msg, ERROR, entry, hint))

    def unknown(line, col, word, entry):
        s = _suggest(word, arch)
        hint = (f"did you mean {s}? " if s else "") + f"valid: {valid}"
        err(line, col, f"unknown block '{word}'", entry, hint)

    for line_no, raw in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), start=1):
        line = raw.split("#", 1)[0]
        for seg in re.finditer(r"[^,]+", line):
            seg_text = seg.group(0)
            if not seg_text.strip():
                continue
            lead = len(seg_text) - len(seg_text.lstrip())
            start = seg.start() + lead  # 0-based column of the entry's first character
            source = seg_text.strip()
            fields = seg_text[lead:].split(":")
            if len(fields) != 3:
                err(line_no, start + 1, f"expected 'blocks:elements:ratio' (3 fields separated by ':'), "
                                        f"found {len(fields)} field{'s' if len(fields) != 1 else ''}", source)
                continue
            offs = [start, start + len(fields[0]) + 1, start + len(fields[0]) + len(fields[1]) + 2]
            n_err = len([d for d in diags if d.severity == ERROR])

            # Blocks.
            bwords = _words(fields[0], offs[0])
            invert_blocks = False
            if bwords and bwords[0][0].upper() == "NOT":
                invert_blocks = True
                bwords = bwords[1:]
            chosen: set[str] = set()
            for word, col in bwords:
                up = word.upper()
                if up in by_upper:
                    chosen.add(by_upper[up])
                    continue
                if up == "NOT":
                    err(line_no, col, "'NOT' must be the first word of the blocks field", source)
                    continue
                if up.count("-") == 1 and not up.startswith("-") and not up.endswith("-"):
                    a, b = up.split("-")
                    ca, cb = by_upper.get(a), by_upper.get(b)
                    if ca is None:
                        unknown(line_no, col, word.split("-")[0], source)
                    if cb is None:
                        unknown(line_no, col + len(a) + 1, word.split("-")[1], source)
                    if ca is None or cb is None:
                        continue
                    if arch.group_of(ca) != arch.group_of(cb) or arch.group_of(ca) == ca:
                        err(line_no, col, f"range '{word}' crosses block families "
                                          f"({arch.group_of(ca)} and {arch.group_of(cb)})", source,
                            "a range stays within one family, e.g. IN02-IN05; list other blocks separately")
                        continue
                    lo, hi = sorted((index[ca], index[cb]))
                    chosen.update(arch.blocks[lo:hi + 1])
                    continue
                unknown(line_no, col, word, source)
            if not bwords and not invert_blocks:
                chosen = set(arch.blocks)

            # Elements.
            ewords = _words(fields[1], offs[1])
            invert_elements = False
            if ewords and ewords[0][0] == "NOT":
                invert_elements = True
                ewords = ewords[1:]
            elements = tuple(dict.fromkeys(w for w, _ in ewords))

            # Ratio.
            rtext = fields[2].strip()
            rcol = offs[2] + (len(fields[2]) - len(fields[2].lstrip())) + 1
            ratio = math.nan
            if not rtext:
                err(line_no, rcol, "missing ratio", source)
            else:
                try:
                    ratio = float(rtext)
                except ValueError:
                    ratio = math.nan
                if not math.isfinite(ratio):
                    err(line_no, rcol, f"ratio '{rtext}' is not a finite number", source)
            if len([d for d in diags if d.severity == ERROR]) > n_err:
                continue

            entry = SpecEntry(frozenset(chosen), elements, invert_blocks, invert_elements, ratio, line_no,
                              start + 1, source)
            entries.append(entry)

            # Warnings need the key set: elements that match nothing, entries that select nothing.
            pool = _pool(arch, keys)
            for word, col in ewords:
                if word != "NOT" and word not in pool.joined:
                    diags.append(Diagnostic(line_no, col, f"element '{word}' matches no key of {arch.label}",
                                            WARNING, source))
            if not any(entry.selects(b, c) for b, c in pool.items):
                diags.append(Diagnostic(line_no, start + 1, "entry selects no key", WARNING, source))

    return ElementalSpec(text, arch.name, tuple(entries), tuple(diags))


def _spec(text, arch, keys) -> ElementalSpec:
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise MergeSpecError([Diagnostic(1, 1, f"spec must be text, not {type(text).__name__}", ERROR)])
    try:
        a = get_architecture(arch)
    except ValueError as e:
        raise MergeSpecError([Diagnostic(1, 1, str(e), ERROR)]) from None
    key_tuple = None if keys is None else tuple(keys)
    cache_key = (text, a.name, key_tuple)
    spec = _PARSED.get(cache_key)
    if spec is None:
        if len(_PARSED) > _CACHE_LIMIT:
            _PARSED.clear()
        spec = _PARSED[cache_key] = _parse(text, a, key_tuple)
    return spec


def parse_spec(text: str, arch: Architecture | str, keys: Iterable[str] | None = None) -> ElementalSpec:
    """Parses ``text`` for ``arch``; raises MergeSpecError when there is any error.

    Warnings (elements matching none of ``keys``, or of the built-in key list when ``keys`` is None) are
    kept in ``.diagnostics``. Results are cached by (text, arch, keys).
    """
    spec = _spec(text, arch, keys)
    if spec.errors:
        raise MergeSpecError(spec.diagnostics)
    return spec


def validate_spec(text: str, arch: Architecture | str, keys: Iterable[str] | None = None) -> list[Diagnostic]:
    """Every problem in ``text`` (errors and warnings), in order; never raises."""
    try:
        return list(_spec(text, arch, keys).diagnostics)
    except MergeSpecError as e:
        return list(e.diagnostics)
    except Exception as e:  # a bug must not take a UI down with it
        return [Diagnostic(1, 1, f"internal error while checking the spec: {e!r}", ERROR)]

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
  `merge_core.keys`), so one element works for checkpoint and ComfyUI key forms alike. Flux's q/k norms are
  ``.scale`` there (the file name) on every ComfyUI; ``query_norm.weight`` / ``key_norm.weight``, the names
  ComfyUI 0.33 shows, are read as ``.scale`` (`merge_core.flux_names.file_element`).
* entries apply in order; the last entry that selects a key decides its ratio.

Where SuperMerger silently ignores mistakes, we report them (see `merge_core.diagnostics`): a wrong number
of fields, an unknown block (with the nearest valid name), a range across families, a ratio that is not a
finite number are errors; an element that matches no key of the architecture, and an entry that selects no
key at all, are warnings, and so is an element that hits keys only inside their prefix (``ff`` in
``model.diffusion_model.``: `merge_core.text.validation.element_prefix_warning`). Empty words (stray
spaces) are ignored rather than matching every key.
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Iterable

from ..arch.architectures import Architecture, get_architecture
from ..diagnostics import ERROR, WARNING, Diagnostic, MergeSpecError
from ..cache import cached
from ..arch.flux_names import file_element
from ..arch.key_index import key_index
from ..numbers import finite_float


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
class ParsedSpec:
    text: str
    arch_name: str
    entries: tuple[SpecEntry, ...]
    diagnostics: tuple[Diagnostic, ...]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_warning]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]


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


def _words(text: str, col0: int):
    """(word, 1-based column) for each non-empty word of ``text`` starting at 0-based column ``col0``."""
    return [(m.group(0), col0 + m.start() + 1) for m in re.finditer(r"\S+", text)]


class _Entry:
    """One entry being parsed: where it is, and the diagnostics it adds to the spec's list."""

    def __init__(self, arch: Architecture, diags: list[Diagnostic], line: int, start: int, source: str):
        self.arch, self.diags, self.line, self.start, self.source = arch, diags, line, start, source
        self.failed = False

    def err(self, col: int, msg: str, hint: str = "") -> None:
        self.failed = True
        self.diags.append(Diagnostic(self.line, col, msg, ERROR, self.source, hint))

    def unknown(self, col: int, word: str) -> None:
        s = _suggest(word, self.arch)
        hint = (f"did you mean {s}? " if s else "") + f"valid: {describe_blocks(self.arch)}"
        self.err(col, f"unknown block '{word}'", hint)


def _block_range(e: _Entry, word: str, col: int) -> list[str]:
    """The blocks of ``IN02-IN05`` (either order, one family), or [] after reporting what is wrong."""
    arch = e.arch
    by_upper = {b.upper(): b for b in arch.blocks}
    a, b = word.upper().split("-")
    ca, cb = by_upper.get(a), by_upper.get(b)
    if ca is None:
        e.unknown(col, word.split("-")[0])
    if cb is None:
        e.unknown(col + len(a) + 1, word.split("-")[1])
    if ca is None or cb is None:
        return []
    if arch.group_of(ca) != arch.group_of(cb) or arch.group_of(ca) == ca:
        e.err(col, f"range '{word}' crosses block families ({arch.group_of(ca)} and {arch.group_of(cb)})",
              "a range stays within one family, e.g. IN02-IN05; list other blocks separately")
        return []
    lo, hi = sorted((arch.blocks.index(ca), arch.blocks.index(cb)))
    return list(arch.blocks[lo:hi + 1])


def _parse_blocks(e: _Entry, field: str, col0: int) -> tuple[frozenset, bool]:
    """(blocks listed, NOT first) of the blocks field; an empty field is every block."""
    by_upper = {b.upper(): b for b in e.arch.blocks}
    words = _words(field, col0)
    invert = bool(words) and words[0][0].upper() == "NOT"
    if invert:
        words = words[1:]
    if not words and not invert:
        return frozenset(e.arch.blocks), False
    chosen: set[str] = set()
    for word, col in words:
        up = word.upper()
        if up in by_upper:
            chosen.add(by_upper[up])
        elif up == "NOT":
            e.err(col, "'NOT' must be the first word of the blocks field")
        elif up.count("-") == 1 and not up.startswith("-") and not up.endswith("-"):
            chosen.update(_block_range(e, word, col))
        else:
            e.unknown(col, word)
    return frozenset(chosen), invert


def _parse_elements(field: str, col0: int, arch: Architecture) -> tuple[tuple[str, ...], bool, list]:
    """(distinct words as matched, NOT first (upper case), (word as written, column) pairs) of the elements
    field; for Flux, words naming the q/k norms by ComfyUI 0.33's ``.weight`` are matched as ``.scale``."""
    words = _words(field, col0)
    invert = bool(words) and words[0][0] == "NOT"
    if invert:
        words = words[1:]
    matched = (file_element(w) if arch.name == "flux" else w for w, _ in words)
    return tuple(dict.fromkeys(matched)), invert, words


def _parse_ratio(e: _Entry, field: str, col0: int) -> float:
    """The ratio field as a finite float (NaN after reporting a missing or non-finite one)."""
    text = field.strip()
    col = col0 + (len(field) - len(field.lstrip())) + 1
    if not text:
        e.err(col, "missing ratio")
        return math.nan
    ratio = finite_float(text)
    if ratio is None:
        e.err(col, f"ratio '{text}' is not a finite number")
        return math.nan
    return ratio


def _segments(text: str):
    """(line number, 0-based column of the entry, entry text) for each comma/newline-separated entry."""
    for line_no, raw in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), start=1):
        for seg in re.finditer(r"[^,]+", raw.split("#", 1)[0]):
            seg_text = seg.group(0)
            if seg_text.strip():
                lead = len(seg_text) - len(seg_text.lstrip())
                yield line_no, seg.start() + lead, seg_text[lead:]


def _parse_entry(e: _Entry, body: str, keys: tuple[str, ...] | None) -> SpecEntry | None:
    fields = body.split(":")
    if len(fields) != 3:
        e.err(e.start + 1, f"expected 'blocks:elements:ratio' (3 fields separated by ':'), "
                           f"found {len(fields)} field{'s' if len(fields) != 1 else ''}")
        return None
    offs = [e.start, e.start + len(fields[0]) + 1, e.start + len(fields[0]) + len(fields[1]) + 2]
    blocks, invert_blocks = _parse_blocks(e, fields[0], offs[0])
    elements, invert_elements, ewords = _parse_elements(fields[1], offs[1], e.arch)
    ratio = _parse_ratio(e, fields[2], offs[2])
    if e.failed:
        return None
    entry = SpecEntry(blocks, elements, invert_blocks, invert_elements, ratio, e.line, e.start + 1, e.source)
    # Warnings need the key set: elements that match nothing or only through a prefix, entries that select nothing.
    from .validation import element_prefix_warning  # validation imports block_weights, which imports this module
    index = key_index(e.arch, keys)
    for word, col in ewords:
        matched = file_element(word) if e.arch.name == "flux" else word
        if word != "NOT" and not index.matches_any(matched):
            e.diags.append(Diagnostic(e.line, col, f"element '{word}' matches no key of {e.arch.label}",
                                      WARNING, e.source))
        elif word != "NOT" and (through := element_prefix_warning(entry, matched, e.arch, keys)) is not None:
            e.diags.append(Diagnostic(e.line, col, through[0], WARNING, e.source, through[1]))
    if not index.select(entry):
        e.diags.append(Diagnostic(e.line, e.start + 1, "entry selects no key", WARNING, e.source))
    return entry


@cached(maxsize=256)
def _parse(text: str, arch: Architecture, keys: tuple[str, ...] | None) -> ParsedSpec:
    diags: list[Diagnostic] = []
    entries = []
    for line_no, start, body in _segments(text):
        entry = _parse_entry(_Entry(arch, diags, line_no, start, body.strip()), body, keys)
        if entry is not None:
            entries.append(entry)
    return ParsedSpec(text, arch.name, tuple(entries), tuple(diags))


def _spec(text, arch, keys) -> ParsedSpec:
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise MergeSpecError([Diagnostic(1, 1, f"spec must be text, not {type(text).__name__}", ERROR)])
    try:
        a = get_architecture(arch)
    except ValueError as e:
        raise MergeSpecError([Diagnostic(1, 1, str(e), ERROR)]) from None
    return _parse(text, a, None if keys is None else tuple(keys))


def parse_spec(text: str, arch: Architecture | str, keys: Iterable[str] | None = None) -> ParsedSpec:
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

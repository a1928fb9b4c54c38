"""Per-key ratios: block weights (or alpha), then the elemental spec, plus the "print change" list.

`resolve_ratios` is the one place that decides what ratio every key gets. It is meant to be called on every
queue of a workflow, so the expensive parts are cached: the key -> (block, canonical name) map per key set,
the parsed spec (in `merge_core.spec`), and which keys each entry selects. A cached SDXL resolution takes a
few milliseconds.

Run as ``python -m merge_core.ratios`` for a preview of the ratios of every key (see `main`).
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
from dataclasses import dataclass, field
from typing import Iterable

from .architectures import Architecture, get_architecture
from .diagnostics import WARNING, Diagnostic, MergeSpecError
from .keys import canonical_key
from .spec import ElementalSpec, SpecEntry, parse_spec


@dataclass(frozen=True)
class Change:
    key: str
    block: str
    before: float
    after: float
    entry: SpecEntry


@dataclass
class Resolution:
    ratios: dict[str, float]
    blocks: dict[str, str]
    changes: list[Change]
    warnings: list[Diagnostic]
    arch_name: str = ""


class _KeyMap:
    """The keys of one key set that belong to a block, with their canonical names; and entry selections."""

    def __init__(self, arch: Architecture, keys: tuple[str, ...]):
        self.keys: list[str] = []
        self.blocks: list[str] = []
        self.canon: list[str] = []
        for k in keys:
            b = arch.block_of(k)
            if b is not None:
                self.keys.append(k)
                self.blocks.append(b)
                self.canon.append(canonical_key(k, arch))
        self.block_of = dict(zip(self.keys, self.blocks))
        self.selected: dict[tuple, tuple[int, ...]] = {}

    def select(self, e: SpecEntry) -> tuple[int, ...]:
        sig = (e.blocks, e.elements, e.invert_blocks, e.invert_elements)
        hit = self.selected.get(sig)
        if hit is None:
            hit = self.selected[sig] = tuple(i for i, (b, c) in enumerate(zip(self.blocks, self.canon))
                                             if e.selects(b, c))
        return hit


_KEYMAPS: dict[tuple, _KeyMap] = {}


def _keymap(arch: Architecture, keys: tuple[str, ...]) -> _KeyMap:
    ck = (arch.name, keys)
    km = _KEYMAPS.get(ck)
    if km is None:
        if len(_KEYMAPS) > 64:
            _KEYMAPS.clear()
        km = _KEYMAPS[ck] = _KeyMap(arch, keys)
    return km


def resolve_ratios(keys: Iterable[str], arch, alpha: float, block_weights: dict[str, float] | None = None,
                   spec: ElementalSpec | None = None) -> Resolution:
    """The ratio of every key of ``keys`` that belongs to a block (keys kept in the form given).

    A key starts at its block's weight when ``block_weights`` is given (alpha for a block missing from it),
    else at ``alpha``; then every spec entry, in order, sets the ratio of the keys it selects. Each such
    setting is a `Change` (``before`` may equal ``after`` when the entry re-states a ratio). Warnings are the
    spec's plus, for each entry selecting none of these keys, one "selects no key" warning.
    """
    a = get_architecture(arch)
    km = _keymap(a, keys if isinstance(keys, tuple) else tuple(keys))
    alpha = float(alpha)
    if block_weights:
        values = [float(block_weights.get(b, alpha)) for b in km.blocks]
    else:
        values = [alpha] * len(km.keys)
    changes: list[Change] = []
    warnings: list[Diagnostic] = []
    if spec is not None:
        if get_architecture(spec.arch_name).blocks != a.blocks:
            raise ValueError(f"spec was parsed for {spec.arch_name}, not {a.name}")
        warnings.extend(d for d in spec.diagnostics if d.severity == WARNING)
        seen = {(d.line, d.column, d.message) for d in warnings}
        for e in spec.entries:
            hit = km.select(e)
            if not hit:
                d = Diagnostic(e.line, e.column, "entry selects no key", WARNING, e.source)
                if (d.line, d.column, d.message) not in seen:
                    warnings.append(d)
                    seen.add((d.line, d.column, d.message))
                continue
            r = e.ratio
            for i in hit:
                changes.append(Change(km.keys[i], km.blocks[i], values[i], r, e))
                values[i] = r
    return Resolution(dict(zip(km.keys, values)), dict(km.block_of), changes, warnings, a.name)


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def format_change_report(resolution: Resolution, title: str = "") -> str:
    """"print change": each change (block, key, before -> after, entry and line), then a per-block summary."""
    out: list[str] = []
    if title:
        out.append(title)
    if not resolution.changes:
        out.append("no key changed by the spec")
    for c in resolution.changes:
        out.append(f"{c.block:<6} {c.key}  {_fmt(c.before)} -> {_fmt(c.after)}  "
                   f"[line {c.entry.line}: {c.entry.source}]")
    for w in resolution.warnings:
        out.append(w.format())
    if resolution.changes:
        try:
            order = {b: i for i, b in enumerate(get_architecture(resolution.arch_name).blocks)}
        except ValueError:
            order = {}
        per_block: dict[str, set[str]] = {}
        for c in resolution.changes:
            per_block.setdefault(c.block, set()).add(c.key)
        out.append("")
        out.append(f"{'block':<6} {'keys changed':>12}  ratio range")
        for block in sorted(per_block, key=lambda b: (order.get(b, len(order)), b)):
            finals = [resolution.ratios[k] for k in per_block[block]]
            lo, hi = min(finals), max(finals)
            rng = _fmt(lo) if lo == hi else f"{_fmt(lo)}..{_fmt(hi)}"
            out.append(f"{block:<6} {len(per_block[block]):>12}  {rng}")
    return "\n".join(out)


def _read_lines(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read()


def main(argv=None) -> int:
    """Preview CLI: every key with its block and ratio, or the diagnostics and exit code 2."""
    p = argparse.ArgumentParser(prog="python -m merge_core.ratios",
                                description="Preview the per-key ratios of an elemental merge.")
    p.add_argument("--arch", required=True, help="sd1, sd2, sdxl, flux or sd3")
    p.add_argument("--alpha", type=float, default=0.5, help="model B's share (default 0.5)")
    p.add_argument("--block-weights", default=None, help="comma-separated weights or a preset name")
    p.add_argument("--presets-file", default=None, help="user presets (tsv: name<TAB>values)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--spec", default=None, help="elemental spec text")
    g.add_argument("--spec-file", default=None, help="file holding the elemental spec")
    p.add_argument("--keys-file", default=None, help="one key per line (.gz allowed); default: built-in list")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--changes", action="store_true", help="print the change report (table format)")
    args = p.parse_args(argv)

    try:
        arch = get_architecture(args.arch)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.keys_file:
        keys = [k.strip() for k in _read_lines(args.keys_file).splitlines() if k.strip()]
    else:
        keys = arch.default_keys()
    try:
        user = None
        if args.presets_file:
            from .block_weights import load_user_presets
            user = load_user_presets(args.presets_file)
        weights = None
        if args.block_weights:
            from .block_weights import parse_block_weights
            weights = parse_block_weights(args.block_weights, arch, alpha=args.alpha, user_presets=user)
        text = args.spec if args.spec is not None else (_read_lines(args.spec_file) if args.spec_file else "")
        spec = parse_spec(text, arch, keys) if text.strip() else None
    except MergeSpecError as e:
        for d in e.diagnostics:
            print(d.format(), file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res = resolve_ratios(keys, arch, args.alpha, weights, spec)
    for w in res.warnings:
        print(w.format(), file=sys.stderr)
    if args.format == "json":
        json.dump(res.ratios, sys.stdout, indent=0)
        sys.stdout.write("\n")
        return 0
    width = max((len(k) for k in res.ratios), default=3)
    print(f"{'key':<{width}}  {'block':<6} ratio")
    for k, r in res.ratios.items():
        print(f"{k:<{width}}  {res.blocks[k]:<6} {_fmt(r)}")
    if args.changes:
        print()
        print(format_change_report(res, "changes:"))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        sys.exit(0)

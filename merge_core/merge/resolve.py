"""Per-key ratios: block weights (or alpha), then the elemental spec; every setting kept as a `Change`.

`resolve_ratios` is the one place that decides what ratio every key gets. It is meant to be called on every
queue of a workflow, so the expensive parts are cached (see `merge_core.cache`): the key index per key set
(`merge_core.key_index`, which also remembers what each entry selects) and the parsed spec. A cached SDXL
resolution takes a few milliseconds. The change list is printed by `merge_core.report`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ..arch.architectures import get_architecture
from ..diagnostics import WARNING, Diagnostic
from ..arch.key_index import key_index
from ..text.spec import ParsedSpec, SpecEntry


@dataclass(frozen=True)
class Change:
    key: str
    block: str
    before: float
    after: float
    entry: SpecEntry


@dataclass
class Resolution:
    ratios: dict[str, float]   # key -> ratio, for every key in a block
    blocks: dict[str, str]
    changes: list[Change]
    warnings: list[Diagnostic]
    arch_name: str = ""
    base: float = 0.0          # the plain ratio (alpha or beta)

    def ratio(self, key: str) -> float:
        """The key's ratio; a key outside every block merges at the plain ratio, as SuperMerger does."""
        return self.ratios.get(key, self.base)


def resolve_ratios(keys: Iterable[str], arch, alpha: float, block_weights: dict[str, float] | None = None,
                   spec: ParsedSpec | None = None) -> Resolution:
    """The ratio of every key of ``keys`` that belongs to a block (keys kept in the form given).

    A key starts at its block's weight when ``block_weights`` is given (alpha for a block missing from it),
    else at ``alpha``; then every spec entry, in order, sets the ratio of the keys it selects. Each such
    setting is a `Change` (``before`` may equal ``after`` when the entry re-states a ratio). Warnings are the
    spec's plus, for each entry selecting none of these keys, one "selects no key" warning.
    """
    a = get_architecture(arch)
    km = key_index(a, keys if isinstance(keys, tuple) else tuple(keys))
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
        warnings.extend(spec.warnings)
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
    return Resolution(dict(zip(km.keys, values)), dict(km.block_of), changes, warnings, a.name, alpha)

"""SuperMerger's "print change" as text: every key a spec entry set (before -> after, which entry, which line),
then one summary line per block. The merge nodes log it, the preview CLI prints it.
"""
from __future__ import annotations

from ..arch.architectures import get_architecture
from .resolve import Resolution


def fmt_ratio(x: float) -> str:
    """A ratio as the report and the CLI table print it (6 significant digits)."""
    return f"{x:.6g}"


def _block_summary(resolution: Resolution) -> list[str]:
    """Per block: how many keys the spec changed and the range of their final ratios, in block order."""
    try:
        order = {b: i for i, b in enumerate(get_architecture(resolution.arch_name).blocks)}
    except ValueError:
        order = {}
    per_block: dict[str, set[str]] = {}
    for c in resolution.changes:
        per_block.setdefault(c.block, set()).add(c.key)
    out = ["", f"{'block':<6} {'keys changed':>12}  ratio range"]
    for block in sorted(per_block, key=lambda b: (order.get(b, len(order)), b)):
        finals = [resolution.ratios[k] for k in per_block[block]]
        lo, hi = min(finals), max(finals)
        rng = fmt_ratio(lo) if lo == hi else f"{fmt_ratio(lo)}..{fmt_ratio(hi)}"
        out.append(f"{block:<6} {len(per_block[block]):>12}  {rng}")
    return out


def format_change_report(resolution: Resolution, title: str = "") -> str:
    """"print change": each change (block, key, before -> after, entry and line), then a per-block summary."""
    out: list[str] = [title] if title else []
    if not resolution.changes:
        out.append("no key changed by the spec")
    for c in resolution.changes:
        out.append(f"{c.block:<6} {c.key}  {fmt_ratio(c.before)} -> {fmt_ratio(c.after)}  "
                   f"[line {c.entry.line}: {c.entry.source}]")
    out.extend(w.format() for w in resolution.warnings)
    if resolution.changes:
        out.extend(_block_summary(resolution))
    return "\n".join(out)

"""What the pack's HTTP routes answer, as plain functions of plain data (no aiohttp, no ComfyUI).

The web extension asks the server, as the user types, whether a spec is valid and which keys each entry hits.
Keeping the answers here, apart from the aiohttp glue in `nodes/http_routes/`, lets them be tested without a
server or ComfyUI, and keeps every rule about what a well-formed request is in one place: a request that breaks one raises
`RequestError` with a 4xx status and a message the editor can show, never an exception that would become a
500. Everything else (what a spec means, which architecture a text fits, which block a key is in, element
names, presets) comes from merge_core.
"""
from __future__ import annotations

import json
import math

from .. import (ARCHITECTURES, AUTO, closest_architecture, elements_by_block,
                          get_architecture, list_presets, parse_block_weights, parse_spec, resolve_ratios,
                          validate_block_weights, validate_spec)

MAX_BODY_BYTES = 256 * 1024  # a request body larger than this is refused (413) before it is parsed
MAX_TEXT_CHARS = 64 * 1024   # a spec or weight string longer than this is refused (413)
MAX_LINES = 2000
MAX_NAME_CHARS = 512         # checkpoint names, architecture names


class RequestError(Exception):
    """A request the routes refuse: `status` is the HTTP status (4xx), the message says what to fix."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ---- request parsing ---------------------------------------------------------------------------------------

def parse_body(raw: bytes) -> dict:
    """The JSON object of a request body; RequestError for an oversized, non-UTF-8, non-JSON or non-object body."""
    if len(raw) > MAX_BODY_BYTES:
        raise RequestError(413, f"request body of {len(raw)} bytes is over the limit of {MAX_BODY_BYTES}")
    if not raw.strip():
        raise RequestError(400, "empty request body: send a JSON object")
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError(400, "request body is not UTF-8") from None
    except (ValueError, RecursionError) as e:
        raise RequestError(400, f"request body is not valid JSON: {str(e)[:200]}") from None
    if not isinstance(body, dict):
        raise RequestError(400, f"request body must be a JSON object, not {type(body).__name__}")
    return body


def _check_fields(body: dict, allowed: set[str], required: set[str] = frozenset()) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(400, f"unknown field(s) {', '.join(map(repr, unknown))}; "
                                f"accepted: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(body))
    if missing:
        raise RequestError(400, f"missing field(s) {', '.join(map(repr, missing))}")


def _text(body: dict, name: str, default: str | None = "") -> str | None:
    value = body.get(name, default)
    if value is None and default is None:
        return None
    if not isinstance(value, str):
        raise RequestError(400, f"'{name}' must be a string, not {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise RequestError(413, f"'{name}' has {len(value)} characters, over the limit of {MAX_TEXT_CHARS}")
    if value.count("\n") >= MAX_LINES:
        raise RequestError(413, f"'{name}' has more than {MAX_LINES} lines")
    return value


def _number(body: dict, name: str, default: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(400, f"'{name}' must be a number, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise RequestError(400, f"'{name}' must be finite")
    return value


def _flag(body: dict, name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise RequestError(400, f"'{name}' must be true or false, not {type(value).__name__}")
    return value


def architecture(name, allow_auto: bool = False):
    """The merge_core Architecture called `name` (None for "auto" when allowed); 400 for anything else."""
    if not isinstance(name, str):
        raise RequestError(400, f"'arch' must be a string, not {type(name).__name__}")
    if len(name) > MAX_NAME_CHARS:
        raise RequestError(400, "'arch' is too long")
    if allow_auto and name.strip().lower() == AUTO:
        return None
    try:
        return get_architecture(name)
    except ValueError:
        valid = ", ".join(([AUTO] if allow_auto else []) + list(ARCHITECTURES))
        raise RequestError(400, f"unknown architecture {name[:60]!r}; valid: {valid}") from None


# ---- answers -----------------------------------------------------------------------------------------------

def diagnostic_json(d) -> dict:
    return {"line": d.line, "column": d.column, "message": d.message, "severity": d.severity,
            "entry": d.entry, "hint": d.hint, "text": d.format()}


def list_architectures() -> dict:
    """GET /elemental/architectures: every architecture with its blocks and preset names."""
    return {"architectures": [
        {"name": a.name, "label": a.label, "blocks": list(a.blocks), "has_base": a.has_base,
         "presets": list(list_presets(a))}
        for a in ARCHITECTURES.values()]}


def architecture_info(name) -> dict:
    """GET /elemental/architectures/{arch}: blocks, elements per block and presets of one architecture."""
    try:
        a = architecture(name)
    except RequestError as e:  # a path that names nothing is "not found", not a malformed request
        raise RequestError(404, e.message) from None
    per_block = elements_by_block(a)
    return {"name": a.name, "label": a.label, "blocks": list(a.blocks), "has_base": a.has_base,
            "elements": per_block, "element_names": sorted({e for v in per_block.values() for e in v}),
            "presets": {k: list(v) for k, v in list_presets(a).items()}}


def elements(query: dict) -> dict:
    """GET /elemental/elements?arch=sd1[&block=IN04]."""
    a = architecture(query.get("arch", ""))
    per_block = elements_by_block(a)
    block = query.get("block")
    if block is not None:
        match = {b.upper(): b for b in a.blocks}.get(str(block).strip().upper())
        if match is None:
            raise RequestError(400, f"unknown block {str(block)[:40]!r} for {a.label}; valid: {', '.join(a.blocks)}")
        per_block = {match: per_block[match]}
    return {"arch": a.name, "elements": per_block,
            "element_names": sorted({e for v in per_block.values() for e in v})}


def presets(query: dict) -> dict:
    """GET /elemental/presets?arch=sd1: preset name -> values (BASE first)."""
    a = architecture(query.get("arch", ""))
    return {"arch": a.name, "blocks": list(a.blocks), "presets": {k: list(v) for k, v in list_presets(a).items()}}


def _weights(text: str, a, alpha: float | None) -> tuple[list, dict | None]:
    """(diagnostics, block -> weight or None when invalid) of a preset name or weight string."""
    diags = validate_block_weights(text, a, alpha=alpha)
    if any(d.is_error for d in diags):
        return diags, None
    return diags, parse_block_weights(text, a, alpha=alpha)


def _report(a, diags: list) -> dict:
    """The fields every checking answer has: the architecture checked against and its diagnostics."""
    errors = sum(1 for d in diags if d.is_error)
    return {"arch": a.name, "label": a.label, "ok": errors == 0, "errors": errors,
            "diagnostics": [diagnostic_json(d) for d in diags]}


def validate(body: dict) -> dict:
    """POST /elemental/validate {text, arch, kind: "spec"|"block_weights", alpha?} -> diagnostics.

    ``arch`` may be "auto": the answer names the architecture the text was checked against.
    """
    _check_fields(body, {"text", "arch", "kind", "alpha"}, {"text"})
    text = _text(body, "text")
    kind = body.get("kind", "spec")
    if kind not in ("spec", "block_weights"):
        raise RequestError(400, f"'kind' must be 'spec' or 'block_weights', not {str(kind)[:40]!r}")
    a = architecture(body.get("arch", AUTO), allow_auto=True)
    candidates = None if a is None else [a]
    if kind == "spec":
        fit = closest_architecture(text, validate_spec, candidates)
        a, diags = fit.architecture, fit.diagnostics
    else:
        alpha = _number(body, "alpha", 0.5) if "alpha" in body else None
        fit = closest_architecture(text, lambda t, arch: validate_block_weights(t, arch, alpha=alpha), candidates)
        a = fit.architecture
        diags, weights = _weights(text, a, alpha)
    out = _report(a, diags)
    out.update(kind=kind, warnings=len(diags) - out["errors"])
    if kind == "block_weights":
        out["weights"] = weights
    return out


def _entry_filter(body: dict) -> int | None:
    value = body.get("entry")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise RequestError(400, "'entry' must be a non-negative integer (0-based entry index)")
    return value


def _entries_json(spec, res, include_keys: bool, entry_filter: int | None) -> tuple[list, dict]:
    """Per entry: where it is, how many keys it selects per block (and which, when asked); and key -> the
    index of the entry that decides it (the last one that selects it)."""
    entries = spec.entries if spec else ()
    decided: dict[str, int] = {}
    per_entry: list[list[str]] = [[] for _ in entries]
    entry_index = {id(e): i for i, e in enumerate(entries)}
    for c in res.changes:
        i = entry_index[id(c.entry)]
        per_entry[i].append(c.key)
        decided[c.key] = i
    out = []
    for i, e in enumerate(entries):
        by_block: dict[str, list[str]] = {}
        for k in per_entry[i]:
            by_block.setdefault(res.blocks[k], []).append(k)
        item = {"index": i, "line": e.line, "column": e.column, "source": e.source, "ratio": e.ratio,
                "count": len(per_entry[i]), "effective": sum(1 for k in per_entry[i] if decided[k] == i),
                "blocks": {b: len(v) for b, v in by_block.items()}}
        if include_keys and (entry_filter is None or entry_filter == i):
            item["keys"] = {b: [{"key": k, "ratio": res.ratios[k]} for k in v] for b, v in by_block.items()}
        out.append(item)
    if entry_filter is not None and entry_filter >= len(out):
        raise RequestError(400, f"'entry' {entry_filter} is out of range: the spec has {len(out)} entries")
    return out, decided


def _block_summary(a, res, decided: dict) -> dict:
    summary: dict[str, dict] = {}
    for k, r in res.ratios.items():
        s = summary.setdefault(res.blocks[k], {"keys": 0, "min": r, "max": r, "changed": 0})
        s["keys"] += 1
        s["min"], s["max"] = min(s["min"], r), max(s["max"], r)
        s["changed"] += k in decided
    return {b: summary[b] for b in a.blocks if b in summary}


def preview(body: dict) -> dict:
    """POST /elemental/preview: per entry, how many keys it selects (by block), and every key's final ratio.

    Request: ``{spec, arch, alpha=0.5, block_weights=None, include_keys=false, entry=None}``; ``entry``
    limits the key lists to one entry (0-based), so the editor can show one entry's keys on demand.
    A key's ratio is the final one, after block weights and every entry (the last entry that selects it wins),
    so an entry's key may show another entry's ratio; ``effective`` counts the keys it decides.
    """
    _check_fields(body, {"spec", "arch", "alpha", "block_weights", "include_keys", "entry"}, {"spec"})
    text = _text(body, "spec")
    alpha = _number(body, "alpha", 0.5)
    include_keys = _flag(body, "include_keys")
    entry_filter = _entry_filter(body)
    a = architecture(body.get("arch", AUTO), allow_auto=True)
    if a is None:
        a = closest_architecture(text, validate_spec).architecture
    weights_text = _text(body, "block_weights", None)
    weights, diags = None, []
    if weights_text is not None and weights_text.strip():
        diags, weights = _weights(weights_text, a, alpha)
    diags = diags + validate_spec(text, a)
    out = {**_report(a, diags), "alpha": alpha, "total_keys": 0, "block_weights": weights,
           "entries": [], "blocks": {}}
    if not out["ok"]:
        return out
    spec = parse_spec(text, a) if text.strip() else None
    res = resolve_ratios(tuple(a.default_keys()), a, alpha, block_weights=weights, spec=spec)
    out["total_keys"] = len(res.ratios)
    out["entries"], decided = _entries_json(spec, res, include_keys, entry_filter)
    out["blocks"] = _block_summary(a, res, decided)
    return out

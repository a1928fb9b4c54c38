"""What the pack's HTTP routes answer, as plain functions of plain data (no aiohttp, no ComfyUI).

The web extension asks the server, as the user types, whether a spec is valid and which keys each entry hits.
Keeping the answers here, apart from the aiohttp glue in `routes.py`, lets them be tested without a server
and keeps every rule about what a well-formed request is in one place: a request that breaks one raises
`RequestError` with a 4xx status and a message the editor can show, never an exception that would become a
500. Everything else (what a spec means, which block a key is in, presets) comes from merge_core.
"""
from __future__ import annotations

import json
import math
import re
import struct

try:  # loaded by ComfyUI as custom_nodes/<pack>/nodes/route_logic.py
    from ..merge_core import (ARCHITECTURES, Diagnostic, MergeSpecError, canonical_key, detect_architecture,
                              get_architecture, list_presets, parse_block_weights, parse_spec, resolve_ratios,
                              validate_spec)
except ImportError:  # pragma: no cover - the pack is always imported as a package
    from merge_core import (ARCHITECTURES, Diagnostic, MergeSpecError, canonical_key,  # type: ignore
                            detect_architecture, get_architecture, list_presets, parse_block_weights,
                            parse_spec, resolve_ratios, validate_spec)

AUTO = "auto"
MAX_BODY_BYTES = 256 * 1024  # a request body larger than this is refused (413) before it is parsed
MAX_TEXT_CHARS = 64 * 1024   # a spec or weight string longer than this is refused (413)
MAX_LINES = 2000
MAX_NAME_CHARS = 512         # checkpoint names, architecture names
MAX_HEADER_BYTES = 64 * 1024 * 1024  # a safetensors header claiming more than this is not trusted

_PARAM_SUFFIXES = ("weight", "bias", "scale")  # scale: the RMSNorm parameter of Flux/SD3
# Path segments that name a container, not a part: never offered as an element on their own.
_ROOTS = {"model", "diffusion_model", "cond_stage_model", "transformer", "text_model", "conditioner", "embedders",
          "text_encoders", "clip_l", "clip_g", "t5xxl", "encoder"}
_CONTAINER = re.compile(r"(?:blocks|block|layers|layer|resblocks)$")


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


def element_of(canon: str) -> str | None:
    """The element a user would type to pick this parameter: ``attn2.to_k``, ``ff.net``, ``norm1``, ``proj_in``.

    The path after the innermost numbered container (``transformer_blocks.0``, ``layers.5``, ``input_blocks.4``),
    without leading module indices, cut before the next index, without ``.weight``/``.bias``. A parameter
    outside any container gives its last two named segments (``embeddings.token_embedding``, ``time_embed``).
    """
    segs = canon.split(".")
    if len(segs) > 1 and segs[-1] in _PARAM_SUFFIXES:
        segs = segs[:-1]
    start = None
    for i in range(1, len(segs) - 1):
        if segs[i].isdigit() and _CONTAINER.search(segs[i - 1]) and not all(s.isdigit() for s in segs[i + 1:]):
            start = i + 1
    if start is not None:
        tail = segs[start:]
        while tail and tail[0].isdigit():
            tail = tail[1:]
        out = []
        for s in tail:
            if s.isdigit():
                break
            out.append(s)
        return ".".join(out) or None
    named = [s for s in segs if not s.isdigit() and s not in _ROOTS]
    return ".".join(named[-2:]) or None


_ELEMENT_CACHE: dict[str, dict[str, list[str]]] = {}


def elements_by_block(arch) -> dict[str, list[str]]:
    """block -> the distinct elements of its keys (built-in key list), in block order, each sorted."""
    a = get_architecture(arch)
    cached = _ELEMENT_CACHE.get(a.name)
    if cached is None:
        found: dict[str, set[str]] = {b: set() for b in a.blocks}
        for key in a.default_keys():
            block = a.block_of(key)
            if block is None:
                continue
            element = element_of(canonical_key(key, a))
            if element:
                found[block].add(element)
        cached = _ELEMENT_CACHE[a.name] = {b: sorted(found[b]) for b in a.blocks}
    return {b: list(v) for b, v in cached.items()}


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


def _pick_auto(check) -> tuple:
    """(architecture, diagnostics) for "auto": the first architecture without errors, else the one with fewest."""
    best = None
    for a in ARCHITECTURES.values():
        diags = check(a)
        n = sum(1 for d in diags if d.severity == "error")
        if n == 0:
            return a, diags
        if best is None or n < best[0]:
            best = (n, a, diags)
    return best[1], best[2]


def _weights_diagnostics(text: str, a, alpha: float | None) -> tuple[list, dict | None]:
    try:
        return [], parse_block_weights(text, a, alpha=alpha)
    except MergeSpecError as e:
        return list(e.diagnostics), None
    except ValueError as e:  # a defensive net: a lookup failing with a plain ValueError
        return [Diagnostic(1, 1, str(e), "error")], None


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
    weights = None
    if kind == "spec":
        check = lambda arch: validate_spec(text, arch)  # noqa: E731
        a, diags = _pick_auto(check) if a is None else (a, check(a))
    else:
        alpha = _number(body, "alpha", 0.5) if "alpha" in body else None
        check = lambda arch: _weights_diagnostics(text, arch, alpha)[0]  # noqa: E731
        if a is None:
            a, _ = _pick_auto(check)
        diags, weights = _weights_diagnostics(text, a, alpha)
    errors = sum(1 for d in diags if d.severity == "error")
    out = {"arch": a.name, "label": a.label, "kind": kind, "ok": errors == 0, "errors": errors,
           "warnings": len(diags) - errors, "diagnostics": [diagnostic_json(d) for d in diags]}
    if kind == "block_weights":
        out["weights"] = weights
    return out


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
    entry_filter = body.get("entry")
    if entry_filter is not None and (isinstance(entry_filter, bool) or not isinstance(entry_filter, int)
                                     or entry_filter < 0):
        raise RequestError(400, "'entry' must be a non-negative integer (0-based entry index)")
    a = architecture(body.get("arch", AUTO), allow_auto=True)
    if a is None:
        a, _ = _pick_auto(lambda arch: validate_spec(text, arch))
    weights_text = _text(body, "block_weights", None)
    weights = None
    diags = []
    if weights_text is not None and weights_text.strip():
        wdiags, weights = _weights_diagnostics(weights_text, a, alpha)
        diags.extend(wdiags)
    spec_diags = validate_spec(text, a)
    diags.extend(spec_diags)
    keys = tuple(a.default_keys())
    errors = sum(1 for d in diags if d.severity == "error")
    out = {"arch": a.name, "label": a.label, "alpha": alpha, "ok": errors == 0, "errors": errors,
           "diagnostics": [diagnostic_json(d) for d in diags], "total_keys": 0, "block_weights": weights,
           "entries": [], "blocks": {}}
    if errors:
        return out
    spec = parse_spec(text, a) if text.strip() else None
    res = resolve_ratios(keys, a, alpha, block_weights=weights, spec=spec)
    out["total_keys"] = len(res.ratios)
    decided: dict[str, int] = {}
    per_entry: list[list[str]] = [[] for _ in (spec.entries if spec else ())]
    entry_index = {id(e): i for i, e in enumerate(spec.entries)} if spec else {}
    for c in res.changes:
        i = entry_index[id(c.entry)]
        per_entry[i].append(c.key)
        decided[c.key] = i
    for i, e in enumerate(spec.entries if spec else ()):
        hit = per_entry[i]
        by_block: dict[str, list[str]] = {}
        for k in hit:
            by_block.setdefault(res.blocks[k], []).append(k)
        item = {"index": i, "line": e.line, "column": e.column, "source": e.source, "ratio": e.ratio,
                "count": len(hit), "effective": sum(1 for k in hit if decided[k] == i),
                "blocks": {b: len(v) for b, v in by_block.items()}}
        if include_keys and (entry_filter is None or entry_filter == i):
            item["keys"] = {b: [{"key": k, "ratio": res.ratios[k]} for k in v] for b, v in by_block.items()}
        out["entries"].append(item)
    if entry_filter is not None and entry_filter >= len(out["entries"]):
        raise RequestError(400, f"'entry' {entry_filter} is out of range: the spec has {len(out['entries'])} "
                                "entries")
    summary: dict[str, dict] = {}
    for k, r in res.ratios.items():
        s = summary.setdefault(res.blocks[k], {"keys": 0, "min": r, "max": r, "changed": 0})
        s["keys"] += 1
        s["min"], s["max"] = min(s["min"], r), max(s["max"], r)
        s["changed"] += k in decided
    out["blocks"] = {b: summary[b] for b in a.blocks if b in summary}
    return out


# ---- checkpoint architecture ---------------------------------------------------------------------------------

def safetensors_keys(path: str) -> list[str]:
    """Tensor names of a .safetensors file, read from its JSON header only (no tensor data)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("file too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n <= 0 or n > MAX_HEADER_BYTES:
            raise ValueError(f"implausible safetensors header length {n}")
        header = json.loads(f.read(n).decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("safetensors header is not an object")
    return [k for k in header if k != "__metadata__"]


def detect_file(path: str) -> dict:
    """The architecture of a checkpoint file, from its key names; ``arch`` None when it cannot be told cheaply."""
    if not path.lower().endswith(".safetensors"):
        return {"arch": None, "label": None, "reason": "only .safetensors headers can be read without loading"}
    try:
        keys = safetensors_keys(path)
        a = detect_architecture(keys)
    except (OSError, ValueError) as e:
        return {"arch": None, "label": None, "reason": str(e)[:300]}
    return {"arch": a.name, "label": a.label, "reason": f"{len(keys)} keys"}

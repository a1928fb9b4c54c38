"""The merge recipe: everything that decides a merged model's weights, as versioned JSON.

Why a tree: a merge's sources may themselves be merges (in the same graph, or saved files that carry their
own recipe), LoRAs and Adjust may be applied to a source or to the result, so a recipe describes a model as
a node that is either a checkpoint file or a merge of source nodes, each followed by an ordered list of
operations (`apply`). The document wrapping the root node records the pack and ComfyUI versions. The format
is specified in docs/recipe.md; this module is its single definition: builders for the nodes, `validate`
with errors that name the field's path, `parse_recipe` for text pasted by a user or read from a file's
metadata, and the upgrade from version 1 (what the pack wrote before sources had hashes).

Pure stdlib: nothing here loads or hashes a file; callers pass what they know (see `fill_hashes`).
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterator

from ..merge.adjust import NAMES as ADJUST_NAMES
from ..merge.adjust import AdjustError, parse_adjust
from ..arch.architectures import ARCHITECTURES
from ..arch.derived import is_derived_name
from ..merge.calc_modes import CALC_MODES, merge_params, uses_beta
from ..files.file_hash import is_sha256, short_hash
from ..merge.methods import MERGE_METHODS
from ..merge.params import MERGE_SEED, NORMAL, PARAMS
from ..merge.task_params import MODEL_WEIGHTS, task_params

FORMAT = "elemental-merge-recipe"
VERSION = 2
METADATA_KEY = "elemental_merge_recipe"   # the safetensors metadata entry that holds the document
SOURCE_LETTERS = ("A", "B", "C")
TASK_SOURCE_LETTERS = ("A", "B", "C", "D", "E")  # a task-vector method's base A and up to four further models



class RecipeError(ValueError):
    """A recipe that cannot be used; `problems` holds every (path, message) found, not only the first."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = [f"- {p}: {m}" if p else f"- {m}" for p, m in problems]
        super().__init__("invalid merge recipe:\n" + "\n".join(lines))


# ---- builders (what the nodes call) -------------------------------------------------------------------------

def checkpoint_node(name: str, sha256: str | None = None, recipe: dict | None = None) -> dict:
    """A source loaded from a file; `recipe` is the document stored in that file when it is a saved merge."""
    node = {"kind": "checkpoint", "name": name, "sha256": sha256, "apply": []}
    if recipe is not None:
        node["recipe"] = recipe
    return node


def unknown_node(label: str) -> dict:
    """A source whose file the pack cannot name (loaded by a loader that is not ours): a recipe with one is
    documentation, not rebuildable."""
    return {"kind": "unknown", "label": label, "apply": []}


def merge_node(mode: str, alpha: float, beta: float | None, architecture: str, sources: dict,
               text_encoder_merged: bool, calc_mode: str = NORMAL, calc_option: float | None = None,
               block_weights_alpha: str | None = None, block_weights_beta: str | None = None,
               elemental_alpha: str | None = None, elemental_beta: str | None = None,
               task: dict | None = None) -> dict:
    """A merge of `sources` ({"A": node, "B": node[, "C": node]}) with every setting that changes weights.
    `task`: a task-vector method's settings besides alpha (`task_settings`); absent for the other modes."""
    node = {"kind": "merge", "mode": mode, "calc_mode": calc_mode, "calc_option": calc_option,
            "alpha": alpha, "beta": beta, "architecture": architecture,
            "block_weights_alpha": block_weights_alpha, "block_weights_beta": block_weights_beta,
            "elemental_alpha": elemental_alpha, "elemental_beta": elemental_beta,
            "text_encoder_merged": bool(text_encoder_merged), "sources": dict(sources), "apply": []}
    if task is not None:
        node["task"] = dict(task)
    return node


def task_settings(method_name: str, values: dict, texts: dict) -> dict:
    """The `task` field of a task-vector merge: each parameter the method declares besides alpha (its plain
    value, and its block weights and elemental spec texts or null), merge_seed for the random methods and
    model_weights for the weighted ones."""
    method = MERGE_METHODS[method_name]
    out = {}
    for param in task_params(method):
        out[param.name] = float(values.get(param.name, param.default))
        out[f"block_weights_{param.name}"] = texts.get(f"block_weights_{param.name}")
        out[f"elemental_{param.name}"] = texts.get(f"elemental_{param.name}")
    if method.random:
        out[MERGE_SEED.name] = int(values.get(MERGE_SEED.name, MERGE_SEED.default))
    if method.weighted:
        out[MODEL_WEIGHTS] = str(values.get(MODEL_WEIGHTS) or "")
    return out


def lora_op(name: str, strength_model: float, strength_clip: float | None, sha256: str | None = None,
            block_weights: str | None = None, elemental: str | None = None, lbw_weights: str | None = None) -> dict:
    """ElementalLoRA's settings; `strength_clip` None when no CLIP was connected."""
    return {"op": "lora", "name": name, "sha256": sha256, "strength_model": strength_model,
            "strength_clip": strength_clip, "block_weights": block_weights, "lbw_weights": lbw_weights,
            "elemental": elemental}


def adjust_op(values: dict) -> dict:
    """SuperMerger's Adjust; names missing from `values` are 0."""
    return {"op": "adjust", "values": {n: float(values.get(n, 0.0)) for n in ADJUST_NAMES}}


def with_op(node: dict, op: dict) -> dict:
    """A copy of `node` with `op` applied after everything it already has."""
    out = copy.deepcopy(node)
    out["apply"] = list(out.get("apply") or []) + [op]
    return out


def document(model: dict, pack_version: str, comfyui_version: str, save: dict | None = None) -> dict:
    doc = {"format": FORMAT, "version": VERSION, "pack_version": pack_version,
           "comfyui_version": comfyui_version, "model": model}
    if save is not None:
        doc["save"] = save
    return doc


def dumps(doc: dict) -> str:
    """The stored form: sorted keys, so the same recipe is the same text."""
    return json.dumps(doc, sort_keys=True, ensure_ascii=False)


def pack_version(pyproject: str | None = None) -> str:
    """`version` of the [project] table in the pack's pyproject.toml (read as text: tomllib is 3.11+)."""
    path = pyproject or os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "pyproject.toml")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return "unknown"
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    m = re.search(r'^version\s*=\s*"([^"]+)"', project.group(1) if project else "", re.M)
    return m.group(1) if m else "unknown"


# ---- validation -------------------------------------------------------------------------------------------

def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# field -> (what a valid value is, test). Required fields are listed in REQUIRED; the others default to None
# (or [] for `apply`).
_CHECKS = {
    "str": ("a non-empty string", lambda v: isinstance(v, str) and v.strip() != ""),
    "str?": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "num": ("a finite number", _is_num),
    "num?": ("a finite number or null", lambda v: v is None or _is_num(v)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "sha?": ("64 lowercase hex digits (sha256) or null", lambda v: v is None or is_sha256(v)),
    "list": ("a list", lambda v: isinstance(v, list)),
    "dict": ("an object", lambda v: isinstance(v, dict)),
}
FIELDS = {
    "document": {"format": "str", "version": "num", "pack_version": "str", "comfyui_version": "str",
                 "model": "dict", "save": "dict"},
    "checkpoint": {"kind": "str", "name": "str", "sha256": "sha?", "recipe": "dict", "apply": "list"},
    "unknown": {"kind": "str", "label": "str", "apply": "list"},
    "merge": {"kind": "str", "mode": "str", "calc_mode": "str", "calc_option": "num?", "alpha": "num",
              "beta": "num?", "architecture": "str", "block_weights_alpha": "str?", "block_weights_beta": "str?",
              "elemental_alpha": "str?", "elemental_beta": "str?", "text_encoder_merged": "bool",
              "sources": "dict", "apply": "list", "task": "dict"},
    "lora": {"op": "str", "name": "str", "sha256": "sha?", "strength_model": "num", "strength_clip": "num?",
             "block_weights": "str?", "lbw_weights": "str?", "elemental": "str?"},
    "adjust": {"op": "str", "values": "dict"},
}
REQUIRED = {
    "document": ("format", "version", "pack_version", "comfyui_version", "model"),
    "checkpoint": ("kind", "name"),
    "unknown": ("kind", "label"),
    "merge": ("kind", "mode", "alpha", "architecture", "text_encoder_merged", "sources"),
    "lora": ("op", "name", "strength_model"),
    "adjust": ("op", "values"),
}
DEFAULTS = {"calc_mode": NORMAL, "apply": []}


def _fields(obj: dict, what: str, path: str, problems: list) -> dict:
    """Checks `obj`'s fields against FIELDS[what]; returns a copy with the optional fields filled in."""
    spec = FIELDS[what]
    for k in obj:
        if k not in spec:
            problems.append((path, f"unknown field '{k}' for a {what} (valid: {', '.join(spec)})"))
    for k in REQUIRED[what]:
        if k not in obj:
            problems.append((path, f"missing field '{k}'"))
    out = {}
    for k, kind in spec.items():
        if k not in obj:
            if k not in REQUIRED[what] and k not in ("recipe", "task") and not (what == "document" and k == "save"):
                out[k] = copy.deepcopy(DEFAULTS.get(k))
            continue
        desc, ok = _CHECKS[kind]
        if not ok(obj[k]):
            problems.append((_join(path, k), f"expected {desc}, got {json.dumps(obj[k])[:80]}"))
        out[k] = obj[k]
    return out


def _join(path: str, key) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))


def _check_merge(node: dict, path: str, problems: list) -> None:
    """The rules between fields: mode, calc mode and their pairing, the sources each mode needs, beta."""
    mode, calc = node.get("mode"), node.get("calc_mode")
    if isinstance(mode, str) and mode not in MERGE_METHODS:
        problems.append((_join(path, "mode"), f"unknown mode '{mode}' (valid: {', '.join(MERGE_METHODS)})"))
        return
    if isinstance(calc, str) and calc not in CALC_MODES:
        problems.append((_join(path, "calc_mode"), f"unknown calc mode '{calc}' (valid: {', '.join(CALC_MODES)})"))
    elif isinstance(calc, str) and mode not in CALC_MODES[calc].merge_modes:
        problems.append((_join(path, "calc_mode"), f"calc mode '{calc}' needs mode "
                         f"{' or '.join(repr(m) for m in CALC_MODES[calc].merge_modes)}, not '{mode}'"))
    arch = node.get("architecture")
    if isinstance(arch, str) and arch not in ARCHITECTURES and not is_derived_name(arch):
        problems.append((_join(path, "architecture"),
                         f"unknown architecture '{arch}' (valid: {', '.join(ARCHITECTURES)})"))
    if not isinstance(mode, str):
        return
    method = MERGE_METHODS[mode]
    known_calc = calc if isinstance(calc, str) and calc in CALC_MODES else NORMAL
    if uses_beta(method, known_calc) and not _is_num(node.get("beta")):
        problems.append((_join(path, "beta"), f"mode '{mode}' with calc mode '{calc}' uses beta: a number is needed"))
    for param in merge_params(method, known_calc):  # the declared ranges, as the node's widgets have them
        value = node.get(param.name)
        problem = param.problem(value) if _is_num(value) else None
        if problem:
            problems.append((_join(path, param.name), problem))
    if method.task:
        _check_task(node, method, path, problems)
        return
    if node.get("task") is not None:
        problems.append((_join(path, "task"), f"mode '{mode}' takes no task-vector settings"))
    if isinstance(node.get("sources"), dict):
        need = SOURCE_LETTERS if method.needs_c else SOURCE_LETTERS[:2]
        missing = [s for s in need if s not in node["sources"]]
        extra = [s for s in node["sources"] if s not in need]
        if missing:
            problems.append((_join(path, "sources"), f"mode '{mode}' needs sources {', '.join(need)}; "
                             f"missing {', '.join(missing)}"))
        if extra:
            problems.append((_join(path, "sources"), f"mode '{mode}' uses sources {', '.join(need)} only; "
                             f"not {', '.join(map(str, extra))}"))


def _check_task(node: dict, method, path: str, problems: list) -> None:
    """A task-vector merge: its sources (A, B, then any of C, D, E, as many as the method takes) and the
    `task` settings (each declared parameter in its range)."""
    sources = node.get("sources")
    if isinstance(sources, dict):
        letters = list(sources)
        bad = [s for s in letters if s not in TASK_SOURCE_LETTERS]
        if bad or "A" not in letters or "B" not in letters:
            problems.append((_join(path, "sources"), f"mode '{method.name}' needs sources A and B, and takes "
                             f"C, D, E; got {', '.join(map(str, letters))}"))
        else:
            problem = method.count_problem(len(letters) - 1)
            if problem is None and method.max_models is not None and len(letters) - 1 > method.max_models:
                problem = f"mode '{method.name}' takes {method.max_models + 1} sources, not {len(letters)}"
            if problem:
                problems.append((_join(path, "sources"), problem))
    task = node.get("task") or {}
    tpath = _join(path, "task")
    expected = set(task_settings(method.name, {}, {}))
    for k in task:
        if k not in expected:
            problems.append((tpath, f"unknown field '{k}' for mode '{method.name}' (valid: {', '.join(sorted(expected))})"))
    for name in expected:
        value = task.get(name)
        if name in PARAMS:
            if not _is_num(value):
                problems.append((_join(tpath, name), f"expected a finite number, got {json.dumps(value)[:80]}"))
            elif PARAMS[name].problem(value):
                problems.append((_join(tpath, name), PARAMS[name].problem(value)))
        elif value is not None and not isinstance(value, str):
            problems.append((_join(tpath, name), f"expected a string or null, got {json.dumps(value)[:80]}"))


def _check_op(op, path: str, problems: list):
    if not isinstance(op, dict) or op.get("op") not in ("lora", "adjust"):
        got = op.get("op") if isinstance(op, dict) else json.dumps(op)[:40]
        problems.append((path, f"unknown operation {got!r} (valid: lora, adjust)"))
        return op
    out = _fields(op, op["op"], path, problems)
    if op["op"] == "adjust" and isinstance(op.get("values"), dict):
        vals = op["values"]
        for k, v in vals.items():
            if k not in ADJUST_NAMES:
                problems.append((_join(_join(path, "values"), k),
                                 f"unknown adjust value (valid: {', '.join(ADJUST_NAMES)})"))
            elif not _is_num(v):
                problems.append((_join(_join(path, "values"), k), f"expected a finite number, got {json.dumps(v)}"))
        out["values"] = {n: vals.get(n, 0.0) for n in ADJUST_NAMES}
    return out


def _check_node(node, path: str, problems: list, depth: int):
    if depth > 32:
        problems.append((path, "sources nested more than 32 deep"))
        return node
    kind = node.get("kind") if isinstance(node, dict) else None
    if kind not in ("checkpoint", "merge", "unknown"):
        problems.append((path, f"unknown source kind {kind!r} (valid: checkpoint, merge, unknown)"))
        return node
    out = _fields(node, kind, path, problems)
    if kind == "merge":
        _check_merge(out, path, problems)
        if isinstance(out.get("sources"), dict):
            out["sources"] = {k: _check_node(v, _join(_join(path, "sources"), k), problems, depth + 1)
                              for k, v in out["sources"].items()}
    elif isinstance(out.get("recipe"), dict):
        out["recipe"] = _check_document(out["recipe"], _join(path, "recipe"), problems, depth + 1)
    if isinstance(out.get("apply"), list):
        out["apply"] = [_check_op(op, _join(_join(path, "apply"), i), problems) for i, op in enumerate(out["apply"])]
    return out


def _check_document(doc: dict, path: str, problems: list, depth: int = 0) -> dict:
    if doc.get("version") == 1 and "format" not in doc:
        try:
            doc = upgrade_v1(doc)
        except (KeyError, TypeError, AttributeError) as e:
            problems.append((path, f"version 1 recipe without the field {e}"))
            return doc
        except AdjustError as e:
            problems.append((_join(path, "adjust"), str(e)))
            return doc
    version = doc.get("version")
    if _is_num(version) and version > VERSION:
        problems.append((_join(path, "version"), f"recipe version {version} is newer than this pack reads "
                         f"(up to {VERSION}): update the pack"))
        return doc
    out = _fields(doc, "document", path, problems)
    if "format" in doc and doc["format"] != FORMAT:
        problems.append((_join(path, "format"), f"expected '{FORMAT}', got {json.dumps(doc['format'])[:60]}"))
    if _is_num(version) and version != VERSION:
        problems.append((_join(path, "version"), f"unknown recipe version {version} (this pack reads 1 and {VERSION})"))
    if isinstance(doc.get("model"), dict):
        out["model"] = _check_node(doc["model"], _join(path, "model"), problems, depth)
    return out


def validate(doc) -> tuple[dict, list[tuple[str, str]]]:
    """(the document upgraded to the current version with defaults filled in, [(field path, problem)])."""
    if not isinstance(doc, dict):
        return doc, [("", f"a recipe is a JSON object, not {type(doc).__name__}")]
    problems: list[tuple[str, str]] = []
    return _check_document(doc, "", problems), problems


def parse_recipe(text_or_doc) -> dict:
    """A checked, current-version recipe from pasted JSON text, a parsed object, or a file's whole metadata
    dict (its `elemental_merge_recipe` entry is used). RecipeError lists every problem with its path."""
    doc = text_or_doc
    if isinstance(doc, str):
        if not doc.strip():
            raise RecipeError([("", "empty recipe text")])
        try:
            doc = json.loads(doc)
        except json.JSONDecodeError as e:
            raise RecipeError([("", f"not JSON: {e.msg} at line {e.lineno} column {e.colno}")]) from None
    if isinstance(doc, dict) and METADATA_KEY in doc and "model" not in doc:
        return parse_recipe(doc[METADATA_KEY])
    out, problems = validate(doc)
    if problems:
        raise RecipeError(problems)
    return out


def upgrade_v1(old: dict) -> dict:
    """Version 1 (no hashes, sources as names, nested recipes as `model_x_recipe`) as a version-2 document."""
    def node(v1: dict) -> dict:
        sources = {}
        for letter, name in v1["models"].items():
            nested = v1.get(f"model_{letter.lower()}_recipe")
            sources[letter] = node(nested) if nested else checkpoint_node(name)
        merged = merge_node(v1["mode"], v1["alpha"], v1.get("beta"), v1["architecture"], sources,
                            v1.get("text_encoder_merged", False), calc_mode=v1.get("calc_mode", NORMAL),
                            calc_option=v1.get("calc_option"),
                            block_weights_alpha=v1.get("block_weights_alpha"),
                            block_weights_beta=v1.get("block_weights_beta"),
                            elemental_alpha=v1.get("elemental_alpha"), elemental_beta=v1.get("elemental_beta"))
        for text in v1.get("adjust") or []:  # ElementalAdjust appended its 8-value strings here
            merged = with_op(merged, adjust_op(dict(zip(ADJUST_NAMES, parse_adjust(text).values))))
        return merged
    return document(node(old), "unknown", "unknown")


# ---- walking a recipe -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileNeed:
    """A file a rebuild loads: where in the recipe, ComfyUI's model folder, its name and expected hash."""
    path: str
    folder: str   # "checkpoints" or "loras"
    name: str
    sha256: str | None


def _walk(node: dict, path: str) -> Iterator[tuple[str, dict]]:
    """(path, node or op) for every part a rebuild uses, depth first; a checkpoint's stored `recipe` is
    provenance (the file itself is loaded), so it is not entered."""
    yield path, node
    if node.get("kind") == "merge":
        for letter, src in node.get("sources", {}).items():
            yield from _walk(src, _join(_join(path, "sources"), letter))
    for i, op in enumerate(node.get("apply") or []):
        yield _join(_join(path, "apply"), i), op


def file_needs(doc: dict) -> list[FileNeed]:
    """Every checkpoint and LoRA file that rebuilding `doc` loads, in recipe order."""
    needs = []
    for path, part in _walk(doc["model"], "model"):
        if part.get("kind") == "checkpoint":
            needs.append(FileNeed(path, "checkpoints", part["name"], part.get("sha256")))
        elif part.get("op") == "lora":
            needs.append(FileNeed(path, "loras", part["name"], part.get("sha256")))
    return needs


def fill_hashes(doc: dict, sha256_of: Callable[[str, str], str | None]) -> dict:
    """A copy of `doc` with each missing file hash set to `sha256_of(folder, name)` (None: left unknown)."""
    out = copy.deepcopy(doc)
    for path, part in _walk(out["model"], "model"):
        folder = "checkpoints" if part.get("kind") == "checkpoint" else "loras" if part.get("op") == "lora" else None
        if folder and not part.get("sha256"):
            part["sha256"] = sha256_of(folder, part["name"])
    return out


def _label(node: dict) -> str:
    if node.get("kind") == "unknown":
        return f"{node['label']} (file unknown)"
    if node.get("kind") == "checkpoint":
        sha = node.get("sha256")
        return f"{node['name']} [{short_hash(sha) if sha else 'no hash'}]"
    return "merge"


def _ops_text(node: dict) -> list[str]:
    out = []
    for op in node.get("apply") or []:
        if op.get("op") == "lora":
            out.append(f"+ LoRA {op['name']} model={op['strength_model']} clip={op['strength_clip']}"
                       + (" (block weights)" if op.get("block_weights") else "")
                       + (" (elemental)" if op.get("elemental") else ""))
        else:
            vals = " ".join(f"{k}={v:g}" for k, v in op["values"].items() if v)
            out.append(f"+ Adjust {vals or 'none'}")
    return out


def describe(node: dict, indent: str = "") -> str:
    """A readable tree of a recipe's model node (for the LoadMergeRecipe report)."""
    lines = []
    if node.get("kind") == "merge":
        head = f"{node['mode']} [{node.get('calc_mode', 'normal')}] ({node['architecture']}) alpha={node['alpha']}"
        if node.get("beta") is not None:
            head += f" beta={node['beta']}"
        extras = [k for k in ("block_weights_alpha", "block_weights_beta", "elemental_alpha", "elemental_beta")
                  if node.get(k)]
        lines.append(indent + head + (f"; {', '.join(extras)}" if extras else ""))
        for letter, src in node["sources"].items():
            if src.get("kind") == "merge":
                lines.append(f"{indent}  {letter}: merge")
                lines.append(describe(src, indent + "    "))
            else:
                lines.append(f"{indent}  {letter}: {_label(src)}")
                lines += [f"{indent}     {t}" for t in _ops_text(src)]
    else:
        lines.append(indent + _label(node))
    if node.get("kind") == "merge":
        lines += [indent + t for t in _ops_text(node)]
    return "\n".join(lines)

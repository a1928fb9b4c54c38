"""The recipe of a file-to-file merge (the same document a live save writes), and its rebuild from a saved
file: every step of the recipe must be file-level (checkpoints merged, with no LoRA or Adjust applied), and
each source is found by name in the given folders and checked against its recorded sha256 first.
"""
from __future__ import annotations

import os
import tempfile

from ..files.file_hash import file_sha256
from ..files.tensor_file import TensorFile
from ..merge.calc_modes import uses_beta
from ..merge.methods import get_merge_method
from ..merge.task_params import MODEL_WEIGHTS, task_params
from ..merge.params import MERGE_SEED
from ..recipes import recipe as recipes
from .merge import SOURCE_NAMES, FileMergeSettings

FILE_MERGE_RUNTIME = "none (file-to-file merge)"


def merge_recipe(paths: dict, settings: FileMergeSettings, arch_name: str, text_encoder_merged: bool,
                 hash_cache: str | None = None, hashes: bool = True, names: dict | None = None) -> dict:
    """The recipe node of a file merge of `paths` ("a".."e" -> path); `names`: how each source is named in
    the recipe (default: its file name); `hashes` False leaves the sha256 fields empty."""
    method = get_merge_method(settings.mode)
    with_beta = uses_beta(method, settings.calc_mode)
    sources = {}
    for n, path in paths.items():
        name = (names or {}).get(n) or os.path.basename(path)
        sources[n.upper()] = recipes.checkpoint_node(name, file_sha256(path, hash_cache) if hashes else None)
    task = None
    if method.task:
        texts = {k: v for k, v in settings.task_texts.items() if v}
        task = recipes.task_settings(method.name, settings.task_values, texts)
    return recipes.merge_node(
        method.name, float(settings.alpha), float(settings.beta) if with_beta else None, arch_name, sources,
        text_encoder_merged, calc_mode=settings.calc_mode, calc_option=float(settings.calc_option),
        block_weights_alpha=settings.block_weights_alpha or None,
        block_weights_beta=(settings.block_weights_beta or None) if with_beta else None,
        elemental_alpha=settings.elemental_alpha or None,
        elemental_beta=(settings.elemental_beta or None) if with_beta else None, task=task)


def recipe_metadata(node: dict, precision: str) -> dict:
    """The safetensors metadata of a file merge: `format` and the recipe document."""
    doc = recipes.document(node, recipes.pack_version(), FILE_MERGE_RUNTIME, {"precision": precision})
    recipes.parse_recipe(doc)  # a recipe the rebuild would refuse is a bug here: fail before writing
    return {"format": "pt", recipes.METADATA_KEY: recipes.dumps(doc)}


def settings_of(node: dict) -> FileMergeSettings:
    """The FileMergeSettings a recipe merge node records."""
    method = get_merge_method(node["mode"])
    task = node.get("task") or {}
    values, texts = {}, {}
    for p in task_params(method) if method.task else ():
        values[p.name] = task.get(p.name, p.default)
        for prefix in ("block_weights_", "elemental_"):
            if task.get(prefix + p.name):
                texts[prefix + p.name] = task[prefix + p.name]
    if method.task and method.random:
        values[MERGE_SEED.name] = task.get(MERGE_SEED.name, MERGE_SEED.default)
    if method.task and method.weighted:
        values[MODEL_WEIGHTS] = task.get(MODEL_WEIGHTS) or ""
    return FileMergeSettings(
        node["mode"], float(node["alpha"]), float(node["beta"]) if node.get("beta") is not None else 0.25,
        node.get("block_weights_alpha"), node.get("block_weights_beta"), node.get("elemental_alpha"),
        node.get("elemental_beta"), node.get("calc_mode") or "normal",
        float(node["calc_option"]) if node.get("calc_option") is not None else 0.3, values, texts)


class RecipeRebuildError(ValueError):
    """A recipe that cannot be rebuilt from files: the message names the step and what is missing."""


def _find(name: str, folders: list) -> str | None:
    for folder in folders:
        for candidate in (os.path.join(folder, name), os.path.join(folder, os.path.basename(name))):
            if os.path.isfile(candidate):
                return candidate
    return None


def source_files(node: dict, folders: list, hash_cache: str | None = None, path: str = "model") -> dict:
    """"a".."e" -> the file of each checkpoint source of merge `node`, found in `folders` and checked
    against its sha256; a source that is itself a merge is returned as its node (rebuilt first)."""
    if node.get("kind") != "merge":
        raise RecipeRebuildError(f"{path}: a '{node.get('kind')}' step; the file merge rebuilds merges of files")
    if node.get("apply"):
        ops = ", ".join(op.get("op", "?") for op in node["apply"])
        raise RecipeRebuildError(f"{path}: applies {ops} after the merge; only plain merges are file-level "
                                 "(rebuild it in ComfyUI with Load Merge Recipe)")
    out = {}
    for letter, src in node["sources"].items():
        where = f"{path}.sources.{letter}"
        if src.get("kind") == "merge":
            out[letter.lower()] = src
            continue
        if src.get("kind") != "checkpoint":
            raise RecipeRebuildError(f"{where}: '{src.get('label') or src.get('kind')}' is not a file the recipe "
                                     "names; it cannot be rebuilt")
        if src.get("apply"):
            raise RecipeRebuildError(f"{where}: {src['name']} has LoRA/Adjust steps applied; not file-level")
        found = _find(src["name"], folders)
        if found is None:
            raise RecipeRebuildError(f"{where}: {src['name']} not found in {', '.join(folders)}")
        want = src.get("sha256")
        if want:
            got = file_sha256(found, hash_cache)
            if got != want:
                raise RecipeRebuildError(f"{where}: {found} has sha256 {got[:12]}..., the recipe recorded "
                                         f"{want[:12]}...: a different file")
        out[letter.lower()] = found
    return out


def read_recipe(path: str) -> dict:
    """The recipe document stored in a saved merge (RecipeRebuildError when it has none)."""
    with TensorFile(path) as f:
        text = f.metadata.get(recipes.METADATA_KEY)
    if not text:
        raise RecipeRebuildError(f"{path}: holds no '{recipes.METADATA_KEY}' metadata (not a saved merge)")
    return recipes.parse_recipe(text)


def ordered(paths: dict) -> dict:
    return {n: paths[n] for n in SOURCE_NAMES if n in paths}


def temp_path(folder: str) -> str:
    fd, path = tempfile.mkstemp(prefix=".elemental-step-", suffix=".safetensors", dir=folder)
    os.close(fd)
    os.remove(path)
    return path

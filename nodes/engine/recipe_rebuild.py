"""Rebuild a merge from its recipe: find each source file, prove it is the same file (sha256), then run the
graph the recipe compiles to (merge_core.recipe_graph) with the pack's own nodes, in order.

Running the nodes themselves (looked up in ComfyUI's node table by their public ids, not imported) means a
rebuilt merge takes the very code path of the live one: same patches, same reports, same recipe attached.
Nothing is loaded until every source has been found and checked; all problems are reported together.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import folder_paths

from ...merge_core.recipes import recipe as recipes
from ...merge_core.files.file_hash import short_hash
from ...merge_core.merge.params import NORMAL
from ...merge_core.recipes.recipe_graph import recipe_graph
from ...merge_core.files.safetensors_stream import read_header
from . import model_info

OUTPUT_TAG = " [output]"
SAVED_FOLDER = "checkpoints"  # SaveMergedCheckpoint's default sub-folder of the output folder


class SourceError(ValueError):
    """One or more sources missing or not the files the recipe was made from."""


def saved_merge_names() -> list[str]:
    """Files that may hold a recipe: saved merges under output/checkpoints (marked ` [output]`, ComfyUI's
    annotation) and every checkpoint in models/checkpoints."""
    out_dir = os.path.join(folder_paths.get_output_directory(), SAVED_FOLDER)
    saved = []
    for root, _, files in os.walk(out_dir):
        for f in files:
            if f.lower().endswith(".safetensors"):
                rel = os.path.relpath(os.path.join(root, f), folder_paths.get_output_directory())
                saved.append(rel.replace(os.sep, "/") + OUTPUT_TAG)
    return sorted(saved) + [n for n in folder_paths.get_filename_list("checkpoints")
                            if n.lower().endswith((".safetensors", ".sft"))]


def path_of_listed(name: str) -> str | None:
    """The file of a `saved_merge_names()` entry, or None when it is gone."""
    if name.endswith(OUTPUT_TAG):
        path = folder_paths.get_annotated_filepath(name)
        out = os.path.realpath(folder_paths.get_output_directory())
        return path if os.path.realpath(path).startswith(out + os.sep) and os.path.isfile(path) else None
    return folder_paths.get_full_path("checkpoints", name)


def recipe_from_file(name: str) -> dict:
    """The checked recipe stored in a listed file's metadata; ValueError naming the file when it has none."""
    path = path_of_listed(name)
    if path is None:
        raise ValueError(f"'{name}' not found")
    text = read_header(path)[1].get(recipes.METADATA_KEY)
    if not text:
        raise ValueError(f"'{name}' holds no merge recipe (its metadata has no '{recipes.METADATA_KEY}')")
    return recipes.parse_recipe(text)


@dataclass(frozen=True)
class Checked:
    need: recipes.FileNeed
    path: str
    sha256: str


def check_sources(doc: dict, sha256_of=model_info.source_sha256) -> list[Checked]:
    """Every file the recipe needs, found and hash-checked; SourceError listing each problem otherwise."""
    problems, found = [], []
    for path, node in _unknown_sources(doc["model"], "model"):
        problems.append(f"- {path}: '{node['label']}' was loaded by a loader that does not record its file: "
                        "this recipe cannot be rebuilt")
    for need in recipes.file_needs(doc):
        file = folder_paths.get_full_path(need.folder, need.name)
        expect = f"sha256 {short_hash(need.sha256)}" if need.sha256 else "no hash recorded"
        if file is None:
            problems.append(f"- {need.path}: {need.folder[:-1]} '{need.name}' not found in models/{need.folder} "
                            f"(expected: {expect})")
            continue
        digest = sha256_of(need.folder, need.name)
        if need.sha256 and digest != need.sha256:
            problems.append(f"- {need.path}: {need.folder[:-1]} '{need.name}' has sha256 {short_hash(digest)}, "
                            f"the recipe expects {short_hash(need.sha256)}: a different file")
            continue
        found.append(Checked(need, file, digest))
    if problems:
        raise SourceError("cannot rebuild the merge; nothing was loaded:\n" + "\n".join(problems))
    return found


def _unknown_sources(node: dict, path: str):
    if node.get("kind") == "unknown":
        yield path, node
    for k, src in (node.get("sources") or {}).items():
        yield from _unknown_sources(src, f"{path}.sources.{k}")


def _node_table() -> dict:
    import nodes as comfy_nodes  # ComfyUI's top-level module: the registered node classes by id

    return comfy_nodes.NODE_CLASS_MAPPINGS


def _declared_inputs(cls) -> set:
    info = cls.INPUT_TYPES()
    return set(info.get("required", {})) | set(info.get("optional", {}))


def run_graph(prompt: dict, node_table: dict | None = None) -> dict:
    """Executes an API prompt whose ids are in dependency order (recipe_graph's); returns id -> outputs."""
    table = node_table or _node_table()
    results: dict[str, tuple] = {}
    for node_id, node in prompt.items():
        cls = table.get(node["class_type"])
        if cls is None:
            raise ValueError(f"node type {node['class_type']} is not registered in this ComfyUI")
        declared = _declared_inputs(cls)
        kwargs = {}
        for name, value in node["inputs"].items():
            if name not in declared:
                if name == "calc_mode" and value == NORMAL or name == "calc_option":
                    continue  # a pack without calc modes computes exactly "normal"
                raise ValueError(f"{node['class_type']} has no input '{name}': this pack cannot rebuild the recipe")
            kwargs[name] = results[value[0]][value[1]] if isinstance(value, list) else value
        out = cls.execute(**kwargs)
        results[node_id] = tuple(getattr(out, "args", out) or ())
    return results


def rebuild(doc: dict, node_table: dict | None = None) -> tuple[object, object, object, str]:
    """(MODEL, CLIP, VAE of the first source, report) of the recipe, after every source file is found and its
    hash checked."""
    checked = check_sources(doc)
    prompt, built = recipe_graph(doc, save=False)
    results = run_graph(prompt, node_table)
    model = results[built.model[0]][built.model[1]]
    clip = results[built.clip[0]][built.clip[1]] if built.clip else None
    vae = results[built.vae[0]][built.vae[1]] if built.vae else None
    lines = ["Rebuilt from its recipe (format version "
             f"{doc['version']}, pack {doc['pack_version']}, ComfyUI {doc['comfyui_version']}):",
             recipes.describe(doc["model"]), "", "Sources checked:"]
    for c in checked:
        lines.append(f"  {c.need.name}: sha256 {short_hash(c.sha256)} "
                     + ("matches" if c.need.sha256 else "(no hash in the recipe: found by name only)"))
    reports = [r[2] for i, r in results.items() if prompt[i]["class_type"] == "ElementalMerge" and len(r) > 2]
    return model, clip, vae, "\n".join(lines + [""] + reports)

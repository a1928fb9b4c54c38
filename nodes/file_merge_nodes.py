"""Merge Checkpoint Files / Merge Diffusion Model Files: a merge from files to a file, key by key, without
loading the models (merge_core.file_merge), for models larger than memory and for batch merges.

The settings are Elemental Merge's (mode, alpha, beta, block weights and specs from the same nodes, calc
mode, the task-vector parameters); the sources are picked from ComfyUI's model folders. The output goes to
the output folder under a name that never overwrites, with the recipe in its metadata (the same document a
Save Merged Checkpoint of the live merge holds), and ComfyUI's progress bar follows the tensors written.

Each weight is rounded to the dtype this ComfyUI would hold it in after loading the source (its device and
flags decide: float32 diffusion model and fp16 text encoder on a CPU, fp16/bf16 on most GPUs), so the file
holds what saving the same merge made live would write.
"""
from __future__ import annotations

import os

import folder_paths

from ..merge_core.file_merge.merge import (SOURCE_NAMES, FileMergeSettings, close_sources, merge_files, open_sources,
                                           text_encoders_in_all)
from ..merge_core.file_merge.recipe_io import merge_recipe, recipe_metadata
from ..merge_core.files.save_dtypes import PRECISIONS
from ..merge_core.merge.calc_modes import NORMAL
from ..merge_core.merge.merge_checks import calc_queue_problem, model_count_queue_problem
from ..merge_core.merge.params import ALPHA, BETA, GAMMA, TASK_ONLY_PARAMS
from ..merge_core.merge.task_params import MODEL_WEIGHTS, text_socket_names
from .engine import model_info, runtime
from .sockets.common import (CATEGORY, MODES, BlockWeightsType, ElementalSpecType, io, log, text_of,
                             unused_checkpoint_path)
from .sockets.merge_inputs import MODE_TOOLTIP, calc_sockets, param_socket, task_value_sockets

NONE = "(none)"


def _sources(folder: str, picks: dict) -> tuple[dict, dict]:
    """("a".."e" -> full path, "a".."e" -> the name as ComfyUI lists it) of the picked files."""
    paths, names = {}, {}
    for n in SOURCE_NAMES:
        name = picks.get(n)
        if name and name != NONE:
            paths[n] = folder_paths.get_full_path_or_raise(folder, name)
            names[n] = name
    return paths, names


def _schema(node_id: str, display: str, folder: str, prefix: str, description: str) -> io.Schema:
    files = folder_paths.get_filename_list(folder)
    picks = [io.Combo.Input(f"ckpt_{n}", options=files) for n in ("a", "b")]
    picks += [io.Combo.Input(f"ckpt_{n}", options=[NONE] + files, default=NONE, optional=True,
                             tooltip="a further source (Add difference and the three-model modes read C; the "
                                     "task-vector methods read C, D and E)") for n in ("c", "d", "e")]
    return io.Schema(
        node_id=node_id, display_name=display, category=CATEGORY, description=description,
        inputs=picks + [
            io.Combo.Input("mode", options=MODES, default="Weight sum", tooltip=MODE_TOOLTIP),
            param_socket(ALPHA), param_socket(BETA),
            BlockWeightsType.Input("block_weights_alpha", optional=True),
            BlockWeightsType.Input("block_weights_beta", optional=True),
            ElementalSpecType.Input("elemental_alpha", optional=True),
            ElementalSpecType.Input("elemental_beta", optional=True),
            io.String.Input("filename_prefix", default=prefix),
            io.Combo.Input("precision", options=list(PRECISIONS), default="fp16"),
        ] + calc_sockets() + task_value_sockets(),
        outputs=[io.String.Output(display_name="file")],
        is_output_node=True,
    )


def merge_to_file(folder: str, kwargs: dict) -> str:
    """Runs the file merge the node's inputs describe; returns the output's path relative to the output folder."""
    paths, names = _sources(folder, {n: kwargs.get(f"ckpt_{n}") for n in SOURCE_NAMES})
    texts = {k: text_of(kwargs[k]) for k in text_socket_names() if kwargs.get(k) is not None}
    values = {p.name: kwargs[p.name] for p in TASK_ONLY_PARAMS if p.name in kwargs}
    values[MODEL_WEIGHTS] = kwargs.get(MODEL_WEIGHTS) or ""
    settings = FileMergeSettings(
        kwargs["mode"], float(kwargs["alpha"]), float(kwargs["beta"]), text_of(kwargs.get("block_weights_alpha")),
        text_of(kwargs.get("block_weights_beta")), text_of(kwargs.get("elemental_alpha")),
        text_of(kwargs.get("elemental_beta")), kwargs.get("calc_mode") or NORMAL,
        float(kwargs.get("calc_option", GAMMA.default)), values, texts)
    sources = open_sources(paths, names)
    try:
        a = sources["a"]
        arch = a.arch
        unet = [c for c in a.by_canonical if c.startswith("model.diffusion_model.")]
        params = sum(_numel(a.shape(c)) for c in unet)
        file_dtype = a.file.entries[a.by_canonical[unet[0]]].dtype if unet else None
        dtypes = runtime.load_dtypes(arch.config_classes[0] if arch.config_classes else None, params, file_dtype)
        node = merge_recipe(paths, settings, arch.name, text_encoders_in_all(sources),
                            hash_cache=model_info.hash_cache_path(), names=names)
        output_dir = folder_paths.get_output_directory()
        path = unused_checkpoint_path(kwargs["filename_prefix"], output_dir)
    except BaseException:
        close_sources(sources)
        raise
    bar = runtime.progress_bar(1)

    def progress(p):
        bar.update_absolute(p.done, p.total)
    result = merge_files(paths, path, settings, kwargs["precision"], recipe_metadata(node, kwargs["precision"]),
                         dtypes, progress, names, sources=sources)
    log.info("[Elemental Merge] merged files into %s: %.2f GB in %.1f s", path, result.written_bytes / 1e9,
             result.seconds)
    return os.path.relpath(path, output_dir)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class MergeCheckpointFiles(io.ComfyNode):
    """Merges checkpoint files into a new checkpoint file, one tensor at a time."""

    @classmethod
    def define_schema(cls):
        return _schema("MergeCheckpointFiles", "Merge Checkpoint Files", "checkpoints", "checkpoints/ElementalMerge",
                       "Merges checkpoint files from models/checkpoints into a new file in output/checkpoints, one "
                       "tensor at a time: memory holds a few tensors whatever the models' size. The same settings "
                       "as Elemental Merge (link Elemental Spec and Block Weights nodes); the recipe is in the "
                       "file. Never overwrites.")

    FOLDER = "checkpoints"

    @classmethod
    def validate_inputs(cls, mode=None, calc_mode=None, calc_option=None, alpha=None, beta=None, ckpt_c=NONE,
                        ckpt_d=NONE, ckpt_e=NONE):
        # Declaring the optional sources makes ComfyUI leave their choice check to the node (redone here), and
        # lets a method given too few sources be refused at queue time.
        picks = {"ckpt_c": ckpt_c, "ckpt_d": ckpt_d, "ckpt_e": ckpt_e}
        files = set(folder_paths.get_filename_list(cls.FOLDER))
        for name, pick in picks.items():
            if pick is not None and pick != NONE and pick not in files:
                return f"{name}: '{pick}' is not in models/{cls.FOLDER} (or pick {NONE})"
        chosen = ["ckpt_b"] + [n for n, pick in picks.items() if pick not in (None, NONE)]
        return (calc_queue_problem(mode, calc_mode, calc_option, alpha, beta)
                or model_count_queue_problem(mode, chosen, "ckpt_") or True)

    @classmethod
    def execute(cls, **kwargs):
        rel = merge_to_file(cls.FOLDER, kwargs)
        return io.NodeOutput(rel, ui={"text": [rel]})


class MergeDiffusionModelFiles(MergeCheckpointFiles):
    """Merges diffusion-model files (models/diffusion_models) into a new one, one tensor at a time."""

    FOLDER = "diffusion_models"

    @classmethod
    def define_schema(cls):
        return _schema("MergeDiffusionModelFiles", "Merge Diffusion Model Files", "diffusion_models",
                       "diffusion_models/ElementalMerge",
                       "Merges diffusion-model files (Load Diffusion Model's folder) into a new file in "
                       "output/diffusion_models, one tensor at a time, with Elemental Merge's settings and the "
                       "recipe in the file. Never overwrites.")

NODES = [MergeCheckpointFiles, MergeDiffusionModelFiles]

"""A connected model file's architecture for the editor, as the merge will find it, without loading the model.

The merge decides a model's architecture with `nodes/engine/model_info.architecture_of`: the record of its
ComfyUI config class, else the record its keys show when that record puts every diffusion-model key in a
block, else blocks derived from its keys (`merge_core.arch.derived`). The editor knows the model only by its
loader's file name, so the route reads the file's safetensors header and answers the same question here.

The key ORDER matters for derived blocks: `derive_architecture` puts a top-level module in ``IN`` or ``OUT`` by
where its first key comes relative to the last numbered container, in the order ComfyUI's model lists its
keys (the order its class builds the modules). A safetensors header does not keep that order: the writer
sorts the tensors (by dtype, then by name), so LTXV's ``proj_out`` and ``scale_shift_table`` come before
``transformer_blocks`` there and would all land in ``IN`` (blocks ``IN, T00..T27``, no ``OUT``, another
derived name than the merge's). So `file_architecture` derives only from `model_keys`, the key list of the
model ComfyUI would build from the file, which the route gets by running ComfyUI's own detection on the
header's shapes and building that model on the meta device (no weight is read, no memory is taken). Without
it (no ComfyUI, a detection that fails) the answer has no architecture and says why.
"""
from __future__ import annotations

from typing import Iterable

from ..arch import derived
from ..arch.architectures import BY_CONFIG_CLASS, detect_architecture, get_architecture


def comfy_form(file_keys: Iterable[str]) -> list[str]:
    """The header's keys as the merge's checks read them: a file with no ``model.diffusion_model.`` /
    ``diffusion_model.`` key (a diffusion-model file: ``transformer_blocks.0.…``) gets
    ``model.diffusion_model.`` before each key; a checkpoint's keys are kept."""
    keys = list(file_keys)
    if any(derived.diffusion_part(k) is not None for k in keys):
        return keys
    return [derived.PREFIX_CHECKPOINT + k for k in keys]


def _answer(arch, reason: str) -> dict:
    return {"arch": arch.name, "label": arch.label, "reason": reason, "blocks": list(arch.blocks),
            "derived": derived.is_derived(arch)}


def _none(reason: str) -> dict:
    return {"arch": None, "label": None, "reason": reason, "blocks": [], "derived": False}


def record_of_keys(file_keys: Iterable[str]):
    """The record the header's keys show when it puts every diffusion-model key in a block, else None (then
    the blocks are derived, or another record is found by ComfyUI's config class)."""
    keys = list(file_keys)
    try:
        arch = detect_architecture(keys)
    except ValueError:
        return None
    return None if derived.uncovered(arch, comfy_form(keys)) else arch


def file_architecture(file_keys: Iterable[str], model_keys: Iterable[str] | None = None,
                      config_class: str | None = None) -> dict:
    """{arch, label, reason, blocks, derived} of a model file, decided as `architecture_of` decides it.

    `file_keys`: the header's tensor names (any order). `model_keys`: the keys of the model ComfyUI builds from
    the file, in its order (``diffusion_model.…``), and `config_class` its ComfyUI model config class name;
    both None when ComfyUI could not tell. A derived architecture is registered, so that
    ``/elemental/architectures/<name>`` and the checking routes answer for it."""
    file_keys = list(file_keys)
    name = BY_CONFIG_CLASS.get(config_class or "")
    if name is not None:
        return _answer(get_architecture(name), f"ComfyUI model config {config_class}")
    check = list(model_keys) if model_keys is not None else comfy_form(file_keys)
    try:
        arch = detect_architecture(file_keys)
    except ValueError:
        arch = None
    if arch is not None and not derived.uncovered(arch, check):
        return _answer(arch, f"{len(file_keys)} keys")
    if model_keys is None:
        return _none("no record fits its keys, and its blocks are derived from the key order of the model "
                     "ComfyUI builds from it, which ComfyUI could not tell from the header (a safetensors "
                     "header lists its keys sorted)")
    try:
        arch = derived.derive_and_register(check, config_class or "")
    except ValueError as e:
        return _none(str(e))
    return _answer(arch, arch.summary())

"""The one wall between the pack and ComfyUI's private ModelPatcher internals.

The incremental re-merge (`remerge`) recomputes single keys of a loaded model in place. ComfyUI has no
public API for that, so it reads and writes fields that ComfyUI may rename in any release. Every such access
is here, and nowhere else, with the ComfyUI version it was read from; `missing_internals` lists what a
ComfyUI release no longer has, and a test calls it on a real model so an upgrade fails loudly, naming the
attribute, instead of giving wrong weights.

Read from ComfyUI 0.33.0 (`comfy/model_patcher.py`, `comfy/lora.py`) and checked against 0.3.75:
- `ModelPatcher.patches`: key -> list of patch tuples `(strength_patch, source, strength_model, offset,
  function)` in the order `add_patches` appended them (`Patch` below names the positions);
- `ModelPatcher.patches_uuid`: changes whenever the patch set does;
- `ModelPatcher.backup`: key -> namedtuple `(weight, inplace_update)` of the weight before patching;
- `ModelPatcher.use_ejected()`, `ModelPatcher.patch_weight_to_device(key, device_to)`;
- on the wrapped model: `current_weight_patches_uuid` (the uuid whose patches the loaded weights hold),
  `model_lowvram`, `model_loaded_weight_memory`;
- `ModelPatcher.is_dynamic()` (0.33; absent in 0.3.75): True for `ModelPatcherDynamic`, the dynamic-VRAM
  patcher every loader returns on NVIDIA since 0.33. It keeps no patched weights: each layer computes its
  weight from the patch lists when it runs (`LowVramPatch`), after preparing the patches with
  `comfy.lora.prefetch_prepared_value`, which rebuilds a weight adapter as
  ``type(value)(value.loaded_keys, prepared(value.weights))``. `model_lowvram` is never set there, so
  "loaded with its own patches" must be asked of `is_dynamic()` first.

`load_path_problems` (in `load_contract`) checks the behaviour the engine relies on, not just the names.
"""
from __future__ import annotations

import uuid
import weakref
from typing import Any, NamedTuple

import torch

import comfy.lora
import comfy.model_patcher
import comfy.utils

COMFYUI_VERSION_READ = "0.33.0"
COMFYUI_VERSIONS_CHECKED = ("0.33.0", "0.3.75")

PATCHER_ATTRIBUTES = ("patches", "patches_uuid", "backup", "use_ejected", "patch_weight_to_device", "_load_list",
                      "object_patches", "object_patches_backup")
MODEL_ATTRIBUTES = ("current_weight_patches_uuid", "model_lowvram", "model_loaded_weight_memory")
BACKUP_FIELDS = ("weight", "inplace_update")


class Patch(NamedTuple):
    """One entry of `ModelPatcher.patches[key]`, as `add_patches` stores it."""
    strength_patch: float
    source: Any          # the other model's get_key_patches() entry, a tensor, or a weight adapter
    strength_model: float
    offset: tuple | None  # (dim, start, length) narrow of the weight, or None
    function: Any = None


def missing_internals(patcher) -> list[str]:
    """Names of the internals this module uses that `patcher` (a loaded ModelPatcher) lacks."""
    missing = [f"ModelPatcher.{a}" for a in PATCHER_ATTRIBUTES if not hasattr(patcher, a)]
    model = getattr(patcher, "model", None)
    missing += [f"ModelPatcher.model.{a}" for a in MODEL_ATTRIBUTES if not hasattr(model, a)]
    for key, entry in (getattr(patcher, "backup", None) or {}).items():
        missing += [f"ModelPatcher.backup[{key!r}].{f}" for f in BACKUP_FIELDS if not hasattr(entry, f)]
        break
    for key, entries in (getattr(patcher, "patches", None) or {}).items():
        if entries and len(entries[0]) != len(Patch._fields):
            missing.append(f"ModelPatcher.patches[{key!r}] entries of {len(Patch._fields)} fields "
                           f"{Patch._fields} (found {len(entries[0])})")
        break
    return missing


def patch_lists(patcher) -> dict[str, list[Patch]]:
    """A copy of the patcher's patch lists, each entry as a `Patch`."""
    return {k: [Patch(*p) for p in v] for k, v in patcher.patches.items()}


def same_patches(a: list, b: list) -> bool:
    """Two patch lists equal: same numbers and the very same source objects (identity, no tensor compare)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        x, y = Patch(*x), Patch(*y)
        if (x.strength_patch != y.strength_patch or x.strength_model != y.strength_model
                or x.offset != y.offset or x.source is not y.source or x.function is not y.function):
            return False
    return True


def weights_token(patcher) -> tuple:
    """What identifies the weights a patcher stands for, for caches keyed by source models (the calc modes'
    cosine statistic): its wrapped model and its `patches_uuid`, which ComfyUI renews whenever the patch set
    changes and a clone keeps (same model, same patches: same weights)."""
    return (id(patcher.model), patcher.patches_uuid)


def is_dynamic(patcher) -> bool:
    """Whether ComfyUI computes this patcher's weights from its patch lists at every use (dynamic VRAM)."""
    probe = getattr(patcher, "is_dynamic", None)
    return bool(probe()) if callable(probe) else False


def is_loaded_with_own_patches(patcher) -> bool:
    """True when the model holds exactly this patcher's patched weights, fully loaded (no lowvram). Never
    for a dynamic patcher: it holds no patched weights to recompute."""
    if is_dynamic(patcher):
        return False
    m = patcher.model
    return (m.current_weight_patches_uuid is not None and m.current_weight_patches_uuid == patcher.patches_uuid
            and not getattr(m, "model_lowvram", False) and getattr(m, "model_loaded_weight_memory", 0) > 0)


def set_patch_lists(patcher, new_lists: dict) -> None:
    """Replaces the patch lists of the given keys (an empty list removes the key's patches) and gives the
    patcher a new `patches_uuid`, so ComfyUI's next load re-patches from its backup."""
    for key, patches in new_lists.items():
        if patches:
            patcher.patches[key] = [tuple(p) for p in patches]
        else:
            patcher.patches.pop(key, None)
    patcher.patches_uuid = uuid.uuid4()


def _restore(patcher, key) -> None:
    bk = patcher.backup.get(key)
    if bk is None:
        return
    if bk.inplace_update:
        comfy.utils.copy_to_param(patcher.model, key, bk.weight)
    else:
        comfy.utils.set_attr_param(patcher.model, key, bk.weight)


def _recompute(patcher, new_lists: dict) -> None:
    device = patcher.model.device
    with patcher.use_ejected():
        for key, new in new_lists.items():
            old_param = comfy.utils.get_attr(patcher.model, key)
            _restore(patcher, key)
            if new:
                patcher.patches[key] = [tuple(p) for p in new]
                patcher.patch_weight_to_device(key, device_to=device)
                continue
            patcher.patches.pop(key, None)
            bk = patcher.backup.pop(key, None)
            if bk is not None and not bk.inplace_update and bk.weight.device != old_param.device:
                # the backup lives on the offload device; a loaded module keeps its weights on `device`
                comfy.utils.set_attr_param(patcher.model, key, bk.weight.to(old_param.device, copy=True))


def recompute_in_place(patcher, new_lists: dict) -> None:
    """Re-patches just `new_lists`' keys of a model loaded with this patcher's own patches, with ComfyUI's
    own `patch_weight_to_device` (same calculate_weight, same fp32 intermediate, same rounding), then marks
    the loaded weights as this patcher's so the next load keeps them.

    Per key: restore the original weight from `backup` (as `unpatch_model` does), swap the patch list,
    recompute. If it fails half-way the model gets a uuid no patcher has, which forces every later load to
    restore from the backup first (`backup` only ever holds original weights)."""
    try:
        _recompute(patcher, new_lists)
    except BaseException:
        patcher.model.current_weight_patches_uuid = uuid.uuid4()
        raise
    patcher.patches_uuid = uuid.uuid4()
    patcher.model.current_weight_patches_uuid = patcher.patches_uuid


def string_to_seed(data: str) -> int:
    """ComfyUI's stochastic-rounding seed of a key (`comfy.utils` since 0.33, where the old
    `comfy.model_patcher` name logs a warning on every call; `comfy.model_patcher` before)."""
    moved = getattr(comfy.utils, "string_to_seed", None)
    return moved(data) if moved is not None else comfy.model_patcher.string_to_seed(data)


def dynamic_prepared_patches(patcher, key: str, staging=None):
    """`key`'s patch list as ComfyUI's dynamic-VRAM loader prepares it before a layer runs (`LowVramPatch`:
    size with `memory_required`, copy into a staging buffer with `prepare`), or None where this ComfyUI has
    no such loader (0.3.75). `staging`: a uint8 tensor of at least `memory_required()` bytes (one is made)."""
    if not hasattr(comfy.lora, "prefetch_prepared_value"):
        return None
    lowvram = comfy.model_patcher.LowVramPatch(key, patcher.patches)
    if staging is None:
        staging = torch.empty((max(lowvram.memory_required(), 1),), dtype=torch.uint8)
    return lowvram.prepare(staging, None, copy=True, commit=False)


# ---- quantized layers (ComfyUI 0.33) ------------------------------------------------------------------
# Read from ComfyUI 0.33.0 (`comfy/model_patcher.py` `get_key_patches`, `get_key_weight`): the state dict of
# a model with quantized layers (`comfy.quant_ops.QuantizedTensor` weights) also lists each such layer's
# scale and config (`L.weight_scale`, `L.comfy_quant`), which `get_key_weight` cannot resolve, so
# `get_key_patches` raises AttributeError on every such model (ComfyUI's own merge nodes too).

def key_patches(patcher, filter_prefix=None) -> dict:
    """`patcher.get_key_patches(filter_prefix)`; for a model with quantized layers, the same entries
    (`[(weight, convert_func), *patches]`, the weight from `backup`/`hook_backup` when patched) built the way
    ComfyUI builds them, without the keys that belong to a quantized weight (its scale and config)."""
    try:
        return _without_object_patches(patcher, patcher.get_key_patches(filter_prefix))
    except AttributeError:
        pass
    from comfy.quant_ops import QuantizedTensor

    out = {}
    for k in patcher.model_state_dict(filter_prefix):
        try:
            weight, _set, convert = comfy.model_patcher.get_key_weight(patcher.model, k)
        except AttributeError:
            layer = comfy.utils.get_attr(patcher.model, k.rsplit(".", 1)[0])
            if isinstance(getattr(layer, "weight", None), QuantizedTensor):
                continue  # part of that layer's quantized weight
            raise
        if k in patcher.backup:
            weight = patcher.backup[k].weight
        if k in patcher.hook_backup:
            weight = patcher.hook_backup[k][0]
        if convert is None:
            convert = lambda a, **kwargs: a  # noqa: E731 - as ComfyUI's own identity conversion
        out[k] = [(weight, convert)] + list(patcher.patches.get(k, []))
    return out


# ---- keys ComfyUI's load path never patches -----------------------------------------------------------
# Read from ComfyUI 0.33.0 and 0.3.75 (`ModelPatcher._load_list`, which `load` walks to patch weights): a
# module's own parameters are patched only when none of its sub-modules holds parameters, and buffers never.
# Such keys (SD3's `pos_embed`, Wan's `modulation`, AuraFlow's `register_tokens`, LTXV's `scale_shift_table`)
# are merged in the live model by an object patch (`unpatchable`); `patch_model` sets each object patch with
# `comfy.utils.set_attr` and keeps what it replaced in `object_patches_backup` until `unpatch_model`.

_REACHED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def load_path_keys(patcher) -> frozenset:
    """The keys (relative to `patcher.model`) whose patches ComfyUI's load path applies, as its own
    `_load_list` lists them: entries end with (module name, module, that module's patched parameter names).
    Cached per model (its module tree does not change)."""
    model = patcher.model
    reached = _REACHED.get(model)
    if reached is None:
        keys = set()
        for entry in patcher._load_list():
            name, params = entry[-3], entry[-1]
            if not isinstance(name, str):
                raise TypeError(f"ModelPatcher._load_list entries no longer end with (name, module, params): "
                                f"{type(name).__name__} where the module name was")
            keys.update(f"{name}.{p}" if name else p for p in params)
        reached = _REACHED[model] = frozenset(keys)
    return reached


def unpatchable_keys(patcher, keys) -> list:
    """Those of `keys` that ComfyUI's load path never patches (see `load_path_keys`)."""
    reached = load_path_keys(patcher)
    return [k for k in keys if k not in reached]


def unobjected_weight(patcher, key: str):
    """`key`'s tensor as the model holds it without this patcher's object patch (the one `patch_model`
    replaced while it is applied)."""
    backup = getattr(patcher, "object_patches_backup", None) or {}
    return backup[key] if key in backup else comfy.utils.get_attr(patcher.model, key)


def _without_object_patches(patcher, entries: dict) -> dict:
    """`get_key_patches` entries whose weight is the one an applied object patch replaced, if any."""
    for k, old in (getattr(patcher, "object_patches_backup", None) or {}).items():
        if k in entries and isinstance(old, torch.Tensor):
            entries[k] = [(old, entries[k][0][1])] + list(entries[k][1:])
    return entries


def set_unreached_patch_lists(patcher, new_lists: dict) -> None:
    """Replaces the patch lists of keys the load path never patches, keeping `patches_uuid`: the loaded
    weights do not depend on them (their live value is an object patch)."""
    for key, patches in new_lists.items():
        if patches:
            patcher.patches[key] = [tuple(p) for p in patches]
        else:
            patcher.patches.pop(key, None)


def set_object_patch(patcher, key: str, value, marker: str) -> None:
    """Sets (value a tensor) or removes (None) the object patch of `key` made by this pack (`marker`, an
    attribute on the patch object); where `patch_model` has applied this patcher's object patches, the model
    gets the new value now too. A parameter gets an `nn.Parameter`, a buffer the tensor."""
    applied = key in patcher.object_patches_backup
    current = comfy.utils.get_attr(patcher.model, key)
    if value is None:
        if not getattr(patcher.object_patches.get(key), marker, False):
            return
        patcher.object_patches.pop(key)
        if applied:
            comfy.utils.set_attr(patcher.model, key, patcher.object_patches_backup.pop(key))
        return
    obj = torch.nn.Parameter(value, requires_grad=False) if isinstance(current, torch.nn.Parameter) else value
    setattr(obj, marker, True)
    patcher.add_object_patch(key, obj)
    if applied:
        live = obj if obj.device == current.device else (
            torch.nn.Parameter(value.to(current.device), requires_grad=False)
            if isinstance(obj, torch.nn.Parameter) else value.to(current.device))
        comfy.utils.set_attr(patcher.model, key, live)


def linked_type_problem(node_cls, received_types: dict) -> str | None:
    """ComfyUI's own check that each linked input receives its declared type, which ComfyUI skips for a node
    whose validate_inputs takes `input_types` (`execution.validate_inputs`, 0.33.0 and 0.3.75): the node then
    asks it here. Uses `comfy_execution.validation.validate_node_input` (both versions)."""
    from comfy_execution.validation import validate_node_input
    declared = {}
    for section in ("required", "optional"):
        declared.update(node_cls.INPUT_TYPES().get(section, {}))
    for name, received in received_types.items():
        spec = declared.get(name)
        if spec is None or not isinstance(spec[0], str):
            continue  # a combo's list of choices: ComfyUI checks the value, not a link type
        if not validate_node_input(received, spec[0]):
            return f"{name}: the link gives {received}, the input takes {spec[0]}"
    return None

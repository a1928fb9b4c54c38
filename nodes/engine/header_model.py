"""The model ComfyUI would build from a model file, known from the file's safetensors header alone.

The spec editor needs, for a connected model with no record, the blocks the merge will derive from its keys,
and those depend on the order of the model's keys (`merge_core.editor.model_blocks`), which a safetensors
header does not keep (the writer sorts its tensors). This runs ComfyUI's own diffusion-model detection
(as `comfy.sd.load_diffusion_model_state_dict` does: prefix, config from the shapes, diffusers MMDiT names)
on tensors that have the header's shapes and no data, and builds the detected model on the meta device: no
weight is read and no memory is taken, and the key order is the one the loaded model will have.
"""
from __future__ import annotations

import torch

import comfy.model_detection as detection
import comfy.utils

from ...merge_core.files.safetensors_stream import TORCH_DTYPE


def model_keys(header: dict) -> tuple[str | None, list[str] | None]:
    """(ComfyUI model config class name, keys of the model in its order: ``diffusion_model.…``, then
    ``model_sampling.…``) of the model ComfyUI builds from a file with this header ({name: {dtype, shape,
    ...}}); (None, None) when ComfyUI detects no model. Any exception of ComfyUI's detection is the caller's."""
    sd = {k: torch.empty(v["shape"], dtype=TORCH_DTYPE.get(v.get("dtype"), torch.float16), device="meta")
          for k, v in header.items()}
    prefix = detection.unet_prefix_from_state_dict(sd)
    inner = comfy.utils.state_dict_prefix_replace(sd, {prefix: ""}, filter_keys=True)
    if inner:
        sd = inner
    config = detection.model_config_from_unet(sd, "")
    if config is None:
        converted = detection.convert_diffusers_mmdit(sd, "")
        if converted is None:
            return None, None
        sd, config = converted, detection.model_config_from_unet(converted, "")
        if config is None:
            return None, None
    model = config.get_model(sd, "", device="meta")
    return type(config).__name__, list(model.state_dict().keys())

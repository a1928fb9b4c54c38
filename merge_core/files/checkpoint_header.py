"""A checkpoint's architecture from its safetensors header alone: the key names, without reading any tensor.

The editor asks this for every connected checkpoint; reading the JSON header only (`safetensors_stream.
read_header`, which refuses a header claiming an implausible size) keeps it instant on multi-gigabyte files.
"""
from __future__ import annotations

from ..arch.architectures import detect_architecture
from .safetensors_stream import read_header


def safetensors_keys(path: str) -> list[str]:
    """Tensor names of a .safetensors file, read from its JSON header only (no tensor data)."""
    header, _ = read_header(path)
    return list(header)


def detect_file(path: str) -> dict:
    """The architecture of a checkpoint file, from its key names; ``arch`` None when it cannot be told cheaply.

    ``reason`` never names the path: it is shown in the browser, which knows the checkpoint by name."""
    if not path.lower().endswith(".safetensors"):
        return {"arch": None, "label": None, "reason": "only .safetensors headers can be read without loading"}
    try:
        keys = safetensors_keys(path)
        a = detect_architecture(keys)
    except (OSError, ValueError) as e:
        return {"arch": None, "label": None, "reason": str(e).removeprefix(f"{path}: ")[:300]}
    return {"arch": a.name, "label": a.label, "reason": f"{len(keys)} keys"}

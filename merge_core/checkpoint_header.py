"""A checkpoint's architecture from its safetensors header alone: the key names, without reading any tensor.

The editor asks this for every connected checkpoint; reading the JSON header only keeps it instant on
multi-gigabyte files. A header that claims an implausible size is refused rather than read.
"""
from __future__ import annotations

import json
import struct

from .architectures import detect_architecture

MAX_HEADER_BYTES = 64 * 1024 * 1024  # a safetensors header claiming more than this is not trusted


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

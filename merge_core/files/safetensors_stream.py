"""Write a safetensors file one tensor at a time, so a merged checkpoint never exists whole in memory.

Why: the stock save builds the full state dict and serializes it in one buffer, so saving a merge needs the
sources, the merged copy and the serialized bytes at once (an SDXL merge was killed at 23.8 GB RSS). In a
safetensors file only the header depends on the whole set of tensors, and the header needs nothing but
names, dtypes and shapes, which are known before any merged weight is computed. So the header is written
first, then each tensor is computed by a callback, written and dropped before the next one is computed.

The bytes are the ones `safetensors.torch.save_file` writes for the same tensors: the same tensor order
(dtype from widest to narrowest, then name, which also keeps every tensor aligned to its element size),
the same compact JSON header padded with spaces to a multiple of 8 bytes, `__metadata__` first. The one
difference: safetensors writes the metadata entries in hash-map order, which changes from run to run; here
they are sorted, so the same inputs always give the same file.

The file is written under a temporary name next to the target and renamed at the end, so a failure never
leaves a truncated file that looks like a checkpoint.
"""
from __future__ import annotations

import ctypes
import json
import os
import struct
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import torch

# torch dtype -> (safetensors dtype code, bytes per element). The code order of safetensors' own Dtype enum
# (narrow to wide) decides the tensor order in the file: RANK below.
DTYPES: dict[torch.dtype, tuple[str, int]] = {
    torch.bool: ("BOOL", 1),
    torch.uint8: ("U8", 1),
    torch.int8: ("I8", 1),
    torch.float8_e5m2: ("F8_E5M2", 1),
    torch.float8_e4m3fn: ("F8_E4M3", 1),
    torch.int16: ("I16", 2),
    torch.float16: ("F16", 2),
    torch.bfloat16: ("BF16", 2),
    torch.int32: ("I32", 4),
    torch.float32: ("F32", 4),
    torch.float64: ("F64", 8),
    torch.int64: ("I64", 8),
}
RANK = {code: i for i, (code, _) in enumerate(DTYPES.values())}
TORCH_DTYPE = {code: dt for dt, (code, _) in DTYPES.items()}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own reader refuses larger headers


class StreamWriteError(ValueError):
    """A tensor the callback produced does not match what the header promised, or a bad plan."""


@dataclass(frozen=True)
class TensorPlan:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # byte offsets into the data section, as in the header
    end: int


@dataclass(frozen=True)
class FilePlan:
    """Everything about the file except the tensor bytes: the header and where each tensor goes."""
    header: bytes          # the 8-byte length plus the padded JSON
    tensors: tuple[TensorPlan, ...]  # in file order

    @property
    def order(self) -> list[str]:
        return [t.name for t in self.tensors]

    @property
    def file_size(self) -> int:
        return len(self.header) + (self.tensors[-1].end if self.tensors else 0)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _code(name: str, dtype: torch.dtype) -> str:
    if dtype not in DTYPES:
        valid = ", ".join(str(d).replace("torch.", "") for d in DTYPES)
        raise StreamWriteError(f"tensor '{name}': dtype {dtype} cannot be stored in safetensors here "
                               f"(valid: {valid})")
    return DTYPES[dtype][0]


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str] | None:
    if metadata is None:
        return None
    bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise StreamWriteError(f"metadata entries must map str to str; not: {', '.join(map(repr, bad))}")
    return {k: metadata[k] for k in sorted(metadata)}


def plan_file(layout: Mapping[str, tuple[torch.dtype, Iterable[int]]],
              metadata: Mapping[str, str] | None = None) -> FilePlan:
    """The header and tensor order for `layout` ({name: (dtype, shape)}), as safetensors would write them."""
    entries = []
    for name, (dtype, shape) in layout.items():
        if name == "__metadata__":
            raise StreamWriteError("'__metadata__' is reserved in safetensors and cannot name a tensor")
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise StreamWriteError(f"tensor '{name}': negative dimension in shape {list(shape)}")
        entries.append((name, dtype, shape, _code(name, dtype)))
    entries.sort(key=lambda e: (-RANK[e[3]], e[0]))
    header: dict = {}
    md = _check_metadata(metadata)
    if md is not None:
        header["__metadata__"] = md
    plans, offset = [], 0
    for name, dtype, shape, code in entries:
        size = _numel(shape) * DTYPES[dtype][1]
        plans.append(TensorPlan(name, dtype, shape, offset, offset + size))
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    if len(text) > MAX_HEADER_BYTES:
        raise StreamWriteError(f"header of {len(text)} bytes exceeds the safetensors limit of {MAX_HEADER_BYTES}")
    return FilePlan(struct.pack("<Q", len(text)) + text, tuple(plans))


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    """A zero-copy view of a contiguous CPU tensor's bytes (little-endian machine order, as safetensors)."""
    n = t.numel() * t.element_size()
    if n == 0:
        return memoryview(b"")
    return memoryview((ctypes.c_char * n).from_address(t.data_ptr())).cast("B")


def _checked(plan: TensorPlan, t) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise StreamWriteError(f"tensor '{plan.name}': the callback returned {type(t).__name__}, not a tensor")
    if t.dtype != plan.dtype or tuple(t.shape) != plan.shape:
        raise StreamWriteError(
            f"tensor '{plan.name}': the header says {plan.dtype} {list(plan.shape)} but the callback returned "
            f"{t.dtype} {list(t.shape)}")
    return t.detach().to("cpu").contiguous()


def write_planned(path: str, plan: FilePlan, produce: Callable[[str], torch.Tensor],
                  on_tensor: Callable[[int, str], None] | None = None) -> None:
    """Writes `plan`'s header, then `produce(name)` for each tensor in file order; each is dropped once written.

    `on_tensor(index, name)` is called after each tensor is written (progress bars, memory probes)."""
    tmp = f"{path}.partial-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(plan.header)
            for i, tp in enumerate(plan.tensors):
                t = _checked(tp, produce(tp.name))
                f.write(_tensor_bytes(t))
                del t
                if on_tensor is not None:
                    on_tensor(i, tp.name)
            if f.tell() != plan.file_size:  # cannot happen when every tensor matched its plan; cheap to check
                raise StreamWriteError(f"wrote {f.tell()} bytes, expected {plan.file_size}")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_streaming(path: str, layout: Mapping[str, tuple[torch.dtype, Iterable[int]]],
                    produce: Callable[[str], torch.Tensor], metadata: Mapping[str, str] | None = None,
                    on_tensor: Callable[[int, str], None] | None = None) -> FilePlan:
    """Plans the file for `layout` ({name: (dtype, shape)}) and writes it; returns the plan (tensor order)."""
    plan = plan_file(layout, metadata)
    write_planned(path, plan, produce, on_tensor)
    return plan


def save_dict(path: str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """`safetensors.torch.save_file` for an in-memory dict, through the streaming writer (tests, small files)."""
    layout = {k: (t.dtype, tuple(t.shape)) for k, t in tensors.items()}
    write_streaming(path, layout, tensors.__getitem__, metadata)


def read_header(path: str) -> tuple[dict, dict[str, str]]:
    """({tensor name: {dtype, shape, data_offsets}}, metadata) of a safetensors file, reading the header only."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise ValueError(f"{path}: implausible safetensors header length {n}")
        raw = f.read(n)
    if len(raw) != n:
        raise ValueError(f"{path}: truncated safetensors header")
    header = json.loads(raw.decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is not an object")
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata

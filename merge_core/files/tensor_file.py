"""Read a safetensors file one tensor at a time with plain file reads, every header entry checked first.

Why plain reads and not `safetensors.safe_open`: safe_open memory-maps the file, and the pages of a mapping
count as resident memory while they are mapped and touched, so a merge of two 24 GB files would show (and,
under memory pressure, hold) tens of GB. Here each tensor is read into a buffer of its own size with
`os.pread`, turned into a tensor without a copy, and dropped by the caller when merged and written. After each
read the kernel is asked to read the tensor stored next into the page cache (read-ahead), so that the disk
works while the caller merges.

Checked when the file is opened, so that a bad file stops before anything is written: the header is JSON
of the documented shape; every dtype is known; each tensor's byte range equals its dtype size times its
element count, lies inside the file, and overlaps no other. A file that is shorter than its header says
(truncated) or a header that lies about offsets or sizes gives a `TensorFileError` naming the file and the
tensor.

Quantized weights (ComfyUI's formats) are read as float32 values (`read_float32`), see `dequantize_plan`.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass

import torch

from .safetensors_stream import DTYPES, MAX_HEADER_BYTES, TORCH_DTYPE


class TensorFileError(ValueError):
    """A safetensors file that cannot be read as it claims: the message names the file and the tensor."""


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # absolute byte offsets in the file
    end: int


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# ComfyUI's quantized layouts, as files hold them. A layer `L` quantized:
#   comfy_quant: L.weight (fp8), L.weight_scale (float32 scalar), L.comfy_quant (uint8 JSON {"format": ...}),
#                optionally L.input_scale;
#   scaled fp8:  a top-level `scaled_fp8` marker, L.weight (fp8), L.scale_weight (float32), optionally
#                L.scale_input.
# The weight's values are `weight.float() * scale` (a per-tensor scale); every other companion key is
# metadata of the quantized layer and is not a weight of the model.
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
QUANT_FORMATS = ("float8_e4m3fn", "float8_e5m2")
# How far ahead of the last read the kernel is asked to read a source (page cache, not RSS): long runs of each
# file rather than one tensor from each source in turn.
READ_AHEAD_BYTES = 256 * 2 ** 20
COMPANIONS = ("weight_scale", "comfy_quant", "input_scale", "pre_quant_scale", "weight_scale_2",
              "scale_weight", "scale_input")
SCALED_FP8_MARKER = "scaled_fp8"


class TensorFile:
    """One safetensors file, header checked; `read(name)` reads one tensor."""

    def __init__(self, path: str, label: str | None = None):
        self.path = path
        self.label = label or os.path.basename(path)
        try:
            self.size = os.path.getsize(path)
            with open(path, "rb") as f:
                head = f.read(8)
                if len(head) != 8:
                    raise TensorFileError(f"{self.label}: {self.size} bytes, too short for a safetensors file")
                (n,) = struct.unpack("<Q", head)
                if n > MAX_HEADER_BYTES or 8 + n > self.size:
                    raise TensorFileError(f"{self.label}: header length {n} does not fit in the file's "
                                          f"{self.size} bytes (truncated or not a safetensors file)")
                raw = f.read(n)
        except FileNotFoundError:
            raise TensorFileError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise TensorFileError(f"{path}: is a folder, not a safetensors file") from None
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TensorFileError(f"{self.label}: header is not valid JSON ({e})") from None
        if not isinstance(header, dict):
            raise TensorFileError(f"{self.label}: header is not a JSON object")
        self.metadata = header.pop("__metadata__", None) or {}
        self.data_start = 8 + n
        self.entries: dict[str, TensorEntry] = {}
        for name, info in header.items():
            self.entries[name] = self._entry(name, info)
        self._check_overlaps()
        self._advised_to = 0  # the file offset read-ahead has been asked up to
        self._fd = None
        self._reused: torch.Tensor | None = None  # read_reused's buffer

    def _entry(self, name: str, info) -> TensorEntry:
        where = f"{self.label}: tensor '{name}'"
        if not isinstance(info, dict):
            raise TensorFileError(f"{where}: header entry is not an object")
        code, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if code not in TORCH_DTYPE:
            raise TensorFileError(f"{where}: unknown dtype {code!r} (valid: {', '.join(TORCH_DTYPE)})")
        if (not isinstance(shape, list) or any(not isinstance(d, int) or d < 0 for d in shape)
                or not isinstance(offsets, list) or len(offsets) != 2
                or any(not isinstance(o, int) or o < 0 for o in offsets)):
            raise TensorFileError(f"{where}: malformed shape {shape!r} or data_offsets {offsets!r}")
        dtype = TORCH_DTYPE[code]
        begin, end = offsets
        expected = _numel(shape) * DTYPES[dtype][1]
        if end - begin != expected:
            raise TensorFileError(f"{where}: data_offsets {offsets} hold {end - begin} bytes but {code} "
                                  f"{shape} needs {expected}")
        if self.data_start + end > self.size:
            raise TensorFileError(f"{where}: bytes {self.data_start + begin}..{self.data_start + end} lie past "
                                  f"the end of the file ({self.size} bytes): the file is truncated")
        return TensorEntry(name, dtype, tuple(shape), self.data_start + begin, self.data_start + end)

    def _check_overlaps(self) -> None:
        spans = sorted((e.begin, e.end, e.name) for e in self.entries.values() if e.end > e.begin)
        for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
            if b1 < e0:
                raise TensorFileError(f"{self.label}: tensor '{n1}' overlaps tensor '{n0}' (header offsets lie)")

    def keys(self):
        return self.entries.keys()

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name].shape

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def read(self, name: str) -> torch.Tensor:
        """The tensor as stored (its own dtype), in a fresh CPU buffer."""
        e = self.entries[name]
        buf = bytearray(e.end - e.begin)
        self._read_bytes(e, memoryview(buf))
        if e.end == e.begin:
            return torch.empty(e.shape, dtype=e.dtype)
        return torch.frombuffer(buf, dtype=e.dtype).reshape(e.shape)

    def read_reused(self, name: str) -> torch.Tensor:
        """The tensor as stored, flat, in this file's one reused buffer: valid until the next `read_reused`.
        A merge that converts each tensor in small pieces reads into memory that is already resident, instead
        of a fresh buffer whose pages the kernel must first zero and map (the buffer grows to the largest
        tensor read and stays: one tensor's stored bytes per source)."""
        e = self.entries[name]
        n = e.end - e.begin
        if n == 0:
            return torch.empty(0, dtype=e.dtype)
        if self._reused is None or self._reused.numel() < n:
            self._reused = torch.empty(n, dtype=torch.uint8)
        self._read_bytes(e, memoryview(self._reused.numpy())[:n])
        return self._reused[:n].view(e.dtype)

    def _read_bytes(self, e: TensorEntry, view: memoryview) -> None:
        n, done = e.end - e.begin, 0
        fd = self._descriptor()
        while done < n:
            got = os.preadv(fd, [view[done:]], e.begin + done)
            if got <= 0:
                raise TensorFileError(f"{self.label}: tensor '{e.name}': read {done} of {n} bytes (the file "
                                      "changed or was truncated while merging)")
            done += got
        self._read_ahead(e.end)

    def _read_ahead(self, offset: int) -> None:
        """Asks the kernel to read the next READ_AHEAD_BYTES after `offset` into the page cache
        (POSIX_FADV_WILLNEED) and returns at once, once per half window: the disk reads long runs of each file
        while the caller merges, instead of short reads alternating between the sources (page cache, not this
        process's memory). Nothing where the call is not supported."""
        if offset + READ_AHEAD_BYTES // 2 <= self._advised_to or not hasattr(os, "posix_fadvise"):
            return
        start = max(offset, self._advised_to)
        self._advised_to = offset + READ_AHEAD_BYTES
        try:
            os.posix_fadvise(self._descriptor(), start, self._advised_to - start, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._reused = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- quantized weights -------------------------------------------------------------------------------

    def scale_of(self, name: str) -> str | None:
        """The name of the per-tensor scale of quantized weight `name`, or None when it is plain."""
        if not name.endswith(".weight") or self.entries[name].dtype not in FP8_DTYPES:
            return None
        layer = name[:-len("weight")]
        for scale in ("weight_scale", "scale_weight"):
            if layer + scale in self.entries:
                return layer + scale
        return None

    def quant_format(self, name: str) -> str | None:
        """The comfy_quant format named by weight `name`'s layer config, if it has one."""
        conf = name[:-len("weight")] + "comfy_quant"
        if not name.endswith(".weight") or conf not in self.entries:
            return None
        try:
            return json.loads(bytes(self.read(conf).tolist()).decode("utf-8")).get("format")
        except (ValueError, AttributeError) as e:
            raise TensorFileError(f"{self.label}: '{conf}' is not the JSON config of a quantized layer ({e})") from None

    def companions(self) -> set:
        """The keys that are parts of a quantized layer other than its weight (scales, configs, markers)."""
        out = {k for k in self.entries if k == SCALED_FP8_MARKER}
        for name in self.entries:
            if self.scale_of(name) is not None or self.quant_format(name) is not None:
                layer = name[:-len("weight")]
                out |= {layer + c for c in COMPANIONS if layer + c in self.entries}
        return out

    def read_float32(self, name: str) -> torch.Tensor:
        """The tensor's values as float32 (a fresh tensor the caller may write): a quantized weight
        dequantized (`weight.float() * scale`); other formats of ComfyUI's mixed precision are refused."""
        scale = self.dequantize_scale(name)
        t = self.read(name).to(torch.float32)
        if scale is not None:
            t.mul_(scale)
        return t

    def dequantize_scale(self, name: str) -> torch.Tensor | None:
        """The float32 scalar a quantized weight's stored values are multiplied by (None: plain values); a
        format the file merge cannot dequantize, or a scale that is not per tensor, is refused."""
        fmt = self.quant_format(name)
        if fmt is not None and fmt not in QUANT_FORMATS:
            raise TensorFileError(f"{self.label}: tensor '{name}' is quantized as {fmt!r}, which the file merge "
                                  f"cannot dequantize (it reads {', '.join(QUANT_FORMATS)}); merge it in "
                                  "ComfyUI with Elemental Merge, which uses ComfyUI's own dequantization")
        scale = self.scale_of(name)
        if scale is None:
            return None
        s = self.read(scale).to(torch.float32)
        if s.numel() != 1:
            raise TensorFileError(f"{self.label}: '{scale}' holds {s.numel()} values; the file merge reads "
                                  "per-tensor scales only")
        return s.reshape(())

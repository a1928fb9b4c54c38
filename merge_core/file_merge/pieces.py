"""One output tensor of a file merge computed in pieces that stay in the CPU's cache.

Computed whole, a key of a three-source Add difference makes seven full-size temporaries (each source as
float32, the merged weight, its casts), each a fresh allocation whose pages the kernel zeroes and maps, and
every pass of the arithmetic streams through main memory: on a 2-core machine that, not the disk, bounded the
merge. Here each source's stored bytes are read into that source's one reused buffer
(`TensorFile.read_reused`), and the key is converted, merged and cast a piece at a time into reused float32
buffers (merge_core/merge/pieces.py: why pieces, and their size), straight into the output tensor. Only keys
whose merged elements each depend on the sources' elements at the same position are computed so
(`key_compute.computes_by_element`): every element goes through the same float32 operations as in the
whole-key merge, so the bits are those of the live merge's save.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..merge import pieces as piece_size
from ..merge.key_compute import b_equals_c_keeps_a, piece_merger

# (stored values, flat, in the source's reused buffer; the float32 scale of a quantized weight or None)
Stored = tuple[torch.Tensor, torch.Tensor | None]


class PieceBuffers:
    """The float32 piece buffers of one merge, one per source (used by one thread at a time)."""

    def __init__(self):
        self._buffers: dict[str, torch.Tensor] = {}

    def float32(self, name: str, stored: Stored, begin: int, end: int) -> torch.Tensor:
        """Source `name`'s elements [begin, end) as float32 (`weight.float() * scale` for a quantized one), in
        its reused buffer."""
        values, scale = stored
        piece = self._buffer(name, torch.float32)[:end - begin].copy_(values[begin:end])
        return piece if scale is None else piece.mul_(scale)

    def held(self, piece: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`piece.to(dtype)` (the rounding to the dtype a live ComfyUI holds the weight in) in a reused buffer."""
        return self._buffer(f"held {dtype}", dtype)[:piece.numel()].copy_(piece)

    def _buffer(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        buf = self._buffers.get(name)
        if buf is None:
            buf = self._buffers[name] = torch.empty(piece_size.PIECE_ELEMENTS, dtype=dtype)
        return buf


def merged_in_pieces(work, stored: Callable[[str], Stored], out: torch.Tensor, held: torch.dtype | None,
                     buffers: PieceBuffers, b_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Writes the key's merged values into `out` (its final dtype and shape) and returns it. `work`: the key's
    KeyWork (None: A's values, converted only); `stored(name)`: a source's stored values (read once per key);
    `held`: the dtype a live ComfyUI holds the weight in (rounded to it before the cast to `out`'s dtype)."""
    flat = out.view(-1)
    a = stored("a")
    if work is not None and b_equals_c_keeps_a(work):
        b, c = stored("b"), stored("c")
        if all(torch.equal(buffers.float32("b", b, i, j), buffers.float32("c", c, i, j))
               for i, j in piece_size.spans(flat.numel())):
            work = None

    merge = piece_merger(work, b_dtype) if work is not None else None
    with torch.no_grad():
        for begin, end in piece_size.spans(flat.numel()):
            weight = buffers.float32("a", a, begin, end)
            if merge is not None:
                weight = merge(weight, lambda name, index: buffers.float32(name, stored(name), begin, end))
            flat[begin:end].copy_(weight if held is None else buffers.held(weight, held))
    return out

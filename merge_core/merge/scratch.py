"""Key-size temporaries that fault in cheaply.

A new tensor's pages are zeroed by the kernel on first write, one 4 KiB page at a time: on this project's
2-core VM, writing 26 MB of fresh float32 in pieces on one thread took 15 ms, against 4.2 ms into memory
already touched, more than the merge formula itself. Memory the kernel backs with 2 MiB pages (madvise
MADV_HUGEPAGE, honoured where transparent huge pages are `always` or `madvise`, as on most Linux systems)
took 7 ms. Where that is not available (another OS, a GPU, a small tensor) a temporary is torch.empty.
"""
from __future__ import annotations

import ctypes
import mmap

import torch

HUGE_PAGE_MIN_BYTES = 4 << 20  # smaller temporaries gain nothing from 2 MiB pages


def _huge_page_buffer(nbytes: int):
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return None
    try:
        buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        buffer.madvise(mmap.MADV_HUGEPAGE)
    except (OSError, ValueError, AttributeError):
        return None
    return buffer


def scratch_tensor(shape, dtype: torch.dtype) -> torch.Tensor:
    """A new contiguous CPU tensor, contents undefined; from HUGE_PAGE_MIN_BYTES on, backed by 2 MiB pages
    where the system gives them. The memory is returned when the tensor is freed."""
    shape = torch.Size(shape)
    nbytes = shape.numel() * dtype.itemsize
    if nbytes >= HUGE_PAGE_MIN_BYTES:
        buffer = _huge_page_buffer(nbytes)
        if buffer is not None:
            return torch.frombuffer(buffer, dtype=dtype).view(shape)
    return torch.empty(shape, dtype=dtype)


def scratch_like(t: torch.Tensor) -> torch.Tensor:
    """A new contiguous tensor of t's shape, dtype and device, contents undefined (`scratch_tensor` on the
    CPU)."""
    if t.device.type == "cpu":
        return scratch_tensor(t.shape, t.dtype)
    return torch.empty_like(t, memory_format=torch.contiguous_format)


_MALLOC_TRIM = []  # glibc's malloc_trim, or None, once looked up


def return_freed_memory() -> None:
    """Hands the memory freed so far back to the system (glibc's malloc_trim; nothing elsewhere).

    glibc serves blocks below its mmap threshold (which grows with each large block freed, up to 32 MB) from
    its heap and keeps them there when freed; the varied temporaries of a model-wide pass fragment it, and
    the process's RSS then grows with every key (a cosine first pass over SDXL: 0.5 -> 4.2 GiB)."""
    if not _MALLOC_TRIM:
        try:
            _MALLOC_TRIM.append(ctypes.CDLL("libc.so.6").malloc_trim)
        except (OSError, AttributeError):
            _MALLOC_TRIM.append(None)
    if _MALLOC_TRIM[0] is not None:
        _MALLOC_TRIM[0](0)

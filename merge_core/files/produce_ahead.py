"""Tensors for a streaming write, each computed on a worker thread while the previous one is written.

A file merge spends its time reading and converting sources (`produce`) and writing the output; done one after
the other on a 2-core machine, each waits for the other. `ProducedAhead` computes the next tensor of the
file's order on one worker thread while the caller writes the current one (torch's kernels and the file reads
and writes release the GIL), so at most two tensors' results are alive at a time. `produce` runs on the worker
thread only, one call at a time, in file order: it needs no locking of its own.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Sequence

import torch


class ProducedAhead:
    """``produce`` for the names of ``order``, asked for in that order: each call returns the tensor computed
    while the previous one was being written and starts the next. Use as a context manager (the worker stops
    at the end; on an error the pending tensor is dropped)."""

    def __init__(self, order: Sequence[str], produce: Callable[[str], torch.Tensor]):
        self._order = list(order)
        self._produce = produce
        self._next = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="elemental-produce")
        self._pending: Future | None = None
        self._start_next()

    def _start_next(self) -> None:
        if self._next < len(self._order):
            self._pending = self._pool.submit(self._produce, self._order[self._next])
        else:
            self._pending = None

    def __call__(self, name: str) -> torch.Tensor:
        if self._pending is None or self._order[self._next] != name:
            expected = self._order[self._next] if self._next < len(self._order) else "nothing"
            raise RuntimeError(f"tensors asked out of order: '{name}', expected {expected}")
        value = self._pending.result()
        self._next += 1
        self._start_next()
        return value

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        self._pool.shutdown(wait=True)
        self._pending = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

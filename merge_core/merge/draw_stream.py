"""A random method's uniform draws, drawn ahead on a helper thread.

torch's seeded CPU generator costs about 3 ns per element (it is serial: one Mersenne Twister), more than
everything else DARE does to the element. The draws depend on nothing but the generator, so a helper thread
can draw them while the merge loads the models and applies the earlier pieces' drops on the other core.
The helper draws exactly the pieces the merge takes, in the same order, from the one generator: the values
are those of drawing on the merge's own thread, and so the same as one draw of the whole key.

At most DRAWS_AHEAD pieces wait in the queue (pieces of merge_core/merge/pieces.py: 64 x 128 KiB on the CPU).
"""
from __future__ import annotations

import queue
import threading
from typing import Iterable

import torch

DRAWS_AHEAD = 64
_POLL_S = 0.05


class DrawStream:
    """Uniform float32 draws in [0, 1) of the given sizes, in order, from `generator` (which the stream then
    owns). Use as a context manager: leaving it stops the helper, whether or not every piece was taken."""

    def __init__(self, generator: torch.Generator, sizes: Iterable[int]):
        self._queue: queue.Queue = queue.Queue(maxsize=DRAWS_AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._draw_all, args=(generator, list(sizes)),
                                        name="elemental-merge draws", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _draw_all(self, generator: torch.Generator, sizes: list[int]) -> None:
        try:
            for n in sizes:
                if not self._put(torch.rand(n, generator=generator, dtype=torch.float32)):
                    return
        except BaseException as error:  # handed to the merge's thread, which raises it
            self._put(error)

    def take(self, like: torch.Tensor) -> torch.Tensor:
        """The next piece's draws, shaped and placed as `like` (which must have the size drawn)."""
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item.view(like.shape).to(like.device)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "DrawStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

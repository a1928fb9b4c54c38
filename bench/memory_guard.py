"""A sampler thread that watches a child process the bench started, shared by bench_save and bench_file_merge.

`with MemoryGuard(pid, guard) as watch:` samples the machine's MemAvailable every `interval` seconds and
SIGKILLs the process group `pid` leads once it falls below `guard` bytes (0: never), so that on this shared
machine the bench's own child dies before anything else does. With `track_rss=True` it also keeps the largest
VmRSS of `pid` it saw: what is left to report when the process dies (its VmHWM goes with it). Afterwards:
`watch.min_available`, `watch.max_rss` (0 unless tracked), `watch.killed`.

No torch here: bench_file_merge's parent must stay small (a child's ru_maxrss starts from its parent's RSS).
"""
from __future__ import annotations

import os
import signal
import threading

from devkit.proc_memory import available_bytes, rss_bytes


class MemoryGuard:
    def __init__(self, pid: int, guard: int, interval: float = 0.1, track_rss: bool = False):
        self.pid, self.guard, self.interval, self.track_rss = pid, guard, interval, track_rss
        self.max_rss, self.min_available, self.killed = 0, available_bytes(), False

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            if self.track_rss:
                try:
                    self.max_rss = max(self.max_rss, rss_bytes(self.pid))
                except (OSError, KeyError):
                    return  # the process is gone
            self.min_available = min(self.min_available, available_bytes())
            if self.guard and self.min_available < self.guard and not self.killed:
                self.killed = True
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    return

    def __enter__(self) -> "MemoryGuard":
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        self._thread.join()
        return False

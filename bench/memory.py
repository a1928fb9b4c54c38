"""Peak resident memory of this process over a phase, with no sampling thread.

Linux keeps the high-water mark of RSS (VmHWM) and resets it to the current RSS when "5" is written to
/proc/self/clear_refs, so a phase's true peak is exact and costs nothing while it runs (a sampler thread
would compete for the GIL with the per-key Python loops being timed). Where that reset is unavailable the
fallback samples RSS with psutil in a thread.
"""
from __future__ import annotations

import threading
import time


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


def _can_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False


class PeakRSS:
    """``with PeakRSS() as p: ...`` then p.start / p.peak (bytes): RSS at entry and the highest RSS inside."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.start = self.peak = 0
        self._stop = None
        self.method = "VmHWM" if _can_reset() else "psutil"

    def __enter__(self):
        self.start = rss_bytes()
        if self.method == "VmHWM":
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        else:
            import psutil

            proc, self.peak, self._stop = psutil.Process(), self.start, threading.Event()

            def sample():
                while not self._stop.is_set():
                    self.peak = max(self.peak, proc.memory_info().rss)
                    time.sleep(self.interval)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.method == "VmHWM":
            self.peak = max(_status_kib("VmHWM") * 1024, rss_bytes())
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, rss_bytes())
        return False

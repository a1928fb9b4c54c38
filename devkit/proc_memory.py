"""Peak resident memory of processes, from /proc (Linux), for tests that must prove what they fit in.

psutil is not a dependency, so this reads /proc/<pid>/status (VmHWM: the peak RSS since the process started or
since the peak was last reset) and resets the peak by writing "5" to /proc/<pid>/clear_refs (Linux >= 4.0,
own processes). A test resets the server's and its own peak before it runs and reads both after: their sum
bounds the peak of the two processes together from above.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def peak_rss_bytes(pid: int | None = None) -> int:
    """VmHWM of `pid` (default: this process) in bytes."""
    return _status_kib(pid or os.getpid(), "VmHWM") * 1024


def rss_bytes(pid: int | None = None) -> int:
    return _status_kib(pid or os.getpid(), "VmRSS") * 1024


def reset_peak(pid: int | None = None) -> bool:
    """Sets VmHWM back to the current RSS; False where the kernel does not allow it (then peaks are since start)."""
    try:
        with open(f"/proc/{pid or os.getpid()}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def available_bytes() -> int:
    """MemAvailable of the machine, in bytes (what `free` calls available)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise KeyError("MemAvailable not in /proc/meminfo")


@dataclass
class PeakProbe:
    """Wall time and summed peak RSS of a set of processes over a span of code (`with PeakProbe([pid]) as p`)."""
    pids: list
    seconds: float = 0.0
    peaks: dict = None
    exact: bool = True

    def __enter__(self):
        self.exact = all([reset_peak(p) for p in self.pids])
        self._t = time.time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.time() - self._t
        self.peaks = {p: peak_rss_bytes(p) for p in self.pids}
        return False

    @property
    def total_gib(self) -> float:
        return sum(self.peaks.values()) / 2**30

    def line(self, label: str) -> str:
        parts = ", ".join(f"pid {p}: {v / 2**30:.2f} GiB" for p, v in self.peaks.items())
        note = "" if self.exact else " (peaks since process start: reset not allowed)"
        return f"{label}: {self.seconds:.1f} s, peak RSS {self.total_gib:.2f} GiB ({parts}){note}"

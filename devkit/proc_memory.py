"""Peak resident memory of processes, from /proc (Linux), for tests that must prove what they fit in.

psutil is not a dependency, so this reads /proc/<pid>/status (VmHWM: the peak RSS since the process started or
since the peak was last reset) and resets the peak by writing "5" to /proc/<pid>/clear_refs (Linux >= 4.0,
own processes). A test resets the server's and its own peak before it runs and reads both after: their sum
bounds the peak of the two processes together from above.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field


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


def anon_rss_bytes(pid: int | None = None) -> int:
    """RssAnon: the resident memory that is not a clean file page (what the OOM killer weighs)."""
    return _status_kib(pid or os.getpid(), "RssAnon") * 1024


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
    """Wall time and peak memory of a set of processes over a span of code (`with PeakProbe([pid]) as p`).

    Two peaks per process: VmHWM (all resident pages, file-backed ones included: a model file that ComfyUI
    maps while loading counts in full until it is unmapped, although the kernel can drop those pages at any
    time) and the largest RssAnon seen by a sampler thread every `interval` seconds (anonymous memory only;
    a peak shorter than the interval can be missed)."""
    pids: list
    interval: float = 0.1
    seconds: float = 0.0
    peaks: dict = None
    anon_peaks: dict = field(default_factory=dict)
    exact: bool = True

    def _sample(self):
        while not self._stop.wait(self.interval):
            for p in self.pids:
                try:
                    self.anon_peaks[p] = max(self.anon_peaks.get(p, 0), anon_rss_bytes(p))
                except (OSError, KeyError):
                    pass

    def __enter__(self):
        self.exact = all([reset_peak(p) for p in self.pids])
        self.anon_peaks = {p: anon_rss_bytes(p) for p in self.pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._t = time.time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.time() - self._t
        self._stop.set()
        self._thread.join()
        self.peaks = {p: peak_rss_bytes(p) for p in self.pids}
        return False

    @property
    def total_gib(self) -> float:
        return sum(self.peaks.values()) / 2**30

    @property
    def anon_gib(self) -> float:
        return sum(self.anon_peaks.values()) / 2**30

    def line(self, label: str) -> str:
        parts = ", ".join(f"pid {p}: {v / 2**30:.2f}/{self.anon_peaks.get(p, 0) / 2**30:.2f} GiB"
                          for p, v in self.peaks.items())
        note = "" if self.exact else " (VmHWM since process start: reset not allowed)"
        return (f"{label}: {self.seconds:.1f} s, peak RSS {self.total_gib:.2f} GiB, peak anonymous "
                f"{self.anon_gib:.2f} GiB (VmHWM/RssAnon per process: {parts}){note}")

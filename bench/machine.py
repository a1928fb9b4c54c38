"""What a benchmark ran on, for its results: the CPU model, cores, RAM and load, read once from /proc."""
from __future__ import annotations

import os
import platform

GIB = 2 ** 30


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def ram_gib() -> float:
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) * 1024 / GIB  # MemTotal comes first


def describe() -> str:
    """One line: CPU, cores, RAM, GPU (these benchmarks run ComfyUI with --cpu) and the load average now."""
    load = os.getloadavg()
    return (f"{cpu_model()}, {os.cpu_count()} cores, {ram_gib():.1f} GiB RAM, no GPU ({platform.machine()}), "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

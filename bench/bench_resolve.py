"""Times resolve_ratios on the built-in SD1 and SDXL key lists, cold (every cache emptied) and cached.

    python bench/bench_resolve.py [--repeat N] [--smoke]

Prints one line per figure: arch, case, keys, milliseconds (best and median of N for cached). `--smoke`
(CI's bench smoke): one repetition of each.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from merge_core import (ARCHITECTURES, clear_caches, parse_block_weights, parse_spec,  # noqa: E402
                        resolve_ratios)

SPEC = """OUT03 OUT04 OUT05:attn2 attn1.to_out:0.5
OUT06:attn:0.5, OUT06:attn2.to_k:0.2
NOT OUT04:attn:1
OUT05:NOT attn proj:0.2
IN01-IN05:proj_in proj_out:0.35"""


def once(arch: str, keys: list[str]) -> float:
    t = time.perf_counter()
    bw = parse_block_weights("GRAD_V", arch)
    spec = parse_spec(SPEC, arch)
    resolve_ratios(keys, arch, 0.5, bw, spec)
    return (time.perf_counter() - t) * 1000


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--smoke", action="store_true", help="one repetition (checks that it runs)")
    a = p.parse_args(argv)
    if a.smoke:
        a.repeat = 1
    for arch in ("sd1", "sdxl"):
        keys = ARCHITECTURES[arch].default_keys()
        clear_caches()
        cold = once(arch, keys)
        print(f"{arch:<5} cold    keys={len(keys):<5} {cold:8.2f} ms  (parse + key map + selections, caches empty)")
        times = [once(arch, keys) for _ in range(a.repeat)]
        print(f"{arch:<5} cached  keys={len(keys):<5} {min(times):8.2f} ms best, {statistics.median(times):.2f} ms "
              f"median of {a.repeat}")
        nospec = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            resolve_ratios(keys, arch, 0.5)
            nospec.append((time.perf_counter() - t) * 1000)
        print(f"{arch:<5} alpha   keys={len(keys):<5} {min(nospec):8.2f} ms best (no block weights, no spec)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

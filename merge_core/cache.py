"""Every memo of merge_core in one index, each behind functools.lru_cache, with one `clear_caches()`.

The resolver runs on every queue of a workflow, so what only depends on its inputs is kept: key lists and
presets read from disk, key -> block and canonical names, parsed specs, per-key-set indexes and element
tables. Each is a pure function of hashable arguments decorated with `cached`, which registers it here so
that tests and benchmarks can start cold without knowing (or reaching into) any module's private state.
"""
from __future__ import annotations

from functools import lru_cache

_REGISTRY: list = []


def cached(maxsize: int | None = 128):
    """`functools.lru_cache(maxsize)`, registered so that `clear_caches()` empties it."""
    def wrap(fn):
        memo = lru_cache(maxsize=maxsize)(fn)
        _REGISTRY.append(memo)
        return memo
    return wrap


def clear_caches() -> None:
    """Empties every merge_core cache (the next call of anything recomputes from scratch)."""
    for memo in _REGISTRY:
        memo.cache_clear()


def cache_info() -> dict[str, tuple]:
    """`module.function` -> its lru_cache statistics (hits, misses, maxsize, currsize)."""
    return {f"{m.__module__}.{m.__qualname__}": tuple(m.cache_info()) for m in _REGISTRY}

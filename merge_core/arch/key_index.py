"""The one index of a key set: for each key that belongs to a block, its block and canonical name.

The spec parser (does an element match any key? does an entry select any?) and the resolver (which keys
does each entry set?) both walk the same list; building it once per (architecture, key set) and keeping it
behind `merge_core.cache` is what makes a cached SDXL resolution take milliseconds.
"""
from __future__ import annotations

from .architectures import Architecture
from ..cache import cached
from .keys import canonical_key


class KeyIndex:
    """The keys of one key set that belong to a block, in the given order, with block and canonical name."""

    def __init__(self, arch: Architecture, keys: tuple[str, ...]):
        self.keys: list[str] = []
        self.blocks: list[str] = []
        self.canon: list[str] = []
        for k in keys:
            b = arch.block_of(k)
            if b is not None:
                self.keys.append(k)
                self.blocks.append(b)
                self.canon.append(canonical_key(k, arch))
        self.block_of = dict(zip(self.keys, self.blocks))
        self.joined = "\n".join(self.canon)  # for fast "does any key contain this element" tests
        self._selected: dict[tuple, tuple[int, ...]] = {}  # lives and dies with this index

    def matches_any(self, element: str) -> bool:
        return element in self.joined

    def select(self, entry) -> tuple[int, ...]:
        """Positions of the keys a spec entry selects (memoised per entry selection, not per ratio)."""
        sig = (entry.blocks, entry.elements, entry.invert_blocks, entry.invert_elements)
        hit = self._selected.get(sig)
        if hit is None:
            hit = self._selected[sig] = tuple(i for i, (b, c) in enumerate(zip(self.blocks, self.canon))
                                              if entry.selects(b, c))
        return hit


@cached(maxsize=64)
def key_index(arch: Architecture, keys: tuple[str, ...] | None = None) -> KeyIndex:
    """The KeyIndex of `keys` (None: the architecture's built-in key list)."""
    return KeyIndex(arch, tuple(arch.default_keys()) if keys is None else keys)

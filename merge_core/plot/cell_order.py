"""In which order to render a plot's cells so that the fewest keys are re-merged between neighbours.

Why: a cell costs a re-merge of every key whose patches differ from the previous cell's, and a change of
checkpoint costs a full merge. Rendering in grid order can bounce between far-apart settings (an X axis of
blocks under a Y axis of ratios changes every block twice per row); a greedy nearest-neighbour walk over the
cells' per-key states keeps neighbours close. Cells of one model set are rendered together (each distinct set
is merged fully once), sets in the order they first appear; within a set the walk starts at its first cell
and always moves to the cheapest cell left (the lowest index on a tie, so equal costs keep grid order).

Pure numpy: `signatures[i]` is cell i's per-key state, an array of shape (keys, n) (e.g. alpha, beta and
the Adjust factor of every key); two cells differ in a key when any of its n numbers differ.
"""
from __future__ import annotations

import numpy as np


def changed_keys(a: np.ndarray, b: np.ndarray) -> int:
    """How many keys (rows) differ between two signatures."""
    return int(np.any(a != b, axis=tuple(range(1, a.ndim))).sum()) if a.ndim > 1 else int((a != b).sum())


def order_cells(signatures: list, groups: list | None = None) -> list[int]:
    """Cell indices in rendering order; `groups[i]`: cell i's model set (any hashable), None = one set."""
    n = len(signatures)
    if n == 0:
        return []
    groups = groups if groups is not None else [None] * n
    first_seen: dict = {}
    for i, g in enumerate(groups):
        first_seen.setdefault(g, []).append(i)
    order: list[int] = []
    for members in first_seen.values():
        order.extend(_greedy_walk([signatures[i] for i in members], members))
    return order


def _greedy_walk(sigs: list, members: list) -> list[int]:
    stack = np.stack([np.asarray(s).reshape(len(s), -1) for s in sigs])  # (cells, keys, n)
    left = list(range(1, len(members)))
    path = [0]
    while left:
        current = stack[path[-1]]
        costs = np.any(stack[left] != current, axis=2).sum(axis=1)
        best = int(np.argmin(costs))  # argmin takes the first minimum: the lowest index on a tie
        path.append(left.pop(best))
    return [members[i] for i in path]


def total_changed(signatures: list, order: list[int]) -> int:
    """Keys re-merged along `order` after the first cell (the measure `order_cells` keeps small)."""
    return sum(changed_keys(np.asarray(signatures[a]), np.asarray(signatures[b]))
               for a, b in zip(order, order[1:]))

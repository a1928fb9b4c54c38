"""The XY plot's render order: each cell's per-key state (alpha, beta, Adjust) from the same resolver the
cells use, handed to merge_core.cell_order, which walks the cells so that neighbours differ in the fewest
keys, one model set after another. Seed and prompt cells cost no key at all, so they are never split up by
a re-merge."""
from __future__ import annotations

import numpy as np

from ...merge_core.merge.adjust import key_changes
from ...merge_core.merge.calc_modes import NORMAL, uses_beta
from ...merge_core.merge.params import GAMMA
from ...merge_core.plot.cell_order import order_cells, total_changed
from ..engine.adjust_patches import internal_key


def _adjust_codes(extras, arch_name: str) -> dict:
    """ModelPatcher key -> a number standing for the Adjust's change of that key (0: none)."""
    if extras.adjust is None or extras.adjust.is_zero:
        return {}
    return {internal_key(c): float(hash((c.kind, c.amount)) % 1_000_003 + 1) for c in key_changes(extras.adjust,
                                                                                                   arch_name)}


def signature(job, cell) -> np.ndarray:
    """(keys, 4) array: every key's alpha, beta (0 when nothing uses it), Adjust code and calc-mode code (a
    calc mode changes how every key is merged)."""
    s = cell.settings
    ra, rb = job.ratios(s)
    codes = _adjust_codes(cell.extras, job.arch.name)
    calc_mode = getattr(s, "calc_mode", NORMAL)
    with_beta = uses_beta(job.method, calc_mode)
    option = getattr(s, "calc_option", GAMMA.default)
    calc = 0.0 if calc_mode == NORMAL else float(hash((calc_mode, option)) % 1_000_003 + 1)
    return np.array([(ra(k), rb(k) if with_beta else 0.0, codes.get(k, 0.0), calc) for k in job.merge.keys])


def render_order(job, cells: list) -> tuple[list, tuple]:
    """(cell indices in render order, (estimated keys re-merged in grid order, in the chosen order))."""
    sigs = [signature(job, c) for c in cells]
    groups = [c.extras.merge_set() for c in cells]
    order = order_cells(sigs, groups)
    grid = list(range(len(cells)))
    return order, (_cost(sigs, groups, grid, len(job.merge.keys)), _cost(sigs, groups, order, len(job.merge.keys)))


def _cost(sigs, groups, order, n_keys: int) -> int:
    """Keys re-merged along `order`: a model-set change re-merges every key."""
    cost = 0
    for a, b in zip(order, order[1:]):
        cost += n_keys if groups[a] != groups[b] else total_changed(sigs, [a, b])
    return cost

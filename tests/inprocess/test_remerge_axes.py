"""The diff checker's image metrics and colour map (no checkpoints). The axis and target parsing it used to
share this file with is pure merge_core now: tests/unit/test_plot_axes.py."""
from __future__ import annotations

import numpy as np

from tests.helpers.pack import pack_module


def test_metrics_and_colour_map():
    dc = pack_module("nodes.diff_checker")
    base = np.zeros((2, 2, 3), np.uint8)
    other = base.copy()
    other[0, 0] = (30, 10, 0)
    other[1, 1, 2] = 255
    mean, mx, frac = dc.metrics(base, other, 20)
    assert (mean, mx, frac) == ((30 + 10 + 255) / 12, 255, 2 / 12)
    cmap = dc.colour_map(np.abs(other.astype(int) - base).astype(np.uint8), 8.0)
    assert cmap[0, 1].tolist() == [0, 0, 0] and cmap[1, 1].tolist() == [255, 255, 255]
    assert cmap[0, 0, 0] > 0

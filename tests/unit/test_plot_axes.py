"""XY axes and diff-checker targets (no checkpoints, no ComfyUI): what each cell's ElementalMerge settings
are, and the messages that name the offending line."""
from __future__ import annotations

import pytest

from merge_core.plot import axes


@pytest.fixture(scope="module")
def ax():
    return axes


def _plot(ax, x_type, x_values, y_type, y_values, arch):
    """The x and y axes of a plot without Z."""
    return ax.parse_plot((x_type, y_type, "none"), (x_values, y_values, ""), arch)[:2]


def test_pinpoint_element_takes_ratios_from_the_other_axis(ax):
    base = ax.Settings(0.5, 0.25, elemental_alpha="IN04::0")
    x, y = _plot(ax, "pinpoint element", "OUT05:attn2.to_k, IN07:", "alpha", "0\n0.25", "sd1")
    cells = ax.build_cells(base, x, y)
    assert [(c.x, c.y) for c in cells] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert [c.settings.elemental_alpha for c in cells] == [
        "IN04::0\nOUT05:attn2.to_k:0.0", "IN04::0\nIN07::0.0",
        "IN04::0\nOUT05:attn2.to_k:0.25", "IN04::0\nIN07::0.25"]
    assert all(c.settings.alpha == 0.5 for c in cells)
    # beta opposite a pinpoint axis sets the target's beta
    x, y = _plot(ax, "beta", "1", "pinpoint blocks", "OUT03-OUT05", "sd1")
    (cell,) = ax.build_cells(base, x, y)
    assert cell.settings.elemental_beta == "OUT03-OUT05::1.0" and cell.settings.elemental_alpha == "IN04::0"


def test_plain_axes(ax):
    base = ax.Settings(0.5, 0.25)
    x, y = _plot(ax, "alpha", "0.1, 0.9", "block weights preset", "GRAD_V\nFLAT_25", "sd1")
    cells = ax.build_cells(base, x, y)
    assert [(c.settings.alpha, c.settings.block_weights_alpha) for c in cells] == [
        (0.1, "GRAD_V"), (0.9, "GRAD_V"), (0.1, "FLAT_25"), (0.9, "FLAT_25")]
    x, y = _plot(ax, "elemental", "OUT05::1\n\n# two lines\nIN04:attn1:0\nBASE::1\n", "none", "", "sd1")
    assert [i.label for i in x.items] == ["OUT05::1", "IN04:attn1:0, BASE::1"] and [i.line for i in x.items] == [1, 3]
    assert len(ax.build_cells(base, x, y)) == 2


@pytest.mark.parametrize("x_type,x_values,y_type,y_values,message", [
    ("pinpoint element", "OUT05:attn2\nOUT99:attn1", "alpha", "1", "x_values line 2: 'OUT99:attn1'"),
    ("pinpoint element", "OUT05:attn2:0.5", "alpha", "1", "x_values line 1"),
    ("pinpoint blocks", "IN04\nIN05:attn1", "alpha", "1", "x_values line 2"),
    ("alpha", "0.1\n\nx", "none", "", "x_values line 3: 'x' is not a finite number"),
    ("alpha", "1", "elemental", "OUT05::1\n\nIN04:attn1", "y_values line 3"),
    ("alpha", "1", "block weights preset", "GRAD_V\nNO_SUCH_PRESET", "y_values line 2"),
    ("pinpoint element", "OUT05:attn2", "none", "", "set y_type to 'alpha' or 'beta'"),
    ("alpha", "nan", "none", "", "x_values line 1"),
])
def test_invalid_values_name_the_line(ax, x_type, x_values, y_type, y_values, message):
    with pytest.raises(ax.AxisError) as exc:
        _plot(ax, x_type, x_values, y_type, y_values, None)
    assert message in str(exc.value)


def test_targets(ax):
    items = ax.parse_targets("OUT05:attn2, IN07\nIN08:\nNOT M00:NOT attn", "sd1")
    assert [i.value.spec_line(1.0) for i in items] == ["OUT05:attn2:1.0", "IN07::1.0", "IN08::1.0",
                                                      "NOT M00:NOT attn:1.0"]
    assert [i.line for i in items] == [1, 1, 2, 3]
    assert ax.safe_name("sub/test_A.safetensors", "ModelA") == "test_A"
    assert ax.safe_name("", "ModelA") == "ModelA"

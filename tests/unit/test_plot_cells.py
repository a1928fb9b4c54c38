"""merge_core.plot.axes (the XY/XYZ axes beyond one ElementalMerge), cell_order and plot_labels: hand-written
expectations."""
from __future__ import annotations

import numpy as np
import pytest

from merge_core import get_architecture, parse_block_weights, parse_spec, resolve_ratios
from merge_core.plot import axes as pa
from merge_core.merge.adjust import AdjustValues
from merge_core.plot.cell_order import order_cells, total_changed
from merge_core.plot.plot_labels import fits_without_cuts, input_names, loaded_checkpoints, upstream_name, wrap_label

BASE = pa.Settings(0.5, 0.25, None, None, "OUT11::0.1", "")


def _cells(x=("none", ""), y=("none", ""), z=("none", ""), rs=None, checkpoints=None):
    axes = pa.parse_plot((x[0], y[0], z[0]), (x[1], y[1], z[1]), "sd1", rs, checkpoints)
    return pa.build_cells(BASE, *axes), axes


def test_menu_is_the_axis_table_in_order():
    """The x/y/z_type values saved workflows hold, in the menu's order (the first eight came first)."""
    assert list(pa.AXIS_TYPES) == [
        "none", "elemental", "pinpoint element", "pinpoint blocks", "alpha", "beta", "block weights preset",
        "calc mode", "alpha and beta", "block weights alpha", "block weights beta", "add elemental", "seed",
        "prompt", "model A", "model B", "model C", "adjust", "pinpoint adjust", "random", "merge method",
        "calc_option", "density", "drop_rate", "epsilon", "outlier_rate", "merge_seed"]
    assert pa.PINPOINTS == ("pinpoint element", "pinpoint blocks", "pinpoint adjust")
    assert all(row.apply is None for row in pa.AXIS_TYPES.values() if row.is_pinpoint)
    assert all(row.apply is not None for row in pa.AXIS_TYPES.values() if not row.is_pinpoint)


def test_alpha_and_beta_pairs():
    cells, _ = _cells(("alpha and beta", "0.3 0.2\n0.7, 0.1"))
    assert [(c.settings.alpha, c.settings.beta) for c in cells] == [(0.3, 0.2), (0.7, 0.1)]
    assert [c.x_label for c in cells] == ["a=0.3 b=0.2", "a=0.7 b=0.1"]
    with pytest.raises(pa.AxisError, match="x_values line 2: '0.5': expected two numbers"):
        _cells(("alpha and beta", "0.3 0.2\n0.5"))


def test_block_weights_axes_and_add_elemental():
    cells, _ = _cells(("block weights alpha", "GRAD_V\n" + ",".join(["0.5"] * 26)),
                      ("block weights beta", "FLAT_25"), ("add elemental", "IN04:attn1:0.3\nOUT05::0, OUT06::1"))
    assert len(cells) == 4 and {c.z for c in cells} == {0, 1}
    assert cells[0].settings.block_weights_alpha == "GRAD_V"
    assert cells[1].settings.block_weights_alpha == ",".join(["0.5"] * 26)
    assert all(c.settings.block_weights_beta == "FLAT_25" for c in cells)
    assert cells[0].settings.elemental_alpha == "OUT11::0.1\nIN04:attn1:0.3"
    assert cells[3].settings.elemental_alpha == "OUT11::0.1\nOUT05::0, OUT06::1"
    with pytest.raises(pa.AxisError, match="y_values line 1: 'NOPE'"):
        _cells(("none", ""), ("block weights beta", "NOPE"))
    with pytest.raises(pa.AxisError, match="x_values line 2: 'OUT99::1'"):
        _cells(("add elemental", "IN04::1\nOUT99::1"))


def test_seed_prompt_and_models_touch_no_merge_setting():
    cells, _ = _cells(("seed", "1, 2"), ("prompt", "a cat, sitting\na dog"),
                      ("model B", "test_B.safetensors\ntest_C.safetensors"),
                      checkpoints=["test_A.safetensors", "test_B.safetensors", "test_C.safetensors"])
    assert len(cells) == 8
    assert all(c.settings == BASE for c in cells)
    assert [c.extras.seed for c in cells[:2]] == [1, 2]
    assert cells[0].extras.positive == "a cat, sitting"  # commas stay inside a prompt
    assert cells[2].extras.positive == "a dog"
    assert cells[0].extras.models == (("B", "test_B.safetensors"),)
    assert cells[4].extras.models == (("B", "test_C.safetensors"),)
    with pytest.raises(pa.AxisError, match="checkpoint 'test_D.safetensors' is not in the checkpoints folder; "
                                           "did you mean test_A.safetensors"):
        _cells(("model A", "test_D.safetensors"), checkpoints=["test_A.safetensors"])
    with pytest.raises(pa.AxisError, match="'x' is not a whole number"):
        _cells(("seed", "1, x"))


def test_adjust_and_pinpoint_adjust():
    cells, _ = _cells(("adjust", "IN=2 COL1=-1\n0,0,0,1,0,0,0,0"))
    assert cells[0].extras.adjust == AdjustValues((2, 0, 0, 0, 0, -1, 0, 0))
    assert cells[0].x_label == "IN=2 COL1=-1" and cells[1].x_label == "CONT=1"
    cells, _ = _cells(("pinpoint adjust", "CONT, col2"), ("alpha", "-1, 2"))
    assert [(c.x_label, c.y_label, c.extras.adjust.text()) for c in cells] == [
        ("CONT", "-1", "0,0,0,-1,0,0,0,0"), ("COL2", "-1", "0,0,0,0,0,0,-1,0"),
        ("CONT", "2", "0,0,0,2,0,0,0,0"), ("COL2", "2", "0,0,0,0,0,0,2,0")]
    assert all(c.settings == BASE for c in cells)  # the numbers are adjust values, not alpha
    with pytest.raises(pa.AxisError, match="'BRIGHT' is not an adjust name"):
        _cells(("pinpoint adjust", "BRIGHT"), ("alpha", "1"))
    with pytest.raises(pa.AxisError, match="takes its numbers from the other axis"):
        _cells(("pinpoint adjust", "IN"), ("seed", "1"))
    with pytest.raises(pa.AxisError, match="x_values line 1: expected 8 numbers"):
        _cells(("adjust", "1,2"))


def test_z_rules():
    with pytest.raises(pa.AxisError, match="z_type 'pinpoint adjust' is a pinpoint axis"):
        pa.check_axes("alpha", "none", "pinpoint adjust")
    with pytest.raises(pa.AxisError, match="axis type 'seed' is used twice"):
        pa.check_axes("seed", "alpha", "seed")
    with pytest.raises(pa.AxisError, match="unknown mode 'Q'"):
        pa.check_axes("random", "none", "none", random_settings="Q")


def test_random_cells_are_drawn_into_plain_settings(sd1_keys):
    arch = get_architecture("sd1")
    cells, _ = _cells(("random", "1, 2"), ("alpha", "0.5"))
    resolved = pa.resolve_random(cells, "U", arch, sd1_keys)
    for c in resolved:
        bw = parse_block_weights(c.settings.block_weights_alpha, arch)
        assert all(v == round(v, 3) and -0.5 <= v <= 1.5 for v in bw.values())
        assert c.draw_label.startswith(f"seed {c.extras.random_seed}: ")
    assert resolved[0].settings.block_weights_alpha != resolved[1].settings.block_weights_alpha
    # element mode: the spec is appended to the base spec; the table's one-line form is a valid spec
    cells, _ = _cells(("random", "7"))
    (c,) = pa.resolve_random(cells, "ER blocks=OUT11", arch, sd1_keys)
    assert c.settings.elemental_alpha.startswith("OUT11::0.1\nOUT11:model.diffusion_model.")
    one_line = pa.one_line(c.settings.elemental_alpha)
    r1 = resolve_ratios(sd1_keys, arch, 0.5, spec=parse_spec(c.settings.elemental_alpha, arch, keys=sd1_keys))
    r2 = resolve_ratios(sd1_keys, arch, 0.5, spec=parse_spec(one_line, arch, keys=sd1_keys))
    assert r1.ratios == r2.ratios


def test_order_keeps_model_sets_together_and_moves_to_the_cheapest_cell():
    # four cells over 3 keys: grid order 0,1,2,3 costs 3+3+3; the walk 0,2,1,3 costs 1+... (by hand below)
    sigs = [np.array([0, 0, 0]), np.array([1, 1, 1]), np.array([0, 0, 1]), np.array([1, 1, 0])]
    order = order_cells(sigs)
    # from 0: costs to 1,2,3 = 3,1,2 -> 2; from 2: to 1,3 = 2,3 -> 1; then 3
    assert order == [0, 2, 1, 3]
    assert total_changed(sigs, order) == 1 + 2 + 1 < total_changed(sigs, [0, 1, 2, 3]) == 3 + 2 + 3
    groups = ["m1", "m2", "m1", "m2"]
    assert order_cells(sigs, groups) == [0, 2, 1, 3]
    assert order_cells(sigs, ["m2", "m1", "m1", "m2"]) == [0, 3, 1, 2]
    ties = [np.zeros(2)] * 3
    assert order_cells(ties) == [0, 1, 2]


PROMPT = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15/dreamy_v2.safetensors"}},
    "2": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "real.ckpt"}},
    "3": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1]}},
    "4": {"class_type": "ElementalMerge", "inputs": {"model_a": ["3", 0], "model_b": ["2", 0]}},
    "9": {"class_type": "ElementalXYPlot", "inputs": {"model_a": ["4", 0], "model_b": ["2", 0]}},
}


def test_names_from_the_graph():
    assert upstream_name(PROMPT, "3") == "dreamy_v2"
    assert upstream_name(PROMPT, "4") == "(dreamy_v2 + real)"
    assert input_names(PROMPT, "9") == {"model_a": "(dreamy_v2 + real)", "model_b": "real"}
    assert input_names(PROMPT, "77") == {} and input_names(None, "9") == {}


def test_checkpoints_wired_straight_into_the_plot():
    """Only a loader's MODEL output linked directly counts: a LoRA or a merge in between is not the file."""
    prompt = {**PROMPT, "10": {"class_type": "ElementalXYPlot", "inputs": {
        "model_a": ["1", 0], "model_b": ["3", 0], "model_c": ["2", 0], "clip_a": ["1", 1]}},
        "11": {"class_type": "ElementalXYPlot", "inputs": {"model_a": ["1", 1]}}}
    assert loaded_checkpoints(prompt, "10") == {"model_a": "sd15/dreamy_v2.safetensors", "model_c": "real.ckpt"}
    assert loaded_checkpoints(prompt, "9") == {"model_b": "real.ckpt"}
    assert loaded_checkpoints(prompt, "11") == {} and loaded_checkpoints(None, "10") == {}


def test_wrap_breaks_at_spaces_colons_and_commas_only():
    measure = len  # one unit per character
    assert wrap_label("OUT05:attn2.to_k", measure, 10) == ["OUT05:", "attn2.to_k"]
    assert wrap_label("0.125,0.5,0.75,1", measure, 11) == ["0.125,0.5,", "0.75,1"]
    assert wrap_label("seed 3: a b", measure, 7) == ["seed 3:", "a b"]
    # one piece wider than the line: cut after a dot rather than inside a word
    assert wrap_label("model.diffusion_model.out", measure, 12) == ["model.", "diffusion_", "model.out"]
    assert fits_without_cuts("OUT05:attn2.to_k", measure, 10)
    assert not fits_without_cuts("OUT05:attn2.to_k", measure, 9)


def test_every_declared_parameter_without_its_own_axis_gets_one():
    """calc_option (extract's gamma) is an axis derived from its declaration: range-checked, naming the line."""
    from merge_core.merge.params import PARAMS

    assert set(PARAMS) <= set(pa.AXIS_TYPES) and list(pa.AXIS_TYPES)[-6] == "calc_option"
    assert list(pa.AXIS_TYPES)[-7] == "merge method"
    cells, _ = _cells(("calc_option", "0.3, 2"), ("calc mode", "extract"))
    assert [(c.settings.calc_mode, c.settings.calc_option) for c in cells] == [("extract", 0.3), ("extract", 2.0)]
    with pytest.raises(pa.AxisError, match=r"^x_values line 2: calc_option 25.0 is outside \[0, 20\]$"):
        _cells(("calc_option", "1\n25"))


def test_docs_axis_table_lists_every_axis_type_with_its_separator():
    import os
    import re

    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "xyz-adjust-random.md")
    text = open(path, encoding="utf-8").read().split("## XY plot axes", 1)[1].split("\n\n- ", 1)[0]
    documented = {}
    for line in text.splitlines():
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cols) == 3 and cols[0].startswith("`"):
            for name in re.findall(r"`([^`]+)`", cols[0]):
                documented[name] = cols[2]
    assert set(documented) == set(pa.AXIS_TYPES) - {"none"}
    assert {t: pa.AXIS_TYPES[t].separator for t in documented} == documented


def test_task_parameter_axes_set_the_cell_settings():
    cells, _ = _cells(("merge_seed", "1, 2"), ("density", "0.1\n0.5"))
    assert [(c.settings.merge_seed, c.settings.density) for c in cells] == [(1, 0.1), (2, 0.1), (1, 0.5), (2, 0.5)]
    assert cells[0].settings.task_values() == {"density": 0.1, "drop_rate": 0.9, "epsilon": 0.1,
                                               "outlier_rate": 0.01, "merge_seed": 1}
    with pytest.raises(pa.AxisError, match=r"^x_values line 1: merge_seed 1.5 is not a whole number$"):
        _cells(("merge_seed", "1.5"))
    with pytest.raises(pa.AxisError, match=r"^x_values line 2: density 1.5 is outside \[0, 1\]$"):
        _cells(("density", "0.5\n1.5"))


def test_merge_method_axis_gives_each_cell_its_method():
    cells, _ = _cells(("merge method", "Weight sum, ties\nDARE"), ("merge_seed", "3"))
    assert [c.extras.mode for c in cells] == ["Weight sum", "TIES", "DARE"]
    assert [c.extras.merge_set() for c in cells] == [(("mode", "Weight sum"),), (("mode", "TIES"),),
                                                       (("mode", "DARE"),)]
    assert cells[1].settings.task_params == ("density",)
    assert "mode=DARE" in cells[2].describe()
    assert "drop_rate=0.9 merge_seed=3" in cells[2].settings.describe()
    with pytest.raises(pa.AxisError, match=r"^x_values line 1: unknown merge method 'Slurp' \(valid: Weight sum, "):
        _cells(("merge method", "Slurp"))

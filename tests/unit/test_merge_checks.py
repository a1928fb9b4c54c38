"""Queue-time checks of the merge widgets and of a calc-mode axis (merge_core, no ComfyUI)."""
from __future__ import annotations

import pytest

from merge_core.merge.merge_checks import calc_queue_problem
from merge_core.plot.axes import calc_axis_problem


@pytest.mark.parametrize("mode,calc,alpha,beta,calc_option,fragment", [
    ("Weight sum", "cosineA", 0.5, 0.25, 0.3, None),
    ("Add difference", "cosineA", 0.5, 0.25, 0.3, "calc mode 'cosineA' does not work with mode 'Add difference'"),
    ("Triple sum", "extract", 0.5, 0.25, 0.3, "Add difference: trainDifference, smoothAdd, extract"),
    ("Weight sum", "tensor", 1.5, 0.25, 0.3, "needs alpha and beta within [0, 1]"),
    ("Weight sum", "tensor", 0.5, -0.25, 0.3, "beta -0.25"),
    ("Weight sum", "cosineB", 0.5, -0.25, 0.3, None),              # cosine does not use beta
    ("Add difference", "extract", 0.5, 0.25, 25.0, "calc_option 25.0 is outside [0, 20]"),
    ("Weight sum", "normal", 2.5, 0.25, 0.3, "alpha 2.5 is outside [-1, 2]"),
    ("Nope", "normal", 0.5, 0.25, 0.3, "unknown mode 'Nope'"),
    ("Weight sum", "bogus", 0.5, 0.25, 0.3, "unknown calc mode 'bogus'"),
])
def test_queue_time_checks(mode, calc, alpha, beta, calc_option, fragment):
    problem = calc_queue_problem(mode, calc, calc_option, alpha, beta)
    if fragment is None:
        assert problem is None
    else:
        assert problem is not None and fragment in problem, problem


def test_calc_axis_values_checked_against_mode():
    assert calc_axis_problem("Weight sum", ("calc mode", "alpha", "none"), ("normal, cosineA", "0, 1", "")) is None
    problem = calc_axis_problem("Weight sum", ("alpha", "calc mode", "none"), ("0, 1", "normal\nextract", ""))
    assert problem.startswith("y_values") and "'extract'" in problem and "'Weight sum'" in problem


def test_model_count_at_queue_time_names_the_node_inputs():
    from merge_core.merge.merge_checks import model_count_queue_problem
    assert model_count_queue_problem("Model Stock", ["model_b"]) == (
        "mode 'Model Stock' needs at least 2 models besides the base model_a; connect model_b, model_c")
    assert model_count_queue_problem("Model Stock", ["ckpt_b"], "ckpt_") == (
        "mode 'Model Stock' needs at least 2 models besides the base ckpt_a; connect ckpt_b, ckpt_c")
    assert model_count_queue_problem("Model Stock", ["model_b", "model_d"]) is None
    assert model_count_queue_problem("TIES", ["model_b"]) is None
    assert model_count_queue_problem("Weight sum", ["model_b"]) is None
    assert model_count_queue_problem(None, []) is None  # the mode is linked: the merge checks it

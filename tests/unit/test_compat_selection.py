"""The compatibility run's list (tests/compat_selection.py) names tests that exist: a renamed test would
otherwise silently drop out of the 0.3.75 run."""
from __future__ import annotations

import ast
import os

from tests.compat_selection import COMPAT_TESTS, selected

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _test_names(path: str) -> set[str]:
    tree = ast.parse(open(os.path.join(ROOT, path)).read())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_listed_test_exists():
    for path, names in COMPAT_TESTS.items():
        assert os.path.isfile(os.path.join(ROOT, path)), path
        defined = _test_names(path)
        assert defined, f"{path} defines no tests"
        missing = [n for n in names if n != "*" and n.split("[", 1)[0] not in defined]
        assert not missing, f"{path}: {missing} listed for the compatibility run but not defined"


def test_selection_by_name_and_parametrization():
    assert selected("tests/e2e/test_xy_plot.py::test_example_workflow[xy_presets]")
    assert selected("tests/inprocess/test_load_paths.py::test_merge_modes[Weight sum-fp32-classic]")
    assert not selected("tests/e2e/test_xy_plot.py::test_example_workflow_extra")
    assert not selected("tests/unit/test_spec.py::test_parse")
    calc = "tests/e2e/test_calc_modes.py::test_family_workflow_runs_and_calc_mode_matters"
    assert selected(calc + "[calc_tensor]") and not selected(calc + "[calc_cosine]")

"""The declared parameters (merge_core.merge.params) are the one source of defaults, ranges and use: every method
and calc mode reads declared parameters only, beta's use follows from them, and the docs table of calc modes
says what the declarations say."""
from __future__ import annotations

import os
import re

import pytest

from merge_core.merge.calc_modes import CALC_MODES, NORMAL, merge_params, uses_beta
from merge_core.merge.methods import MERGE_METHODS
from merge_core.merge.params import ALPHA, BETA, GAMMA, PARAMS

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "calc-modes.md")


def test_every_method_and_calc_mode_reads_declared_parameters():
    for thing in (*MERGE_METHODS.values(), *CALC_MODES.values()):
        assert all(PARAMS[p.name] is p for p in thing.params), thing.name
    assert all(ALPHA in m.params for m in MERGE_METHODS.values() if not m.task or m.scaled_by_alpha)
    assert [m.name for m in MERGE_METHODS.values() if ALPHA not in m.params] == [
        "Model Stock", "Geometric median", "Average"]
    assert [m.name for m in MERGE_METHODS.values() if m.uses_beta] == ["Triple sum", "Sum twice"]


@pytest.mark.parametrize("calc", list(CALC_MODES))
def test_uses_beta_is_the_union_of_method_and_calc_mode(calc):
    for name in CALC_MODES[calc].merge_modes:
        method = MERGE_METHODS[name]
        expect = method.uses_beta or calc in ("tensor", "tensor2", "extract")
        assert uses_beta(method, calc) is expect, (name, calc)
        assert (GAMMA in merge_params(method, calc)) is (calc == "extract")


def test_ranges_and_defaults():
    assert (ALPHA.default, ALPHA.lo, ALPHA.hi) == (0.5, -1.0, 2.0)
    assert (BETA.default, BETA.lo, BETA.hi) == (0.25, -1.0, 2.0)
    assert (GAMMA.default, GAMMA.lo, GAMMA.hi) == (0.3, 0.0, 20.0)
    assert GAMMA.problem(20.5) == "calc_option 20.5 is outside [0, 20]" and GAMMA.problem(20.0) is None
    assert ALPHA.problem(-1.5) == "alpha -1.5 is outside [-1, 2]"


def _docs_rows() -> dict:
    rows = {}
    with open(DOCS, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"\| `(\w+)` \| ([^|]+) \| ([^|]+) \|", line)
            if m and m.group(1) in CALC_MODES:
                rows[m.group(1)] = (m.group(2).strip(), m.group(3).strip())
    return rows


def test_docs_table_matches_the_declarations():
    rows = _docs_rows()
    assert set(rows) == set(CALC_MODES)
    for name, (needs, uses) in rows.items():
        mode = CALC_MODES[name]
        if name == NORMAL:
            assert needs == "any" and mode.merge_modes == tuple(MERGE_METHODS)
            continue
        assert needs == " or ".join(mode.merge_modes), name
        named = {p for p in PARAMS if re.search(rf"\b{p}\b", uses)}
        assert named == {p.name for p in mode.params}, name


def test_each_merge_mode_lists_its_calc_mode_variants():
    from merge_core.merge.calc_modes import variants_of

    assert variants_of("Weight sum") == ("normal", "cosineA", "cosineB", "tensor", "tensor2", "self")
    assert variants_of("Add difference") == ("normal", "trainDifference", "smoothAdd", "extract")
    assert variants_of("Triple sum") == variants_of("Sum twice") == ("normal",)

"""Merge methods: formulas against hand-written ones, patch steps against formulas."""
from __future__ import annotations

import pytest
import torch

from merge_core import MERGE_METHODS, PatchStep, apply_steps, get_merge_method


def _tensors(seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 5, generator=g, dtype=torch.float64) for _ in range(3)]


EXPECTED = {
    "Weight sum": lambda A, B, C, a, b: A * (1 - a) + B * a,
    "Add difference": lambda A, B, C, a, b: A + (B - C) * a,
    "Triple sum": lambda A, B, C, a, b: A * (1 - a - b) + B * a + C * b,
    "Sum twice": lambda A, B, C, a, b: (A * (1 - a) + B * a) * (1 - b) + C * b,
}


def test_registry_names():
    assert list(MERGE_METHODS) == ["Weight sum", "Add difference", "Triple sum", "Sum twice", "TIES", "DARE",
                                   "DARE-TIES", "DELLA", "Breadcrumbs", "Model Stock", "Geometric median", "SLERP",
                                   "Average"]
    assert [(m.needs_c, m.uses_beta) for m in MERGE_METHODS.values() if not m.task] == [
        (False, False), (True, False), (True, True), (True, True)]
    assert not any(m.needs_c or m.uses_beta or m.formula or m.steps for m in MERGE_METHODS.values() if m.task)
    assert get_merge_method("Add difference") is MERGE_METHODS["Add difference"]
    assert get_merge_method("add_difference") is MERGE_METHODS["Add difference"]
    with pytest.raises(ValueError, match="Weight sum"):
        get_merge_method("Slurp")


@pytest.mark.parametrize("name", list(EXPECTED))
@pytest.mark.parametrize("a,b", [(0.0, 0.0), (0.3, 0.2), (1.0, 0.5), (0.75, -0.25)])
def test_formula_and_steps(name, a, b):
    A, B, C = _tensors(hash((name, a, b)) & 0xFFFF)
    m = get_merge_method(name)
    want = EXPECTED[name](A, B, C, a, b)
    got = m.formula(A, B, C if m.needs_c else None, a, b)
    assert torch.allclose(got, want, atol=1e-12)
    stepped = apply_steps(A, {"b": B, "c": C}, m.steps(a, b))
    assert torch.allclose(stepped, want, atol=1e-12)


def test_step_tables():
    assert MERGE_METHODS["Weight sum"].steps(0.3, 0.9) == (PatchStep("b", 0.3, 0.7),)
    assert MERGE_METHODS["Add difference"].steps(0.3, 0) == (PatchStep("b", 0.3, 1.0), PatchStep("c", -0.3, 1.0))
    s = MERGE_METHODS["Triple sum"].steps(0.25, 0.5)
    assert s == (PatchStep("b", 0.25, 0.25), PatchStep("c", 0.5, 1.0))
    assert MERGE_METHODS["Sum twice"].steps(0.25, 0.5) == (PatchStep("b", 0.25, 0.75), PatchStep("c", 0.5, 0.5))

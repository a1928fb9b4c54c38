"""merge_core/merge/plan.py: which steps a key keeps, on which narrow of A's weight, or why A is kept."""
from __future__ import annotations

import pytest

from merge_core import get_merge_method
from merge_core.merge.plan import MergeNotes, NotANarrowing, Offset, effective_steps, narrowing, plan_key


def test_narrowing():
    assert narrowing((320, 4, 3, 3), (320, 4, 3, 3)) is None
    assert narrowing((320, 9, 3, 3), (320, 4, 3, 3)) == (1, 0, 4)
    assert narrowing((320, 8, 3, 3), (320, 4, 3, 3)) == (1, 0, 4)
    for a, src in (((320, 4, 3, 3), (320, 9, 3, 3)),   # source larger
                   ((320, 9, 3, 3), (160, 4, 3, 3)),   # two dimensions differ
                   ((320,), (320, 1))):                # different rank
        with pytest.raises(NotANarrowing):
            narrowing(a, src)


def test_no_op_steps_are_dropped():
    steps = get_merge_method("Sum twice").steps(0.5, 0.0)
    assert [(s.source, s.strength, s.strength_model) for s in effective_steps(steps)] == [("b", 0.5, 0.5)]
    assert effective_steps(get_merge_method("Weight sum").steps(0.0, 0.0)) == ()


def test_plan_key_decisions():
    steps = get_merge_method("Add difference").steps(0.5, 0.0)
    same = plan_key("k", (4, 4), {"b": (4, 4), "c": (4, 4)}, steps)
    assert (same.offset, same.kept, len(same.steps)) == (None, None, 2)
    inpaint = plan_key("k", (320, 9, 3, 3), {"b": (320, 4, 3, 3), "c": (320, 4, 3, 3)}, steps)
    assert inpaint.offset == Offset(1, 0, 4) and inpaint.kept is None
    assert plan_key("k", (4,), {"b": (4,), "c": None}, steps).kept == "missing in model C"
    assert plan_key("k", (4, 4), {"b": (8, 4), "c": (8, 4)}, steps).kept == \
        "shape (4, 4) in A, (8, 4) in model B: not a narrowing of A"
    assert plan_key("k", (8, 4), {"b": (4, 4), "c": (8, 4)}, steps).kept == \
        "sources disagree on shape: B (4, 4), C (8, 4)"
    noop = plan_key("k", (4, 4), {"b": None}, get_merge_method("Weight sum").steps(0.0, 0.0))
    assert (noop.steps, noop.kept) == ((), None)  # nothing to do: the missing source is never needed


def test_notes_summary_lists_every_exception():
    notes = MergeNotes(3, 1, [("inpaint", "dim 1: 4 of 9")], [("bigger", "shape ...")])
    merged = notes.merge(MergeNotes(1, 0, [], []))
    assert (merged.patched, merged.unchanged) == (4, 1)
    assert merged.summary("UNet").splitlines() == [
        "UNet: 4 keys patched, 1 unchanged (A's weight), 1 merged on common channels, 1 kept from A",
        "  common channels only: inpaint (dim 1: 4 of 9)", "  kept from A: bigger (shape ...)"]

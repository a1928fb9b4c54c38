"""nodes/engine/merge_patches.py's merge plans: the MergePatch of each key, as data (no checkpoints: fast)."""
from __future__ import annotations

import pytest
import torch

from tests.helpers.pack import pack_module


def key_patches(shapes: dict) -> dict:
    """A get_key_patches()-shaped dict: key -> [(weight, convert_func)]."""
    return {k: [(torch.zeros(s), lambda a, **kw: a)] for k, s in shapes.items()}


@pytest.fixture(scope="module")
def mods():
    import merge_core

    return pack_module("nodes.engine.merge_patches"), merge_core


@pytest.mark.parametrize("mode,a,b,expected", [
    ("Weight sum", 0.25, 0.0, [("b", 0.25, 0.75)]),
    ("Weight sum", 0.0, 0.0, []),                                    # a no-op: no patch at all
    ("Add difference", 0.5, 0.0, [("b", 0.5, 1.0), ("c", -0.5, 1.0)]),
    ("Triple sum", 0.5, 0.25, [("b", 0.5, 0.25), ("c", 0.25, 1.0)]),
    ("Sum twice", 0.5, 0.25, [("b", 0.5, 0.5), ("c", 0.25, 0.75)]),
    ("Sum twice", 0.5, 0.0, [("b", 0.5, 0.5)]),
])
def test_steps_become_patches_in_order(mods, mode, a, b, expected):
    """One fused patch per key (merge_patch.MergePatch), stored by ComfyUI at strength 1, carrying the
    method's steps in order and the sources' very entries."""
    p, mc = mods
    shapes = {"k": (2, 3)}
    sources = {"b": key_patches(shapes), "c": key_patches(shapes)}
    plan = p.plan_merge(shapes, sources, mc.get_merge_method(mode), lambda k: a, lambda k: b)
    notes = plan.notes
    assert (notes.patched, notes.unchanged) == ((1, 0) if expected else (0, 1))
    if not expected:
        assert plan.patches == {} and plan.patch_lists() == {}
        return
    (listed,), = plan.patch_lists().values()
    assert (listed.strength_patch, listed.strength_model, listed.offset) == (1.0, 1.0, None)
    assert list(plan.patches) == ["k"] and listed.source is plan.patches["k"]
    patch = plan.patches["k"]
    assert [(s.source, s.strength, s.strength_model) for s in patch.params.steps] == expected
    assert all(patch.params.sources[n][0] is sources[n]["k"] for n in {e[0] for e in expected})


def test_missing_and_mismatched_keys_keep_a_and_are_reported(mods):
    p, mc = mods
    shapes_a = {"same": (4, 4), "inpaint": (320, 9, 3, 3), "missing_c": (4,), "bigger": (4, 4), "disagree": (8, 4)}
    sources = {"b": key_patches({"same": (4, 4), "inpaint": (320, 4, 3, 3), "missing_c": (4,), "bigger": (8, 4),
                                 "disagree": (4, 4)}),
               "c": key_patches({"same": (4, 4), "inpaint": (320, 4, 3, 3), "bigger": (8, 4), "disagree": (8, 4)})}
    plan = p.plan_merge(shapes_a, sources, mc.get_merge_method("Add difference"), lambda k: 0.5, lambda k: 0.0)
    notes = plan.notes
    kept = dict(notes.kept)
    assert set(kept) == {"missing_c", "bigger", "disagree"}
    assert "missing in model C" in kept["missing_c"]
    assert "not a narrowing of A" in kept["bigger"]
    assert "sources disagree" in kept["disagree"]
    assert notes.narrowed == [("inpaint", "dim 1: 4 of 9")]
    # Each patched key gets Add difference's two steps, in order: +a*B, then -a*C, in one patch per key.
    per_key = {k: [(s.source, s.strength, s.strength_model) for s in patch.params.steps]
               for k, patch in plan.patches.items()}
    assert per_key == {"same": [("b", 0.5, 1.0), ("c", -0.5, 1.0)],
                       ("inpaint", (1, 0, 4)): [("b", 0.5, 1.0), ("c", -0.5, 1.0)]}
    summary = notes.summary("UNet")
    assert "3 kept from A" in summary and "kept from A: bigger" in summary

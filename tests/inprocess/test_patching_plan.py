"""nodes/engine/patching.py's per-key decisions, on recorded patch calls (no checkpoints: fast)."""
from __future__ import annotations

import pytest
import torch

from tests.inprocess.conftest import pack_module


class RecordingPatcher:
    """Stands in for a ModelPatcher/CLIP: records add_patches calls."""

    def __init__(self):
        self.calls = []

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        self.calls.append((patches, strength_patch, strength_model))
        return list(patches)


def key_patches(shapes: dict) -> dict:
    """A get_key_patches()-shaped dict: key -> [(weight, convert_func)]."""
    return {k: [(torch.zeros(s), lambda a, **kw: a)] for k, s in shapes.items()}


@pytest.fixture(scope="module")
def mods():
    import merge_core

    return pack_module("nodes.engine.patching"), merge_core


def test_narrowing(mods):
    p, _ = mods
    assert p.narrowing((320, 4, 3, 3), (320, 4, 3, 3)) is None
    assert p.narrowing((320, 9, 3, 3), (320, 4, 3, 3)) == (1, 0, 4)
    assert p.narrowing((320, 8, 3, 3), (320, 4, 3, 3)) == (1, 0, 4)
    for a, src in (((320, 4, 3, 3), (320, 9, 3, 3)),   # source larger
                   ((320, 9, 3, 3), (160, 4, 3, 3)),   # two dimensions differ
                   ((320,), (320, 1))):                # different rank
        with pytest.raises(p.NotANarrowing):
            p.narrowing(a, src)


@pytest.mark.parametrize("mode,a,b,expected", [
    ("Weight sum", 0.25, 0.0, [("b", 0.25, 0.75)]),
    ("Weight sum", 0.0, 0.0, []),                                    # a no-op: no patch at all
    ("Add difference", 0.5, 0.0, [("b", 0.5, 1.0), ("c", -0.5, 1.0)]),
    ("Triple sum", 0.5, 0.25, [("b", 0.5, 0.25), ("c", 0.25, 1.0)]),
    ("Sum twice", 0.5, 0.25, [("b", 0.5, 0.5), ("c", 0.25, 0.75)]),
    ("Sum twice", 0.5, 0.0, [("b", 0.5, 0.5)]),
])
def test_steps_become_patches_in_order(mods, mode, a, b, expected):
    """One fused patch per key (merge_patch.MergePatch), handed over in one add_patches call at strength 1,
    carrying the method's steps in order and the sources' very entries."""
    p, mc = mods
    target = RecordingPatcher()
    shapes = {"k": (2, 3)}
    sources = {"b": key_patches(shapes), "c": key_patches(shapes)}
    notes = p.apply_merge(target, shapes, sources, mc.get_merge_method(mode), lambda k: a, lambda k: b)
    assert (notes.patched, notes.unchanged) == ((1, 0) if expected else (0, 1))
    if not expected:
        assert target.calls == []
        return
    (patches, sp, sm), = target.calls
    assert (sp, sm) == (1.0, 1.0) and list(patches) == ["k"]
    patch = patches["k"]
    assert [(s.source, s.strength, s.strength_model) for s in patch.params.steps] == expected
    assert all(patch.params.sources[n][0] is sources[n]["k"] for n in {e[0] for e in expected})


def test_missing_and_mismatched_keys_keep_a_and_are_reported(mods):
    p, mc = mods
    target = RecordingPatcher()
    shapes_a = {"same": (4, 4), "inpaint": (320, 9, 3, 3), "missing_c": (4,), "bigger": (4, 4), "disagree": (8, 4)}
    sources = {"b": key_patches({"same": (4, 4), "inpaint": (320, 4, 3, 3), "missing_c": (4,), "bigger": (8, 4),
                                 "disagree": (4, 4)}),
               "c": key_patches({"same": (4, 4), "inpaint": (320, 4, 3, 3), "bigger": (8, 4), "disagree": (8, 4)})}
    notes = p.apply_merge(target, shapes_a, sources, mc.get_merge_method("Add difference"),
                          lambda k: 0.5, lambda k: 0.0)
    kept = dict(notes.kept)
    assert set(kept) == {"missing_c", "bigger", "disagree"}
    assert "missing in model C" in kept["missing_c"]
    assert "not a narrowing of A" in kept["bigger"]
    assert "sources disagree" in kept["disagree"]
    assert notes.narrowed == [("inpaint", "dim 1: 4 of 9")]
    # Each patched key gets Add difference's two steps, in order: +a*B, then -a*C, in one patch per key.
    (patches, sp, sm), = target.calls
    per_key = {k: [(s.source, s.strength, s.strength_model) for s in patch.params.steps] for k, patch in patches.items()}
    assert per_key == {"same": [("b", 0.5, 1.0), ("c", -0.5, 1.0)],
                       ("inpaint", (1, 0, 4)): [("b", 0.5, 1.0), ("c", -0.5, 1.0)]}
    summary = notes.summary("UNet")
    assert "3 kept from A" in summary and "kept from A: bigger" in summary

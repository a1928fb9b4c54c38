"""nodes/patching.py's per-key decisions, on recorded patch calls (no checkpoints: fast)."""
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

    return pack_module("patching"), merge_core


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
    p, mc = mods
    target = RecordingPatcher()
    shapes = {"k": (2, 3)}
    sources = {"b": key_patches(shapes), "c": key_patches(shapes)}
    notes = p.apply_merge(target, shapes, sources, mc.get_merge_method(mode), lambda k: a, lambda k: b)
    got = [(next(s for s in "bc" if patches["k"] is sources[s]["k"]), sp, sm) for patches, sp, sm in target.calls]
    assert got == expected
    assert (notes.patched, notes.unchanged) == ((1, 0) if expected else (0, 1))


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
    # Each patched key gets Add difference's two steps, in order: +a*B, then -a*C (grouped calls may carry
    # several keys each; what counts is each key's own sequence).
    per_key = {}
    for patches, sp, sm in target.calls:
        for k, src in patches.items():
            name = k if isinstance(k, str) else k[0]
            which = next(s for s in "bc" if src is sources[s][name])
            per_key.setdefault(k, []).append((which, sp, sm))
    assert per_key == {"same": [("b", 0.5, 1.0), ("c", -0.5, 1.0)],
                       ("inpaint", (1, 0, 4)): [("b", 0.5, 1.0), ("c", -0.5, 1.0)]}
    summary = notes.summary("UNet")
    assert "3 kept from A" in summary and "kept from A: bigger" in summary

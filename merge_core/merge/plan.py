"""A merge's plan per key, as data: which patch steps a key gets, on which narrow of A's weight, or why A's
weight is kept. The engine (nodes/engine/merge_patches.py) turns plans into ComfyUI patches.

Which keys change: normal drops steps that change nothing (`effective_steps`); a key whose steps are all
no-ops gets no patch and is counted "unchanged".

Shapes: a key whose source weight is smaller than A's along one dimension (a 9-channel inpainting or an
8-channel pix2pix `input_blocks.0.0.weight` against a 4-channel one) merges the common leading channels
and keeps A's extra ones, as SuperMerger does; it is expressed as an `Offset` (a narrow of A's weight). Every
other mismatch, and a key missing from a source, keeps A's weight and is reported: ComfyUI itself would
scale A and then skip the source on a shape mismatch, silently giving a wrong weight.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

# What a kept key's reason says, by cause.
REASON_MISSING = "missing in {src}"
REASON_SHAPE = "shape {a} in A, {s} in {src}: not a narrowing of A"
REASON_SOURCES_DISAGREE = "sources disagree on shape: {shapes}"


class Offset(NamedTuple):
    """ComfyUI's patch `offset`: the narrow `(dim, start, length)` of A's weight a patch applies to."""
    dim: int
    start: int
    length: int


class NotANarrowing(ValueError):
    """The source's shape is not a leading slice of A's along a single dimension."""


@dataclass(frozen=True)
class KeyPlan:
    """The patches of one key, or why A's weight is kept (`kept`, then `steps` is empty)."""
    key: str
    offset: Offset | None  # None: the whole weight
    steps: tuple           # merge_core PatchStep(source, strength, strength_model), no-ops removed
    kept: str | None = None


@dataclass
class MergeNotes:
    """What the engine did besides the plain merge; goes into the change report."""
    patched: int = 0
    unchanged: int = 0          # keys left at A's weight by their ratios (or by the calc mode's key rule)
    narrowed: list = field(default_factory=list)   # (key, "dim 1: 4 of 9")
    kept: list = field(default_factory=list)       # (key, reason): A's weight kept

    def merge(self, other: "MergeNotes") -> "MergeNotes":
        return MergeNotes(self.patched + other.patched, self.unchanged + other.unchanged,
                          self.narrowed + other.narrowed, self.kept + other.kept)

    def summary(self, label: str) -> str:
        lines = [f"{label}: {self.patched} keys patched, {self.unchanged} unchanged (A's weight), "
                 f"{len(self.narrowed)} merged on common channels, {len(self.kept)} kept from A"]
        lines += [f"  common channels only: {k} ({how})" for k, how in self.narrowed]
        lines += [f"  kept from A: {k} ({why})" for k, why in self.kept]
        return "\n".join(lines)


def narrowing(shape_a: tuple, shape_src: tuple) -> Offset | None:
    """The `Offset` that narrows A's weight to the source's shape, or None when the shapes are equal;
    NotANarrowing when the source is not a leading slice of A along a single dimension."""
    if tuple(shape_a) == tuple(shape_src):
        return None
    differing = [d for d, (x, y) in enumerate(zip(shape_a, shape_src)) if x != y]
    if len(shape_a) != len(shape_src) or len(differing) != 1 or shape_src[differing[0]] > shape_a[differing[0]]:
        raise NotANarrowing(f"{tuple(shape_src)} is not a leading slice of {tuple(shape_a)}")
    d = differing[0]
    return Offset(d, 0, shape_src[d])


def effective_steps(steps) -> tuple:
    """Drops steps that change nothing (strength 0 with strength_model 1): the weight stays A's bit for bit
    and the source is never even computed."""
    return tuple(s for s in steps if not (s.strength == 0.0 and s.strength_model == 1.0))


def plan_key(key: str, shape_a: tuple, source_shapes: dict, steps) -> KeyPlan:
    """The KeyPlan of one key; its `kept` says why when A's weight must be kept.

    `source_shapes` maps "b"/"c" to the source's shape for this key (None when the source lacks the key).
    """
    steps = effective_steps(steps)
    if not steps:
        return KeyPlan(key, None, ())
    used = sorted({s.source for s in steps})
    for src in used:
        if source_shapes.get(src) is None:
            return KeyPlan(key, None, (), REASON_MISSING.format(src=f"model {src.upper()}"))
    shapes = {src: tuple(source_shapes[src]) for src in used}
    if len(set(shapes.values())) > 1:
        why = REASON_SOURCES_DISAGREE.format(shapes=", ".join(f"{s.upper()} {v}" for s, v in shapes.items()))
        return KeyPlan(key, None, (), why)
    src, shape = next(iter(shapes.items()))
    try:
        offset = narrowing(shape_a, shape)
    except NotANarrowing:
        return KeyPlan(key, None, (), REASON_SHAPE.format(a=tuple(shape_a), s=shape, src=f"model {src.upper()}"))
    return KeyPlan(key, offset, steps)


@dataclass(frozen=True)
class ShapeStep:
    """A stand-in step so that `plan_key` checks a calc mode's sources' presence and shapes."""
    source: str
    strength: float = 1.0
    strength_model: float = 1.0

"""Merge methods, declared once (in the spirit of sd-mecha's registry) and looked up by name.

``alpha`` (a) is model B's share and ``beta`` (b) model C's, per key. Each method is given twice, and the
tests hold the two equal:

* ``formula(A, B, C, a, b)``: the merged tensor, for direct merging of state dicts;
* ``steps(a, b)``: the same result as ComfyUI ModelPatcher patches applied in order to A's weight, each
  ``w = w * strength_model + strength * SOURCE`` (this is how a "diff"/"model" patch with a strength pair
  acts), so a node can merge without materialising the result.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .params import ALPHA, BETA, Param

if TYPE_CHECKING:  # the formulas only use tensor arithmetic; importing torch here would slow the CLI down
    from torch import Tensor


@dataclass(frozen=True)
class PatchStep:
    source: str  # "b" or "c"
    strength: float
    strength_model: float


@dataclass(frozen=True)
class MergeMethod:
    name: str
    needs_c: bool
    params: tuple[Param, ...]  # the parameters its formula reads (merge_core.params)
    formula: Callable[[Tensor, Tensor, Tensor | None, float, float], Tensor]
    steps: Callable[[float, float], tuple[PatchStep, ...]]

    @property
    def uses_beta(self) -> bool:
        return BETA in self.params


def _weight_sum(A, B, C, a, b):
    return A * (1 - a) + B * a


def _add_difference(A, B, C, a, b):
    return A + (B - C) * a


def _triple_sum(A, B, C, a, b):
    return A * (1 - a - b) + B * a + C * b


def _sum_twice(A, B, C, a, b):
    return (A * (1 - a) + B * a) * (1 - b) + C * b


MERGE_METHODS: dict[str, MergeMethod] = {m.name: m for m in (
    MergeMethod("Weight sum", False, (ALPHA,), _weight_sum,
                lambda a, b: (PatchStep("b", a, 1 - a),)),
    MergeMethod("Add difference", True, (ALPHA,), _add_difference,
                lambda a, b: (PatchStep("b", a, 1.0), PatchStep("c", -a, 1.0))),
    MergeMethod("Triple sum", True, (ALPHA, BETA), _triple_sum,
                lambda a, b: (PatchStep("b", a, 1 - a - b), PatchStep("c", b, 1.0))),
    MergeMethod("Sum twice", True, (ALPHA, BETA), _sum_twice,
                lambda a, b: (PatchStep("b", a, 1 - a), PatchStep("c", b, 1 - b))),
)}


def get_merge_method(name: str) -> MergeMethod:
    """The method called ``name`` (exact, or case- and space/underscore-insensitive)."""
    if name in MERGE_METHODS:
        return MERGE_METHODS[name]
    norm = lambda s: s.lower().replace("_", " ").replace("-", " ").strip()  # noqa: E731
    for key, method in MERGE_METHODS.items():
        if norm(key) == norm(str(name)):
            return method
    raise ValueError(f"unknown merge method {name!r}; valid: {', '.join(MERGE_METHODS)}")


def apply_steps(a_tensor: Tensor, sources: dict, steps) -> Tensor:
    """Applies patch ``steps`` to ``a_tensor`` in order: ``w = w * strength_model + strength * sources[src]``."""
    w = a_tensor
    for step in steps:
        w = w * step.strength_model + step.strength * sources[step.source]
    return w

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

from .params import ALPHA, BETA, DENSITY, DROP_RATE, EPSILON, MERGE_SEED, OUTLIER_RATE, Param

if TYPE_CHECKING:  # the formulas only use tensor arithmetic; importing torch here would slow the CLI down
    from torch import Tensor


@dataclass(frozen=True)
class PatchStep:
    source: str  # "b" or "c"
    strength: float
    strength_model: float


@dataclass(frozen=True)
class MergeMethod:
    """A linear method (SuperMerger's modes: `formula` and `steps`, models A, B and C) or a task-vector method
    (`task`: computed per key by merge_core.merge.task_vectors over A and the connected models B..E)."""
    name: str
    needs_c: bool
    params: tuple[Param, ...]  # the parameters its formula reads (merge_core.params)
    formula: Callable[[Tensor, Tensor, Tensor | None, float, float], Tensor] | None = None
    steps: Callable[[float, float], tuple[PatchStep, ...]] | None = None
    task: bool = False
    min_models: int = 1            # models besides A it needs (B is always connected)
    max_models: int | None = None  # models besides A it reads at most (None: every connected one)
    base_is_a: bool = True         # A is the base the task vectors are taken from; False: A is one of the models
    scaled_by_alpha: bool = False  # alpha 0 gives A's weight exactly (the result is A + alpha * something)
    summary: str = ""              # one line for the node's description and the docs
    weighted: bool = False         # reads model_weights (one weight per model, A first)

    @property
    def uses_beta(self) -> bool:
        return BETA in self.params

    @property
    def random(self) -> bool:
        return MERGE_SEED in self.params

    def count_problem(self, n_models: int, inputs: tuple[str, ...] | None = None, base: str = "model_a"
                      ) -> str | None:
        """Why `n_models` connected models besides A (B, C, D, E) are too few for this method, or None.
        `inputs`/`base`: the node's names for B..E and A (default ElementalMerge's)."""
        inputs = MODEL_INPUTS if inputs is None else inputs
        if n_models < self.min_models:
            need = self.min_models + (0 if self.base_is_a else 1)
            role = f"models besides the base {base}" if self.base_is_a else f"models including {base}"
            return (f"mode '{self.name}' needs at least {need} {role}; connect "
                    f"{', '.join(inputs[:self.min_models])}")
        return None


def _weight_sum(A, B, C, a, b):
    return A * (1 - a) + B * a


def _add_difference(A, B, C, a, b):
    return A + (B - C) * a


def _triple_sum(A, B, C, a, b):
    return A * (1 - a - b) + B * a + C * b


def _sum_twice(A, B, C, a, b):
    return (A * (1 - a) + B * a) * (1 - b) + C * b


# The model inputs after model_a, in the order a task-vector method reads them.
MODEL_INPUTS = ("model_b", "model_c", "model_d", "model_e")


def _task(name, params, min_models, summary, max_models=None, base_is_a=True, scaled=True,
          weighted=False) -> MergeMethod:
    return MergeMethod(name, False, params, task=True, min_models=min_models, max_models=max_models,
                       base_is_a=base_is_a, scaled_by_alpha=scaled, summary=summary, weighted=weighted)


MERGE_METHODS: dict[str, MergeMethod] = {m.name: m for m in (
    MergeMethod("Weight sum", False, (ALPHA,), _weight_sum,
                lambda a, b: (PatchStep("b", a, 1 - a),), summary="A(1-a) + Ba"),
    MergeMethod("Add difference", True, (ALPHA,), _add_difference,
                lambda a, b: (PatchStep("b", a, 1.0), PatchStep("c", -a, 1.0)), summary="A + (B-C)a"),
    MergeMethod("Triple sum", True, (ALPHA, BETA), _triple_sum,
                lambda a, b: (PatchStep("b", a, 1 - a - b), PatchStep("c", b, 1.0)), summary="A(1-a-b) + Ba + Cb"),
    MergeMethod("Sum twice", True, (ALPHA, BETA), _sum_twice,
                lambda a, b: (PatchStep("b", a, 1 - a), PatchStep("c", b, 1 - b)), summary="(A(1-a)+Ba)(1-b) + Cb"),
    # Task-vector methods: model_a is the base, B..E the fine-tunes (docs/merge-methods.md).
    _task("TIES", (ALPHA, DENSITY), 1, "trim each task vector to density, elect signs, disjoint mean, times a"),
    _task("DARE", (ALPHA, DROP_RATE, MERGE_SEED), 1, "drop each change with p, rescale by 1/(1-p), sum, times a"),
    _task("DARE-TIES", (ALPHA, DROP_RATE, MERGE_SEED), 1, "DARE's drop and rescale, then TIES's sign election"),
    _task("DELLA", (ALPHA, DENSITY, EPSILON, MERGE_SEED), 1,
          "drop by magnitude rank around density (window epsilon), rescale, elect signs, times a"),
    _task("Breadcrumbs", (ALPHA, DENSITY, OUTLIER_RATE), 1,
          "drop the largest outlier_rate and the smallest changes down to density, sum, times a"),
    _task("Model Stock", (), 2, "A + t * mean task vector, t from the angle between the task vectors", scaled=False),
    _task("Geometric median", (), 2, "the geometric median of A and every connected model, weighted by "
          "model_weights", base_is_a=False, scaled=False, weighted=True),
    _task("SLERP", (ALPHA,), 1, "spherical interpolation from A to B at t = a", max_models=1, scaled=True),
    _task("Average", (), 1, "the mean of A and every connected model, weighted by model_weights",
          base_is_a=False, scaled=False, weighted=True),
)}
TASK_METHODS = tuple(n for n, m in MERGE_METHODS.items() if m.task)


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

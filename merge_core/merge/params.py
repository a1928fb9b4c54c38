"""The numeric parameters of the merge methods and calc modes, each declared once with its default, range and
meaning. Node sockets, the queue-time range checks, recipe validation and the docs table are derived from
these declarations (a method lists the ones it reads: `MergeMethod.params`, `CalcMode.params`)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Param:
    name: str       # the socket's name, and the recipe field's
    default: float  # what a workflow saved before the socket existed gets
    lo: float
    hi: float
    step: float
    per_key: bool   # block weights and elemental specs can set it per key (alpha, beta), or one value per merge
    meaning: str    # one line: the socket's tooltip and the docs' wording
    integer: bool = False  # an Int socket (a seed), else a Float one

    def problem(self, value: float) -> str | None:
        """Why `value` is outside the declared range, or None."""
        if not self.lo <= value <= self.hi:
            return f"{self.name} {value} is outside [{self.lo:g}, {self.hi:g}]"
        if self.integer and value != int(value):
            return f"{self.name} {value} is not a whole number"
        return None


ALPHA = Param("alpha", 0.5, -1.0, 2.0, 0.01, True,
              "B's share (Add difference: the multiplier of B-C; task-vector methods: lambda, the scale of the "
              "merged task vector; SLERP: t)")
BETA = Param("beta", 0.25, -1.0, 2.0, 0.01, True, "C's share (Triple sum, Sum twice); unused by the other modes")
GAMMA = Param("calc_option", 0.3, 0.0, 20.0, 0.01, False, "extract's gamma; unused by the other calc modes")

# The task-vector methods' parameters (merge_core.merge.task_vectors). Defaults are the papers' usual settings;
# a workflow saved before these sockets existed used none of these methods, so no old result depends on them.
DENSITY = Param("density", 0.2, 0.0, 1.0, 0.01, True,
                "fraction of each task vector kept: TIES's k, DELLA's mean keep probability, Breadcrumbs' kept share")
DROP_RATE = Param("drop_rate", 0.9, 0.0, 1.0, 0.01, True, "DARE and DARE-TIES: the probability p of dropping "
                  "each element of a task vector (kept ones are rescaled by 1/(1-p))")
EPSILON = Param("epsilon", 0.1, 0.0, 1.0, 0.01, True, "DELLA: the width of the keep-probability window "
                "around density, spread over the magnitude ranks")
OUTLIER_RATE = Param("outlier_rate", 0.01, 0.0, 1.0, 0.001, True,
                     "Breadcrumbs: fraction of the largest changes dropped (the smallest are dropped down to density)")
MERGE_SEED = Param("merge_seed", 0, 0, 2 ** 32 - 1, 1, False, "DARE, DARE-TIES, DELLA: the seed of the random "
                   "masks; each key's generator derives from it and the key's name", integer=True)

PARAMS = {p.name: p for p in (ALPHA, BETA, GAMMA, DENSITY, DROP_RATE, EPSILON, OUTLIER_RATE, MERGE_SEED)}
# The parameters every merging node has as widgets of its own (alpha, beta, calc_option).
SHARED_PARAMS = (ALPHA, BETA, GAMMA)
# The parameters only the task-vector methods read, in declaration (socket) order: every one but SHARED_PARAMS.
# Elemental Merge has their sockets; the XY plot and the diff checker, which do not take those methods, have
# none and offer no axis for them.
TASK_ONLY_PARAMS = tuple(p for p in PARAMS.values() if p not in SHARED_PARAMS)
# The per-key parameters a block-weights string and an elemental spec can set (sockets
# `block_weights_<name>` and `elemental_<name>`), in socket order.
PER_KEY_PARAMS = tuple(p for p in PARAMS.values() if p.per_key)


def task_only(params) -> tuple:
    """Those of `params` (a method's, or PER_KEY_PARAMS) that are TASK_ONLY_PARAMS, in their order."""
    return tuple(p for p in params if p in TASK_ONLY_PARAMS)


# The calc mode that keeps the merge method's own formula: the calc_mode socket's default. Named here, beside
# the defaults, so that torch-free modules (plot axes, recipes) can use it without importing calc_modes.
NORMAL = "normal"

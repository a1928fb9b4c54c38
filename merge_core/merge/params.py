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

    def problem(self, value: float) -> str | None:
        """Why `value` is outside the declared range, or None."""
        if not self.lo <= value <= self.hi:
            return f"{self.name} {value} is outside [{self.lo:g}, {self.hi:g}]"
        return None


ALPHA = Param("alpha", 0.5, -1.0, 2.0, 0.01, True, "B's share (Add difference: the multiplier of B-C)")
BETA = Param("beta", 0.25, -1.0, 2.0, 0.01, True, "C's share (Triple sum, Sum twice); unused by the other modes")
GAMMA = Param("calc_option", 0.3, 0.0, 20.0, 0.01, False, "extract's gamma; unused by the other calc modes")

PARAMS = {p.name: p for p in (ALPHA, BETA, GAMMA)}

# The calc mode that keeps the merge method's own formula: the calc_mode socket's default. Named here, beside
# the defaults, so that torch-free modules (plot axes, recipes) can use it without importing calc_modes.
NORMAL = "normal"

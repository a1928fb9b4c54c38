"""Is a text valid for an architecture, and which architecture did the user mean: answered once.

Every input that takes a spec or a block-weight string (the merge nodes at queue time, the XY/diff axes, the
editor's /validate route) asks the same two questions. `validate_block_weights` gives block weights the same
shape of answer `validate_spec` gives specs (a list of positioned Diagnostics, never an exception), so that
`closest_architecture` can pick, for either kind of text, the architecture it fits: the first one (table
order) with no error, else the one with the fewest errors, which is the one the user most likely meant.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from ..arch.architectures import ARCHITECTURES, Architecture, get_architecture
from ..arch.derived import stand_in
from .block_weights import parse_block_weights
from ..diagnostics import ERROR, Diagnostic, MergeSpecError

AUTO = "auto"  # the architecture choice "any architecture": the text is judged against the closest one

# (text, architecture) -> every problem of the text for that architecture, errors and warnings.
Validator = Callable[[str, Architecture], "list[Diagnostic]"]


def validate_block_weights(text: str, arch, alpha: float | None = None,
                           user_presets: dict | None = None) -> list[Diagnostic]:
    """Every problem of a preset name or weight string for `arch`, positioned; never raises.

    Same rules as `parse_block_weights` (without `alpha`, a list that leaves BASE unset is an error)."""
    try:
        parse_block_weights(text, arch, alpha=alpha, user_presets=user_presets)
    except MergeSpecError as exc:
        return list(exc.diagnostics)
    except ValueError as exc:  # an unknown architecture name
        return [Diagnostic(1, 1, str(exc), ERROR)]
    return []


@dataclass(frozen=True)
class ArchitectureFit:
    """The architecture a text was judged against and its problems there (warnings included)."""
    architecture: Architecture
    diagnostics: list[Diagnostic]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def valid(self) -> bool:
        return not self.errors


def closest_architecture(text: str, validate: Validator, candidates: Iterable | None = None) -> ArchitectureFit:
    """The first of `candidates` (Architectures or names; None = every architecture, table order) for which
    `validate(text, arch)` finds no error, else the one with the fewest errors (the first such on a tie)."""
    archs = list(ARCHITECTURES.values()) if candidates is None else [get_architecture(a) for a in candidates]
    if not archs:
        raise ValueError("closest_architecture needs at least one candidate architecture")
    best = None
    for arch in archs:
        fit = ArchitectureFit(arch, list(validate(text, arch)))
        if fit.valid:
            return fit
        if best is None or len(fit.errors) < len(best.errors):
            best = fit
    return best


def text_problem(kind: str, text: str, architecture: str, validate: Validator) -> str | None:
    """The queue-time message for an invalid `kind` text ("elemental spec", "block weights"), or None.

    `architecture` is a name or AUTO (valid for any architecture passes, including any model with derived
    blocks (`merge_core.arch.derived.stand_in`); otherwise the closest record is reported). Empty text is no
    problem here: what empty means is the caller's rule."""
    if not text.strip():
        return None
    auto = architecture == AUTO
    fit = closest_architecture(text, validate, None if auto else [architecture])
    if fit.valid:
        return None
    if auto and not [d for d in validate(text, stand_in(text)) if d.is_error]:
        return None  # may be for a model whose blocks are derived from its keys: the merge checks it
    label = fit.architecture.label
    head = f"invalid {kind}: valid for no architecture; as {label}:" if auto else f"invalid {kind} for {label}:"
    return "\n".join([head] + [d.format() for d in fit.errors])

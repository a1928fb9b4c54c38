"""A spec or weight string as the nodes carry it: the text and the architecture the editor checked it for.

A text validated for one architecture and wired to models of another is refused by the input's name, and a
spec error is reported prefixed by the input's name, so the user knows which of several texts is wrong.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..arch.architectures import ARCHITECTURES
from ..diagnostics import MergeSpecError
from .validation import AUTO


@dataclass(frozen=True)
class TextInput:
    """What ELEMENTAL_SPEC and BLOCK_WEIGHTS carry: the text and the architecture it was written for."""
    text: str
    architecture: str = AUTO


def check_written_for(what: str, given: TextInput | None, arch, connected: str = "the models are") -> None:
    """ValueError naming `what` when `given` was written for another architecture than `arch`."""
    if given is not None and given.architecture not in (AUTO, arch.name):
        raise ValueError(f"{what} was written for {ARCHITECTURES[given.architecture].label} "
                         f"but {connected} {arch.label}")


def parse_text(what: str, fn, *a, **kw):
    """``fn(*a, **kw)`` with a spec error turned into a ValueError prefixed by the input's name."""
    try:
        return fn(*a, **kw)
    except MergeSpecError as exc:
        raise ValueError(f"{what}: {exc}") from None

"""Structured problems found in a spec or a block-weight string.

Every problem carries the 1-based line and column of the offending token so that a UI can point at it, and
the entry it came from so that a log line can be read on its own. Errors stop a merge; warnings (an element
that matches no key, an entry that selects nothing) are reported and the merge goes on.
"""
from __future__ import annotations

from dataclasses import dataclass

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Diagnostic:
    line: int
    column: int
    message: str
    severity: str  # "error" | "warning"
    entry: str = ""
    hint: str = ""  # shown in parentheses after the entry, e.g. "did you mean OUT04? valid: ..."

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    @property
    def is_warning(self) -> bool:
        return self.severity == WARNING

    def format(self) -> str:
        head = f"line {self.line}, column {self.column}: "
        if self.is_warning:
            head += "warning: "
        text = head + self.message
        if self.entry:
            text += f" in entry '{self.entry}'"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def __str__(self) -> str:
        return self.format()


class MergeSpecError(ValueError):
    """An invalid spec or weight string; `.diagnostics` holds every problem found (warnings too)."""

    def __init__(self, diagnostics):
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        super().__init__(str(self))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    def __str__(self) -> str:
        return "\n".join(d.format() for d in self.errors or self.diagnostics)

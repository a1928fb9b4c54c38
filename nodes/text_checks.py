"""Checking spec and block-weight texts against architectures, shared by every node that takes them.

The merge nodes' queue-time validation and the XY/diff axis parsing both need the same answer: which errors
a text has in each architecture it may be meant for, or None as soon as one architecture accepts it. One
place keeps "valid for some architecture" meaning the same thing on every input.
"""
from __future__ import annotations

from ..merge_core import MergeSpecError, parse_block_weights, validate_spec


def spec_errors(text: str, arch) -> list:
    """The error diagnostics of an elemental spec for `arch` (warnings do not stop a merge)."""
    return [d for d in validate_spec(text, arch) if d.severity == "error"]


def weights_errors(text: str, arch) -> list:
    """The errors of a preset name or weight string for `arch`."""
    try:
        parse_block_weights(text, arch)
    except MergeSpecError as exc:
        return exc.errors or exc.diagnostics
    except ValueError as exc:  # a preset lookup may fail with a plain ValueError
        return [str(exc)]
    return []


def errors_per_architecture(text: str, archs, check) -> dict | None:
    """None when `check(text, arch)` finds nothing for one of `archs` (Architecture objects, tried in
    order); else {arch name: errors} for every one tried, for the caller to report the closest."""
    found = {}
    for arch in archs:
        errors = check(text, arch)
        if not errors:
            return None
        found[arch.name] = errors
    return found

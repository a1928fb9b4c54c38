"""Temporary shim: delete once nodes/merge_nodes.py calls merge_core.text_problem (same messages)."""
from ..merge_core import closest_architecture, validate_block_weights, validate_spec


def spec_errors(text, arch):
    return [d for d in validate_spec(text, arch) if d.is_error]


def weights_errors(text, arch):
    return [d for d in validate_block_weights(text, arch) if d.is_error]


def errors_per_architecture(text, archs, check):
    return None if closest_architecture(text, check, archs).valid else {a.name: check(text, a) for a in archs}

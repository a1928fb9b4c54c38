"""What /prompt must refuse about a merge node's widgets, before any model is seen: declared parameter
ranges, the merge mode, the (mode, calc mode) pair, gamma, and the plain alpha/beta of the bounded calc modes.
Pure; the nodes' `validate_inputs` call it, and their run-time checks use the same rules."""
from __future__ import annotations

from .calc_modes import check_gamma, check_pair, check_ratios, uses_beta
from .methods import MERGE_METHODS, get_merge_method
from .params import ALPHA, BETA, GAMMA

MODES = tuple(MERGE_METHODS)


def check_calc(mode: str, calc_mode: str, calc_option: float) -> None:
    """ValueError when the calc mode does not exist, does not go with `mode`, or gets a bad gamma."""
    check_pair(mode, calc_mode)
    check_gamma(calc_mode, float(calc_option))


# The widgets `calc_queue_problem` reads: declaring an input in a node's validate_inputs makes ComfyUI skip its
# own min/max and choice checks for it, so their declared ranges are checked here.
CHECKED_PARAMS = (ALPHA, BETA, GAMMA)


def calc_queue_problem(mode, calc_mode, calc_option, alpha, beta) -> str | None:
    """What /prompt must refuse about the merge widgets (None when fine): ranges and choices (the declared
    parameters), the (mode, calc mode) pair, gamma, and the plain alpha/beta of the bounded calc modes
    (tensor, tensor2, extract); ratios from linked block weights and specs are checked when the merge runs.
    Values still linked (None) are not checked here."""
    given = {"alpha": alpha, "beta": beta, "calc_option": calc_option}
    for param in CHECKED_PARAMS:
        value = given[param.name]
        problem = None if value is None else param.problem(value)
        if problem:
            return problem
    if mode is not None and mode not in MODES:
        return f"unknown mode {mode!r}; valid: {', '.join(MODES)}"
    if mode is None or calc_mode is None:
        return None
    try:
        check_calc(mode, calc_mode, GAMMA.default if calc_option is None else calc_option)
        with_beta = uses_beta(get_merge_method(mode), calc_mode)
        check_ratios(calc_mode, 0.0 if alpha is None else alpha,
                     beta if with_beta and beta is not None else 0.0, "the plain alpha/beta")
    except ValueError as exc:
        return str(exc)
    return None


def model_count_queue_problem(mode, connected_models, prefix: str = "model_") -> str | None:
    """Why the models connected besides A (`connected_models`: input names such as "model_b" or "ckpt_c") are
    too few for `mode`, or None; None while the mode itself is linked (unknown). `prefix`: the node's input
    names are prefix + a..e."""
    if mode is None or mode not in MODES:
        return None
    inputs = tuple(prefix + s for s in "bcde")
    return get_merge_method(mode).count_problem(len(list(connected_models)), inputs, prefix + "a")

"""The task-vector methods' settings besides alpha: every declared per-key parameter (density, drop_rate,
epsilon, outlier_rate) resolved per key exactly like alpha (plain value, then block weights, then the elemental
spec: `merge_ratios.resolve_side`), the seed, and Average's model weights. Pure: the nodes, the XY plot and the
recipe rebuild share it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..text.written import TextInput
from .merge_ratios import resolve_side
from .methods import MergeMethod
from .params import MERGE_SEED, PARAMS, PER_KEY_PARAMS, task_only
from .resolve import Resolution

MODEL_WEIGHTS = "model_weights"  # Average's weights: a text socket, one number per model in A, B, C, D, E order
MODEL_WEIGHTS_MEANING = ("Average and Geometric median: one weight per model, comma-separated, model_a first (empty: equal weights); "
                         "unused by the other methods")


def task_params(method: MergeMethod) -> tuple:
    """The per-key parameters besides alpha that `method` reads (their sockets matter for it)."""
    return tuple(p for p in task_only(method.params) if p.per_key)


def parse_model_weights(text: str | None, n_models: int) -> tuple:
    """Average's weights for `n_models` models (A first): () for equal weights; ValueError naming the input."""
    text = (text or "").strip()
    if not text:
        return ()
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        weights = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{MODEL_WEIGHTS}: {text!r} is not a comma-separated list of numbers") from None
    if len(weights) != n_models:
        raise ValueError(f"{MODEL_WEIGHTS}: {len(weights)} values for {n_models} models (model_a first, then "
                         f"each connected model_b..model_e)")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"{MODEL_WEIGHTS}: weights must be >= 0 with a positive sum, got {text!r}")
    return weights


@dataclass(frozen=True, eq=False)
class TaskValues:
    """The per-key parameters of one task-vector merge: name -> Resolution (every key's value), the seed
    and the model weights. `at(key)` gives one key's values."""
    resolutions: dict = field(default_factory=dict)
    seed: int = 0
    weights: tuple = ()

    def at(self, key: str) -> dict:
        return {name: r.ratio(key) for name, r in self.resolutions.items()}


def values_problem(values: dict, key: str, block: str | None) -> str | None:
    """Why one of a key's resolved values (`TaskValues.at(key)`) is outside its parameter's range (the block's
    spec or weights set it)."""
    for name, value in values.items():
        problem = PARAMS[name].problem(value)
        if problem:
            return f"{problem} in block {block or 'outside every block'} (key {key})"
    return None


def resolve_task_values(arch, keys, method: MergeMethod, values: dict, texts: dict | None = None,
                        n_models: int = 0) -> TaskValues:
    """`values`: param name -> the plain value (sockets; missing: the declared default), including merge_seed
    and model_weights; `texts`: "block_weights_<p>" / "elemental_<p>" -> TextInput or None."""
    texts = texts or {}
    resolutions: dict[str, Resolution] = {}
    for param in task_params(method):
        plain = float(values.get(param.name, param.default))
        resolutions[param.name] = resolve_side(keys, arch, plain, texts.get(f"block_weights_{param.name}"),
                                               texts.get(f"elemental_{param.name}"), param.name)
    seed = int(values.get(MERGE_SEED.name, MERGE_SEED.default)) if method.random else 0
    weights = parse_model_weights(values.get(MODEL_WEIGHTS), n_models) if method.weighted else ()
    return TaskValues(resolutions, seed, weights)


def text_socket_names() -> tuple:
    """The link inputs of the per-key parameters besides alpha/beta, in socket order."""
    return tuple(f"{kind}_{p.name}" for p in task_only(PER_KEY_PARAMS) for kind in ("block_weights", "elemental"))


def text_of_input(value) -> TextInput | None:
    return value if isinstance(value, TextInput) or value is None else TextInput(str(value), "auto")


@dataclass(frozen=True)
class TaskArgs:
    """What one key's task-vector merge needs besides the tensors: hashable, so equal settings give the same
    interned patch (the XY re-merge then sees an unchanged key as unchanged)."""
    method: str
    values: tuple    # ((param name, value), ...) of this key, alpha included
    seed: int
    key: str         # the checkpoint name: the random methods' generator derives from it
    weights: tuple   # Average / Geometric median: one weight per model, A first ( (): equal )
    sources: tuple   # the source names read, in order ("b", "c", "d", "e")


def key_args(method: MergeMethod, task: TaskValues, values: dict, canonical: str, alpha: float,
             sources: tuple) -> TaskArgs:
    """The TaskArgs of one key (`values`: its `task.at(key)`; `canonical`: its checkpoint name) under `method`
    with alpha `alpha`. `task.weights` has one weight per model already: `resolve_task_values` is given the
    number of models that `sources` holds (A and each source) and `parse_model_weights` checks it."""
    values = dict(values)
    if any(p.name == "alpha" for p in method.params):
        values["alpha"] = float(alpha)
    return TaskArgs(method.name, tuple(sorted(values.items())), task.seed if method.random else 0, canonical,
                    tuple(task.weights), tuple(sources))


def keeps_a(method: MergeMethod, alpha: float) -> bool:
    """Whether a key keeps A's weight exactly without computing anything: alpha 0 for a method whose result is
    A plus alpha times something."""
    return method.scaled_by_alpha and alpha == 0.0

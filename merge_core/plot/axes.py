"""XY/XYZ-plot axes and diff-checker targets: one table of axis types, parsing with errors that name the line,
and what each cell's graph settings are.

Every cell is stated as a plain graph: `Settings` (what an ElementalMerge node is given, as texts) plus
`Extras` (which checkpoint each model input loads, an ElementalAdjust's values, the KSampler's seed and
positive prompt). So a cell can be rebuilt by a plain graph, and its ratios come from the very same resolver.

`AXIS_TYPES` is the one table: for each type, in the menu's order, how its values are separated, what a
value does, its parser and how a value changes a cell. A pinpoint axis (`pinpoint element`, `pinpoint blocks`,
`pinpoint adjust`) names *what* to change and takes its numbers from the other of x/y, whose type (`alpha`
or `beta`) says which ratio of the target it sets.

Pinpoint and diff targets become one spec entry appended to the base spec (entries apply in order, the last
one that selects a key decides), e.g. `OUT05:attn2.to_k` at 0.5 -> `OUT05:attn2.to_k:0.5`, block `IN07` ->
`IN07::0.5`. An `elemental` value is appended to the base alpha spec the same way. A `random` value is a
seed: the draw is made when the models' architecture and keys are known (`resolve_random`), rounded as used,
and written into the cell's Settings as a weight string and/or spec.

Pure logic (no ComfyUI): the queue-time validation (architecture unknown: a value is accepted when it is
valid for some architecture, see `merge_core.text.validation`) and the run-time one share this code.
"""
from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass, field, replace
from typing import Callable

from ..merge.adjust import NAMES as ADJUST_NAMES
from ..merge.adjust import AdjustError, AdjustValues, parse_adjust
from ..merge.params import (DENSITY, DROP_RATE, EPSILON, GAMMA, MERGE_SEED, NORMAL, OUTLIER_RATE, PARAMS,
                            TASK_ONLY_PARAMS, task_only)
from ..numbers import finite_float
from ..text.spec import validate_spec
from ..text.validation import closest_architecture, validate_block_weights
from .random_merge import HELP as RANDOM_HELP
from .random_merge import RandomSettingsError, check_random_settings, draw, parse_random_settings

NONE, ELEMENTAL, PIN_ELEMENT, PIN_BLOCKS, ALPHA, BETA, PRESET, CALC = (
    "none", "elemental", "pinpoint element", "pinpoint blocks", "alpha", "beta", "block weights preset",
    "calc mode")
AB, BWA, BWB, ADD_ELEMENTAL, SEED, PROMPT = (
    "alpha and beta", "block weights alpha", "block weights beta", "add elemental", "seed", "prompt")
MODEL_A, MODEL_B, MODEL_C, ADJUST, PIN_ADJUST, RANDOM = (
    "model A", "model B", "model C", "adjust", "pinpoint adjust", "random")
MODEL_AXES = {MODEL_A: "A", MODEL_B: "B", MODEL_C: "C"}
RATIO_AXES = (ALPHA, BETA)
NO_MERGE_AXES = (SEED, PROMPT)
DEFAULT_RANDOM_SETTINGS = "R"
MERGE_METHOD = "merge method"


class AxisError(ValueError):
    """An invalid axis value; the message names the axis input and the line."""


@dataclass(frozen=True)
class Settings:
    """What ElementalMerge is given (texts, not objects): the base of a plot and every cell."""
    alpha: float
    beta: float
    block_weights_alpha: str | None = None
    block_weights_beta: str | None = None
    elemental_alpha: str = ""
    elemental_beta: str = ""
    calc_mode: str = NORMAL
    calc_option: float = GAMMA.default
    # A task-vector method's plain parameters (each key's value then comes from the node's block weights and
    # specs for it, as in ElementalMerge); `task_params` names those the method reads, for `describe`.
    density: float = DENSITY.default
    drop_rate: float = DROP_RATE.default
    epsilon: float = EPSILON.default
    outlier_rate: float = OUTLIER_RATE.default
    merge_seed: float = MERGE_SEED.default
    task_params: tuple = ()

    def task_values(self) -> dict:
        """The task-vector parameters as ElementalMerge's sockets take them."""
        return {p.name: (int(getattr(self, p.name)) if p.integer else float(getattr(self, p.name)))
                for p in TASK_ONLY_PARAMS}

    def describe(self) -> str:
        parts = [f"alpha={self.alpha:g}", f"beta={self.beta:g}"]
        if self.calc_mode != NORMAL:
            parts.append(f"calc_mode={self.calc_mode} calc_option={self.calc_option:g}")
        parts += [f"{name}={getattr(self, name):g}" for name in self.task_params]
        for name in ("block_weights_alpha", "block_weights_beta"):
            if getattr(self, name):
                parts.append(f"{name}={getattr(self, name)}")
        for name in ("elemental_alpha", "elemental_beta"):
            text = one_line(getattr(self, name))
            if text:
                parts.append(f"{name}=[{text}]")
        return " ".join(parts)


@dataclass(frozen=True)
class Extras:
    """What a cell's graph has besides the ElementalMerge: loaders, Adjust, KSampler seed and prompt."""
    models: tuple = ()                 # (("A", checkpoint name), ...) replacing the node's model/clip inputs
    adjust: AdjustValues | None = None
    seed: int | None = None            # None: the node's seed
    positive: str | None = None        # None: the node's positive prompt
    random_seed: int | None = None     # drawn into the Settings by resolve_random
    mode: str | None = None            # None: the node's merge method

    def model_set(self) -> tuple:
        return tuple(sorted(self.models))

    def merge_set(self) -> tuple:
        """What needs a merge of its own (models and method): cells that share it re-merge incrementally."""
        return self.model_set() + ((("mode", self.mode),) if self.mode is not None else ())

    def describe(self) -> str:
        parts = [f"mode={self.mode}"] if self.mode is not None else []
        parts += [f"model_{k.lower()}={v}" for k, v in self.model_set()]
        if self.adjust is not None and not self.adjust.is_zero:
            parts.append(f"adjust=[{self.adjust.text()}]")
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        if self.positive is not None:
            parts.append(f"positive={self.positive!r}")
        return " ".join(parts)


@dataclass(frozen=True)
class Item:
    """One value of an axis: its label, the 1-based line it starts on, and its parsed payload."""
    label: str
    line: int
    value: object


@dataclass(frozen=True)
class Axis:
    type: str
    items: tuple

    @property
    def title(self) -> str:
        return "" if self.type == NONE else self.type


NONE_AXIS = Axis(NONE, (Item("", 0, None),))


@dataclass(frozen=True)
class PlotCell:
    """One cell: its grid position (z = which grid), labels, and the plain-graph settings it equals."""
    x: int
    y: int
    z: int
    x_label: str
    y_label: str
    z_label: str
    settings: Settings
    extras: Extras = field(default_factory=Extras)
    draw_label: str = ""               # the random draw, rounded as used ("" when no random axis)

    def describe(self) -> str:
        more = self.extras.describe()
        return self.settings.describe() + (" " + more if more else "")


# ---- small text helpers -------------------------------------------------------------------------------------

def one_line(text: str) -> str:
    """A multi-line spec as one line (comments dropped, lines joined by commas), for labels."""
    lines = [l.split("#", 1)[0].strip() for l in (text or "").splitlines()]
    return ", ".join(l for l in lines if l)


def _entries(text: str):
    """(entry, line) for each newline- or comma-separated non-empty entry; '#' starts a comment."""
    for n, raw in enumerate((text or "").replace("\r\n", "\n").split("\n"), start=1):
        for part in raw.split("#", 1)[0].split(","):
            if part.strip():
                yield part.strip(), n


def _lines(text: str):
    """(line text, 1-based line) for each non-empty line; '#' starts a comment."""
    for n, raw in enumerate((text or "").replace("\r\n", "\n").split("\n"), start=1):
        entry = raw.split("#", 1)[0].strip()
        if entry:
            yield entry, n


def _groups(text: str):
    """(group text, first line) for blank-line-separated groups (the `elemental` axis)."""
    group, start = [], 0
    for n, raw in enumerate((text or "").replace("\r\n", "\n").split("\n") + [""], start=1):
        if raw.strip():
            if not group:
                start = n
            group.append(raw)
        elif group:
            yield "\n".join(group), start
            group = []


def join_spec(base: str, extra: str) -> str:
    base = (base or "").rstrip()
    return f"{base}\n{extra}" if base else extra


def ratio_text(r: float) -> str:
    """The shortest text that reads back as exactly `r` (a spec ratio must be the same float)."""
    return repr(float(r))


def _problem(text: str, arch, validate):
    """None when `text` is valid for `arch` (or, with arch None, for some architecture); else the errors it
    has in the closest architecture (the one the user most likely meant)."""
    fit = closest_architecture(text, validate, None if arch is None else [arch])
    return None if fit.valid else fit.errors


def _require_valid(text: str, arch, validate, where: str, line: int, entry: str) -> None:
    """AxisError naming the input, line and entry when `text` is valid for no architecture tried; the
    closest architecture's errors are the ones shown."""
    errors = _problem(text, arch, validate)
    if errors is not None:
        detail = "; ".join(d.message + (f" ({d.hint})" if d.hint else "") for d in errors)
        raise AxisError(f"{where} line {line}: '{entry}': {detail}")


def _nonempty(items: list, message: str) -> list:
    if not items:
        raise AxisError(message)
    return items


# ---- targets (pinpoint axes and the diff checker) ------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """`blocks:elements` with the ratio left open; `elements` empty = the whole blocks."""
    source: str
    blocks: str
    elements: str

    def spec_line(self, ratio: float) -> str:
        return f"{self.blocks}:{self.elements}:{ratio_text(ratio)}"


def parse_target(entry: str, kind: str = PIN_ELEMENT) -> Target:
    """`OUT05:attn2` -> element target; `IN07` or `IN07:` -> the whole block. Syntax only."""
    if entry.count(":") > 1:
        raise ValueError("expected 'blocks:elements' (a ratio is not written here: it comes from the ratio "
                         "input or the other axis)")
    blocks, _, elements = entry.partition(":")
    if kind == PIN_BLOCKS and elements.strip():
        raise ValueError("a pinpoint-blocks entry names blocks only (use 'pinpoint element' for elements)")
    if not blocks.strip() and not elements.strip():
        raise ValueError("empty target")
    return Target(entry, blocks.strip(), elements.strip())


def parse_targets(text: str, arch=None, where: str = "targets", kind: str = PIN_ELEMENT) -> list[Item]:
    """Items whose value is a Target, checked against `arch` (None: valid for some architecture)."""
    items = []
    for entry, line in _entries(text):
        try:
            target = parse_target(entry, kind)
        except ValueError as exc:
            raise AxisError(f"{where} line {line}: '{entry}': {exc}") from None
        _require_valid(target.spec_line(0.0), arch, validate_spec, where, line, entry)
        items.append(Item(entry, line, target))
    return _nonempty(items, f"{where}: no entry given")


def pinpoint(settings: Settings, target: Target, ratio: float, which: str) -> Settings:
    """`settings` with `target` set to `ratio` in the alpha (`which`="alpha") or beta spec."""
    field_name = "elemental_alpha" if which == ALPHA else "elemental_beta"
    return replace(settings, **{field_name: join_spec(getattr(settings, field_name), target.spec_line(ratio))})


# ---- value parsers: (text, arch, where, checkpoints) -> [Item] -------------------------------------------------

def _numbers(text, arch, where, checkpoints) -> list:
    items = []
    for entry, line in _entries(text):
        v = finite_float(entry)
        if v is None:
            raise AxisError(f"{where} line {line}: '{entry}' is not a finite number")
        items.append(Item(f"{v:g}", line, v))
    return _nonempty(items, f"{where}: no number given")


def _elemental(text, arch, where, checkpoints) -> list:
    items = []
    for group, start in _groups(text):
        errors = _problem(group, arch, validate_spec)
        if errors is not None:
            d = errors[0]
            raise AxisError(f"{where} line {start + d.line - 1}: {d.format().split(': ', 1)[1]}")
        items.append(Item(one_line(group), start, group))
    return _nonempty(items, f"{where}: no spec given (separate the specs of the cells by blank lines)")


def _presets(text, arch, where, checkpoints) -> list:
    items = []
    for entry, line in _lines(text):
        _require_valid(entry, arch, validate_block_weights, where, line, entry)
        items.append(Item(entry, line, entry))
    return _nonempty(items, f"{where}: no preset given (one preset name or weight string per line)")


def _weight_strings(text, arch, where, checkpoints) -> list:
    items = []
    for entry, line in _lines(text):
        _require_valid(entry, arch, validate_block_weights, where, line, entry)
        items.append(Item(entry, line, entry))
    return _nonempty(items, f"{where}: no preset name or weight string given (one per line)")


def _calc_modes(text, arch, where, checkpoints) -> list:
    from ..merge.calc_modes import CALC_MODE_NAMES

    items = []
    for entry, line in _entries(text):
        if entry not in CALC_MODE_NAMES:
            raise AxisError(f"{where} line {line}: unknown calc mode '{entry}' (valid: {', '.join(CALC_MODE_NAMES)})")
        items.append(Item(entry, line, entry))
    return _nonempty(items, f"{where}: no calc mode given")


def _merge_methods(text, arch, where, checkpoints) -> list:
    from ..merge.methods import MERGE_METHODS, get_merge_method

    items = []
    for entry, line in _entries(text):
        try:
            name = get_merge_method(entry).name
        except ValueError:
            raise AxisError(f"{where} line {line}: unknown merge method '{entry}' (valid: "
                            f"{', '.join(MERGE_METHODS)})") from None
        items.append(Item(name, line, name))
    return _nonempty(items, f"{where}: no merge method given")


def _set_method(s, e, v):
    from ..merge.methods import MERGE_METHODS

    shown = tuple(p.name for p in task_only(MERGE_METHODS[v].params))
    return replace(s, task_params=shown), replace(e, mode=v)


def _targets_of(kind: str):
    return lambda text, arch, where, checkpoints: parse_targets(text, arch, where, kind=kind)


def _pairs(text, arch, where, checkpoints) -> list:
    items = []
    for entry, line in _lines(text):
        parts = entry.replace(",", " ").split()
        values = [finite_float(p) for p in parts]
        if len(parts) != 2 or None in values:
            raise AxisError(f"{where} line {line}: '{entry}': expected two numbers 'alpha beta', e.g. '0.3 0.2'")
        items.append(Item(f"a={values[0]:g} b={values[1]:g}", line, tuple(values)))
    return _nonempty(items, f"{where}: no 'alpha beta' pair given (one per line)")


def _spec_entries(text, arch, where, checkpoints) -> list:
    items = []
    for entry, line in _lines(text):
        _require_valid(entry, arch, validate_spec, where, line, entry)
        items.append(Item(entry, line, entry))
    return _nonempty(items, f"{where}: no spec entry given (one per line)")


def _seeds(text, arch, where, checkpoints) -> list:
    items = []
    for entry, line in _entries(text):
        try:
            v = int(entry)
        except ValueError:
            raise AxisError(f"{where} line {line}: '{entry}' is not a whole number (seed)") from None
        if not 0 <= v <= 0xFFFFFFFFFFFFFFFF:
            raise AxisError(f"{where} line {line}: seed {v} is outside 0..18446744073709551615")
        items.append(Item(str(v), line, v))
    return _nonempty(items, f"{where}: no seed given")


def _prompts(text, arch, where, checkpoints) -> list:
    return _nonempty([Item(e, n, e) for e, n in _lines(text)], f"{where}: no prompt given (one per line)")


def _models(text, arch, where, checkpoints) -> list:
    items = []
    for entry, line in _lines(text):
        if checkpoints is not None and entry not in checkpoints:
            close = difflib.get_close_matches(entry, list(checkpoints), n=3, cutoff=0.4)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise AxisError(f"{where} line {line}: checkpoint '{entry}' is not in the checkpoints folder{hint}")
        items.append(Item(entry, line, entry))
    return _nonempty(items, f"{where}: no checkpoint name given (one per line)")


def _adjusts(text, arch, where, checkpoints) -> list:
    items = []
    for entry, line in _lines(text):
        try:
            v = parse_adjust(entry, f"{where} line {line}")
        except AdjustError as exc:
            raise AxisError(str(exc)) from None
        items.append(Item(v.label(), line, v))
    return _nonempty(items, f"{where}: no adjust values given (one line of 8 numbers or NAME=value pairs)")


def _adjust_names(text, arch, where, checkpoints) -> list:
    items = []
    for entry, line in _entries(text):
        if entry.upper() not in ADJUST_NAMES:
            raise AxisError(f"{where} line {line}: '{entry}' is not an adjust name (valid: {', '.join(ADJUST_NAMES)})")
        items.append(Item(entry.upper(), line, entry.upper()))
    return _nonempty(items, f"{where}: no adjust name given")


# ---- what a value does to a cell: (settings, extras, value) -> (settings, extras) --------------------------------

def _set(**fields_of_value):
    """An apply function setting Settings fields from the value (a callable of the value per field)."""
    return lambda s, e, v: (replace(s, **{k: f(v) for k, f in fields_of_value.items()}), e)


def _append_alpha_spec(s, e, v):
    return replace(s, elemental_alpha=join_spec(s.elemental_alpha, v)), e


def _set_model(letter: str):
    def apply(s, e, v):
        models = dict(e.models)
        models[letter] = v
        return s, replace(e, models=tuple(sorted(models.items())))
    return apply


def _pin_target(s, e, target, number, which):
    return pinpoint(s, target, number, which), e


def _pin_adjust(s, e, name, number, which):
    return s, replace(e, adjust=(e.adjust or AdjustValues()).with_value(name, number))


@dataclass(frozen=True)
class AxisType:
    """One row of the axis table. `apply` changes a cell by a value; a pinpoint axis has `pin` instead,
    taking the other axis's number and that axis's type (alpha or beta)."""
    separator: str
    meaning: str
    parse: Callable
    apply: Callable | None = None
    pin: Callable | None = None

    @property
    def is_pinpoint(self) -> bool:
        return self.pin is not None


_same = lambda v: v  # noqa: E731

# The menu, in its order.
AXIS_TYPES = {
    NONE: AxisType("-", "one column/row: the base settings", None, lambda s, e, v: (s, e)),
    ELEMENTAL: AxisType("blank line", "appends the spec to the base elemental_alpha", _elemental, _append_alpha_spec),
    PIN_ELEMENT: AxisType("newline or comma", "'blocks:elements' set to each ratio of the other axis",
                          _targets_of(PIN_ELEMENT), pin=_pin_target),
    PIN_BLOCKS: AxisType("newline or comma", "'blocks' (names, ranges, NOT) set to each ratio of the other axis",
                         _targets_of(PIN_BLOCKS), pin=_pin_target),
    ALPHA: AxisType("newline or comma", "alpha (or, opposite a pinpoint axis, the pinpoint's alpha)", _numbers,
                    _set(alpha=_same)),
    BETA: AxisType("newline or comma", "beta (or, opposite a pinpoint axis, the pinpoint's beta)", _numbers,
                   _set(beta=_same)),
    PRESET: AxisType("newline", "block_weights_alpha: a preset name or a weight string", _presets,
                     _set(block_weights_alpha=_same)),
    CALC: AxisType("newline or comma", "the calc mode (normal, cosineA, ... see docs/calc-modes.md); every key "
                   "is re-merged when it changes", _calc_modes, _set(calc_mode=_same)),
    AB: AxisType("newline", "alpha and beta as a pair, e.g. '0.3 0.2'", _pairs,
                 _set(alpha=lambda v: v[0], beta=lambda v: v[1])),
    BWA: AxisType("newline", "block_weights_alpha: a preset name or a weight string", _weight_strings,
                  _set(block_weights_alpha=_same)),
    BWB: AxisType("newline", "block_weights_beta: a preset name or a weight string", _weight_strings,
                  _set(block_weights_beta=_same)),
    ADD_ELEMENTAL: AxisType("newline", "spec entries appended to the base elemental_alpha", _spec_entries,
                            _append_alpha_spec),
    SEED: AxisType("newline or comma", "the sampler's seed (no re-merge)", _seeds,
                   lambda s, e, v: (s, replace(e, seed=v))),
    PROMPT: AxisType("newline", "the positive prompt (no re-merge)", _prompts,
                     lambda s, e, v: (s, replace(e, positive=v))),
    MODEL_A: AxisType("newline", "checkpoint for model_a (and its CLIP as clip_a)", _models, _set_model("A")),
    MODEL_B: AxisType("newline", "checkpoint for model_b (and its CLIP as clip_b)", _models, _set_model("B")),
    MODEL_C: AxisType("newline", "checkpoint for model_c (and its CLIP as clip_c)", _models, _set_model("C")),
    ADJUST: AxisType("newline", "Adjust: 8 numbers IN,OUT,OUT2,CONT,BRI,COL1,COL2,COL3 or NAME=value pairs",
                     _adjusts, lambda s, e, v: (s, replace(e, adjust=v))),
    PIN_ADJUST: AxisType("newline or comma", "one Adjust name, set to each number of the other axis",
                         _adjust_names, pin=_pin_adjust),
    RANDOM: AxisType("newline or comma", "a seed for random ratios drawn as random_settings says", _seeds,
                     lambda s, e, v: (s, replace(e, random_seed=v))),
}


def _param_values(param):
    """The parser of a declared parameter's axis: numbers within the declared range."""
    def parse(text, arch, where, checkpoints):
        items = _numbers(text, arch, where, checkpoints)
        for item in items:
            problem = param.problem(item.value)
            if problem:
                raise AxisError(f"{where} line {item.line}: {problem}")
        return items
    return parse


# The merge method (after the fixed menu): each value a merge of its own, the models as the node has them.
AXIS_TYPES[MERGE_METHOD] = AxisType("newline or comma", "the merge mode (Weight sum, ..., TIES, DARE, ...: "
                                    "docs/merge-methods.md); each method is merged in full once", _merge_methods,
                                    _set_method)

# Every other declared parameter of the methods and calc modes is an axis too (after the fixed menu, so
# saved workflows keep their choices): its values set the Settings field of the same name.
for _param in PARAMS.values():
    if _param.name not in AXIS_TYPES:
        AXIS_TYPES[_param.name] = AxisType("newline or comma", _param.meaning, _param_values(_param),
                                           _set(**{_param.name: _same}))
PINPOINTS = tuple(t for t, row in AXIS_TYPES.items() if row.is_pinpoint)


# ---- parsing ------------------------------------------------------------------------------------------------

def parse_axis(axis_type: str, text: str, arch=None, where: str = "values", checkpoints=None) -> Axis:
    """The Axis for `axis_type` and its values text; AxisError names `where` and the line. `checkpoints`:
    the names a model axis may use (None: not checked)."""
    row = AXIS_TYPES.get(axis_type)
    if row is None:
        raise AxisError(f"{where}: unknown axis type '{axis_type}' (valid: {', '.join(AXIS_TYPES)})")
    if axis_type == NONE:
        return NONE_AXIS
    return Axis(axis_type, tuple(row.parse(text, arch, where, checkpoints)))


def check_axes(x_type: str, y_type: str, z_type: str = NONE, random_settings: str | None = None,
               arch=None) -> None:
    """Pairing rules: a pinpoint axis (x or y) takes its numbers from the other of x/y; Z is never a
    pinpoint; one axis per type; random_settings valid when a random axis is used."""
    for this, other, name in ((x_type, y_type, "x"), (y_type, x_type, "y")):
        if this in PINPOINTS and other not in RATIO_AXES:
            other_name = "y" if name == "x" else "x"
            what = "the adjust value" if this == PIN_ADJUST else "the pinpoint's ratio"
            raise AxisError(f"{name}_type '{this}' takes its numbers from the other axis: set {other_name}_type "
                            f"to 'alpha' or 'beta' ({what}), not '{other}'")
    if z_type in PINPOINTS:
        raise AxisError(f"z_type '{z_type}' is a pinpoint axis: put it on x or y, with alpha or beta opposite")
    types = [t for t in (x_type, y_type, z_type) if t != NONE]
    dupes = sorted({t for t in types if types.count(t) > 1})
    if dupes:
        raise AxisError(f"axis type '{dupes[0]}' is used twice: each axis needs its own type")
    if RANDOM in types:
        try:
            check_random_settings(random_settings or DEFAULT_RANDOM_SETTINGS, arch)
        except RandomSettingsError as exc:
            raise AxisError(str(exc)) from None


def parse_plot(types: tuple, texts: tuple, arch=None, random_settings: str | None = None, checkpoints=None):
    """(x, y, z) Axes from the three types and value texts."""
    check_axes(*types, random_settings=random_settings, arch=arch)
    return tuple(parse_axis(t, v, arch, f"{n}_values", checkpoints) for t, v, n in zip(types, texts, "xyz"))


# ---- cells --------------------------------------------------------------------------------------------------

def build_cells(base: Settings, x: Axis, y: Axis, z: Axis = NONE_AXIS, base_extras: Extras = Extras()) -> list:
    """Cells in grid order (z, then y, then x): consecutive cells differ in one axis value. A pinpoint axis on
    x or y pairs with the other of x/y."""
    cells = []
    for (zi, zv), (yi, yv), (xi, xv) in itertools.product(enumerate(z.items), enumerate(y.items),
                                                          enumerate(x.items)):
        s, e = base, base_extras
        if AXIS_TYPES[x.type].is_pinpoint:
            s, e = AXIS_TYPES[x.type].pin(s, e, xv.value, yv.value, y.type)
        elif AXIS_TYPES[y.type].is_pinpoint:
            s, e = AXIS_TYPES[y.type].pin(s, e, yv.value, xv.value, x.type)
        else:
            s, e = AXIS_TYPES[x.type].apply(s, e, xv.value)
            s, e = AXIS_TYPES[y.type].apply(s, e, yv.value)
        s, e = AXIS_TYPES[z.type].apply(s, e, zv.value)
        cells.append(PlotCell(xi, yi, zi, xv.label, yv.label, zv.label, s, e))
    return cells


def resolve_random(cells: list, random_settings: str, arch, keys) -> list:
    """Cells with a random seed get the draw written into their Settings (block weights on the ratio side
    random_settings names, the element spec appended to that side's spec); `draw_label` shows it."""
    if not any(c.extras.random_seed is not None for c in cells):
        return cells
    rs = parse_random_settings(random_settings or DEFAULT_RANDOM_SETTINGS, arch)
    out = []
    for c in cells:
        if c.extras.random_seed is None:
            out.append(c)
            continue
        fill = c.settings.alpha if rs.ratio == "alpha" else c.settings.beta
        d = draw(rs, c.extras.random_seed, keys, fill=fill)
        s = c.settings
        if d.block_weights is not None:
            s = replace(s, **{f"block_weights_{rs.ratio}": d.block_weights})
        if d.spec:
            spec_field = f"elemental_{rs.ratio}"
            s = replace(s, **{spec_field: join_spec(getattr(s, spec_field), d.spec)})
        out.append(replace(c, settings=s, draw_label=d.label()))
    return out


def axis_title(this: Axis, other: Axis) -> str:
    """What an axis shows, e.g. 'alpha of the pinpoint element' opposite a pinpoint axis."""
    if this.type in RATIO_AXES and other.type == PIN_ADJUST:
        return "value of the pinpoint adjust"
    if this.type in RATIO_AXES and other.type in PINPOINTS:
        return f"{this.type} of the {other.type.replace('pinpoint ', '')}"
    return this.title


def random_help() -> str:
    """What the random_settings input accepts (the node's tooltip)."""
    return RANDOM_HELP


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, default: str) -> str:
    """A file-system-safe version of a model name (no folders, no extension)."""
    base = re.sub(r"\.(safetensors|ckpt|pt|pth|bin|sft)$", "", str(text or "").split("/")[-1].split("\\")[-1])
    base = _SAFE.sub("_", base).strip("._")
    return base[:64] or default


def calc_axis_problem(mode, types, texts) -> str | None:
    """A `calc mode` axis value that does not go with the plot's mode (None when all do, or unknown yet)."""
    from ..merge.calc_modes import check_pair

    if mode is None:
        return None
    for axis_type, text, name in zip(types, texts, "xyz"):
        if axis_type != CALC or text is None:
            continue
        try:
            for item in parse_axis(CALC, text, None, f"{name}_values").items:
                check_pair(mode, item.value)
        except (AxisError, ValueError) as exc:
            return f"{name}_values: {exc}" if not str(exc).startswith(f"{name}_values") else str(exc)
    return None

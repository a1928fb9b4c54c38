"""XYZ plots: every SuperMerger axis, stated as plain graph settings per cell.

`merge_core.plot_axes` holds the elemental axes (`elemental`, `pinpoint element`, `pinpoint blocks`, `alpha`,
`beta`, `block weights preset`) and what ElementalMerge is given (`Settings`). This module adds the axes that
reach beyond one ElementalMerge: ratios in pairs and whole weight strings, spec entries, the sampler's seed
and prompt, the checkpoints themselves, SuperMerger's Adjust and random merges, and a third (Z) axis.

Every cell stays a plain graph: `Settings` (an ElementalMerge) plus `Extras` (which checkpoint each model
input loads, an ElementalAdjust's values, the KSampler's seed and positive prompt). A `random` value is a
seed: the draw is made when the models' architecture and keys are known (`resolve_random`), rounded as used,
and written into the cell's Settings as a weight string and/or spec, so the table row rebuilds the cell.

Pure logic (no ComfyUI): the node validates with it when the prompt is queued (architecture unknown) and
builds the cells with it when it runs.
"""
from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass, field, replace

from . import plot_axes as pa
from ..merge.adjust import NAMES as ADJUST_NAMES, AdjustError, AdjustValues, parse_adjust
from ..numbers import finite_float
from .random_merge import RandomSettingsError, check_random_settings, draw, parse_random_settings
from ..text.spec import validate_spec
from ..text.validation import validate_block_weights

AB, BWA, BWB, ADD_ELEMENTAL, SEED, PROMPT = (
    "alpha and beta", "block weights alpha", "block weights beta", "add elemental", "seed", "prompt")
MODEL_A, MODEL_B, MODEL_C, ADJUST, PIN_ADJUST, RANDOM = (
    "model A", "model B", "model C", "adjust", "pinpoint adjust", "random")

# type -> (how values are separated, what a value does). Appended to plot_axes' menu, in this order.
NEW_AXIS_TYPES = {
    AB: ("newline", "alpha and beta as a pair, e.g. '0.3 0.2'"),
    BWA: ("newline", "block_weights_alpha: a preset name or a weight string"),
    BWB: ("newline", "block_weights_beta: a preset name or a weight string"),
    ADD_ELEMENTAL: ("newline", "spec entries appended to the base elemental_alpha"),
    SEED: ("newline or comma", "the sampler's seed (no re-merge)"),
    PROMPT: ("newline", "the positive prompt (no re-merge)"),
    MODEL_A: ("newline", "checkpoint for model_a (and its CLIP as clip_a)"),
    MODEL_B: ("newline", "checkpoint for model_b (and its CLIP as clip_b)"),
    MODEL_C: ("newline", "checkpoint for model_c (and its CLIP as clip_c)"),
    ADJUST: ("newline", "Adjust: 8 numbers IN,OUT,OUT2,CONT,BRI,COL1,COL2,COL3 or NAME=value pairs"),
    PIN_ADJUST: ("newline or comma", "one Adjust name, set to each number of the other axis"),
    RANDOM: ("newline or comma", "a seed for random ratios drawn as random_settings says"),
}
MODEL_AXES = {MODEL_A: "A", MODEL_B: "B", MODEL_C: "C"}
PINPOINTS = pa.PINPOINT + (PIN_ADJUST,)
NO_MERGE_AXES = (SEED, PROMPT)
DEFAULT_RANDOM_SETTINGS = "R"


def axis_types() -> dict:
    """The whole menu: plot_axes' types (read now, so axes other modules add there appear too), then ours."""
    return {**pa.AXIS_TYPES, **NEW_AXIS_TYPES}


@dataclass(frozen=True)
class Extras:
    """What a cell's graph has besides the ElementalMerge: loaders, Adjust, KSampler seed and prompt."""
    models: tuple = ()                 # (("A", checkpoint name), ...) replacing the node's model/clip inputs
    adjust: AdjustValues | None = None
    seed: int | None = None            # None: the node's seed
    positive: str | None = None        # None: the node's positive prompt
    random_seed: int | None = None     # drawn into the Settings by resolve_random

    def model_set(self) -> tuple:
        return tuple(sorted(self.models))

    def describe(self) -> str:
        parts = [f"model_{k.lower()}={v}" for k, v in self.model_set()]
        if self.adjust is not None and not self.adjust.is_zero:
            parts.append(f"adjust=[{self.adjust.text()}]")
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        if self.positive is not None:
            parts.append(f"positive={self.positive!r}")
        return " ".join(parts)


@dataclass(frozen=True)
class PlotCell:
    """One cell: its grid position (z = which grid), labels, and the plain-graph settings it equals."""
    x: int
    y: int
    z: int
    x_label: str
    y_label: str
    z_label: str
    settings: pa.Settings
    extras: Extras = field(default_factory=Extras)
    draw_label: str = ""               # the random draw, rounded as used ("" when no random axis)

    def describe(self) -> str:
        more = self.extras.describe()
        return self.settings.describe() + (" " + more if more else "")


# ---- parsing ------------------------------------------------------------------------------------------------

def _lines(text: str):
    """(line text, 1-based line) for each non-empty line; '#' starts a comment."""
    for n, raw in enumerate((text or "").replace("\r\n", "\n").split("\n"), start=1):
        entry = raw.split("#", 1)[0].strip()
        if entry:
            yield entry, n


def _ints(text: str, where: str, what: str) -> list:
    items = []
    for entry, line in pa._entries(text):
        try:
            v = int(entry)
        except ValueError:
            raise pa.AxisError(f"{where} line {line}: '{entry}' is not a whole number ({what})") from None
        if not 0 <= v <= 0xFFFFFFFFFFFFFFFF:
            raise pa.AxisError(f"{where} line {line}: {what} {v} is outside 0..18446744073709551615")
        items.append(pa.Item(str(v), line, v))
    return pa._nonempty(items, f"{where}: no {what} given")


def _pairs(text: str, where: str) -> list:
    items = []
    for entry, line in _lines(text):
        parts = entry.replace(",", " ").split()
        values = [finite_float(p) for p in parts]
        if len(parts) != 2 or None in values:
            raise pa.AxisError(f"{where} line {line}: '{entry}': expected two numbers 'alpha beta', e.g. '0.3 0.2'")
        items.append(pa.Item(f"a={values[0]:g} b={values[1]:g}", line, tuple(values)))
    return pa._nonempty(items, f"{where}: no 'alpha beta' pair given (one per line)")


def _checked_lines(text: str, arch, validate, where: str, what: str) -> list:
    items = []
    for entry, line in _lines(text):
        pa._require_valid(entry, arch, validate, where, line, entry)
        items.append(pa.Item(entry, line, entry))
    return pa._nonempty(items, f"{where}: no {what} given (one per line)")


def _models(text: str, where: str, checkpoints) -> list:
    items = []
    for entry, line in _lines(text):
        if checkpoints is not None and entry not in checkpoints:
            close = difflib.get_close_matches(entry, list(checkpoints), n=3, cutoff=0.4)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise pa.AxisError(f"{where} line {line}: checkpoint '{entry}' is not in the checkpoints folder{hint}")
        items.append(pa.Item(entry, line, entry))
    return pa._nonempty(items, f"{where}: no checkpoint name given (one per line)")


def _adjusts(text: str, where: str) -> list:
    items = []
    for entry, line in _lines(text):
        try:
            v = parse_adjust(entry, f"{where} line {line}")
        except AdjustError as exc:
            raise pa.AxisError(str(exc)) from None
        items.append(pa.Item(v.label(), line, v))
    return pa._nonempty(items, f"{where}: no adjust values given (one line of 8 numbers or NAME=value pairs)")


def _adjust_names(text: str, where: str) -> list:
    items = []
    for entry, line in pa._entries(text):
        if entry.upper() not in ADJUST_NAMES:
            raise pa.AxisError(f"{where} line {line}: '{entry}' is not an adjust name (valid: "
                               f"{', '.join(ADJUST_NAMES)})")
        items.append(pa.Item(entry.upper(), line, entry.upper()))
    return pa._nonempty(items, f"{where}: no adjust name given")


def parse_axis(axis_type: str, text: str, arch=None, where: str = "values", checkpoints=None) -> pa.Axis:
    """The Axis for any menu type; `checkpoints`: the names a model axis may use (None: not checked)."""
    if axis_type in pa.AXIS_TYPES:
        return pa.parse_axis(axis_type, text, arch, where)
    if axis_type not in NEW_AXIS_TYPES:
        raise pa.AxisError(f"{where}: unknown axis type '{axis_type}' (valid: {', '.join(axis_types())})")
    if axis_type == AB:
        items = _pairs(text, where)
    elif axis_type in (BWA, BWB):
        items = _checked_lines(text, arch, validate_block_weights, where, "preset name or weight string")
    elif axis_type == ADD_ELEMENTAL:
        items = _checked_lines(text, arch, validate_spec, where, "spec entry")
    elif axis_type in (SEED, RANDOM):
        items = _ints(text, where, "seed")
    elif axis_type == PROMPT:
        items = pa._nonempty([pa.Item(e, n, e) for e, n in _lines(text)], f"{where}: no prompt given (one per line)")
    elif axis_type in MODEL_AXES:
        items = _models(text, where, checkpoints)
    elif axis_type == ADJUST:
        items = _adjusts(text, where)
    else:
        items = _adjust_names(text, where)
    return pa.Axis(axis_type, tuple(items))


def check_axes(x_type: str, y_type: str, z_type: str = pa.NONE, random_settings: str | None = None,
               arch=None) -> None:
    """Pairing rules: a pinpoint axis (x or y) takes its numbers from the other of x/y; Z is never a
    pinpoint; one axis per model input; random_settings valid when a random axis is used."""
    for this, other, name in ((x_type, y_type, "x"), (y_type, x_type, "y")):
        if this in PINPOINTS and other not in pa.RATIO_AXES:
            other_name = "y" if name == "x" else "x"
            what = "the adjust value" if this == PIN_ADJUST else "the pinpoint's ratio"
            raise pa.AxisError(f"{name}_type '{this}' takes its numbers from the other axis: set {other_name}_type "
                               f"to 'alpha' or 'beta' ({what}), not '{other}'")
    if z_type in PINPOINTS:
        raise pa.AxisError(f"z_type '{z_type}' is a pinpoint axis: put it on x or y, with alpha or beta opposite")
    types = [t for t in (x_type, y_type, z_type) if t != pa.NONE]
    dupes = sorted({t for t in types if types.count(t) > 1})
    if dupes:
        raise pa.AxisError(f"axis type '{dupes[0]}' is used twice: each axis needs its own type")
    if RANDOM in types:
        try:
            check_random_settings(random_settings or DEFAULT_RANDOM_SETTINGS, arch)
        except RandomSettingsError as exc:
            raise pa.AxisError(str(exc)) from None


def parse_plot(types: tuple, texts: tuple, arch=None, random_settings: str | None = None, checkpoints=None):
    """(x, y, z) Axes from the three types and value texts."""
    check_axes(*types, random_settings=random_settings, arch=arch)
    return tuple(parse_axis(t, v, arch, f"{n}_values", checkpoints) for t, v, n in zip(types, texts, "xyz"))


# ---- cells --------------------------------------------------------------------------------------------------

def _modify(s: pa.Settings, e: Extras, axis_type: str, value):
    """(settings, extras) with one axis value applied."""
    if axis_type in pa.AXIS_TYPES:
        return pa._modify(s, axis_type, value), e
    if axis_type == AB:
        return replace(s, alpha=value[0], beta=value[1]), e
    if axis_type == BWA:
        return replace(s, block_weights_alpha=value), e
    if axis_type == BWB:
        return replace(s, block_weights_beta=value), e
    if axis_type == ADD_ELEMENTAL:
        return replace(s, elemental_alpha=pa.join_spec(s.elemental_alpha, value)), e
    if axis_type == SEED:
        return s, replace(e, seed=value)
    if axis_type == PROMPT:
        return s, replace(e, positive=value)
    if axis_type in MODEL_AXES:
        models = dict(e.models)
        models[MODEL_AXES[axis_type]] = value
        return s, replace(e, models=tuple(sorted(models.items())))
    if axis_type == ADJUST:
        return s, replace(e, adjust=value)
    if axis_type == RANDOM:
        return s, replace(e, random_seed=value)
    raise AssertionError(axis_type)


def _pinpoint(s: pa.Settings, e: Extras, target, number: float, which: str):
    if isinstance(target, str):  # pinpoint adjust: the name; the number is its value
        return s, replace(e, adjust=(e.adjust or AdjustValues()).with_value(target, number))
    return pa.pinpoint(s, target, number, which), e


def build_cells(base: pa.Settings, x: pa.Axis, y: pa.Axis, z: pa.Axis, base_extras: Extras = Extras()) -> list:
    """Cells in grid order (z, then y, then x). A pinpoint axis on x or y pairs with the other of x/y."""
    cells = []
    for (zi, zv), (yi, yv), (xi, xv) in itertools.product(enumerate(z.items), enumerate(y.items),
                                                          enumerate(x.items)):
        s, e = base, base_extras
        if x.type in PINPOINTS:
            s, e = _pinpoint(s, e, xv.value, yv.value, y.type)
        elif y.type in PINPOINTS:
            s, e = _pinpoint(s, e, yv.value, xv.value, x.type)
        else:
            s, e = _modify(s, e, x.type, xv.value)
            s, e = _modify(s, e, y.type, yv.value)
        s, e = _modify(s, e, z.type, zv.value)
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
            s = replace(s, **{spec_field: pa.join_spec(getattr(s, spec_field), d.spec)})
        out.append(replace(c, settings=s, draw_label=d.label()))
    return out


def axis_title(this: pa.Axis, other: pa.Axis) -> str:
    """What an axis shows, e.g. 'value of the pinpoint adjust' opposite a pinpoint adjust axis."""
    if this.type in pa.RATIO_AXES and other.type == PIN_ADJUST:
        return "value of the pinpoint adjust"
    return pa.axis_title(this, other)


def random_help() -> str:
    """What the random_settings input accepts (the node's tooltip)."""
    from .random_merge import HELP
    return HELP

"""XY-plot axes and diff-checker targets: parsing, validation, and what each cell's merge settings are.

Every cell is stated as the inputs an ElementalMerge node would get (`Settings`), so a cell can be reproduced
by a plain ElementalMerge + KSampler graph and its ratios come from the very same resolver. Axis values
change the base settings as the table `AXIS_TYPES` says; a pinpoint axis names *what* to change and takes
the ratios from the other axis, whose type (`alpha` or `beta`) says which ratio of the target it sets.

Pinpoint and diff targets become one spec entry appended to the base spec (entries apply in order, the last
one that selects a key decides), e.g. `OUT05:attn2.to_k` at 0.5 -> `OUT05:attn2.to_k:0.5`, block `IN07` ->
`IN07::0.5`. An `elemental` axis value is appended to the base alpha spec the same way, so with an empty
base spec it is exactly that spec.

Pure logic (no ComfyUI): the queue-time validation (architecture unknown: a value is accepted when it is
valid for some architecture, see `merge_core.validation`) and the run-time one (the models' architecture)
share this code, and its tests run without ComfyUI.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..numbers import finite_float
from ..merge.params import GAMMA, NORMAL
from ..text.spec import validate_spec
from ..text.validation import closest_architecture, validate_block_weights

NONE, ELEMENTAL, PIN_ELEMENT, PIN_BLOCKS, ALPHA, BETA, PRESET = (
    "none", "elemental", "pinpoint element", "pinpoint blocks", "alpha", "beta", "block weights preset")

# type -> (how values are separated, what a value does to the cell's settings). The order is the menu's.
AXIS_TYPES = {
    NONE: ("-", "one column/row: the base settings"),
    ELEMENTAL: ("blank line", "appends the spec to the base elemental_alpha"),
    PIN_ELEMENT: ("newline or comma", "'blocks:elements' set to each ratio of the other axis"),
    PIN_BLOCKS: ("newline or comma", "'blocks' (names, ranges, NOT) set to each ratio of the other axis"),
    ALPHA: ("newline or comma", "alpha (or, opposite a pinpoint axis, the pinpoint's alpha)"),
    BETA: ("newline or comma", "beta (or, opposite a pinpoint axis, the pinpoint's beta)"),
    PRESET: ("newline", "block_weights_alpha: a preset name or a weight string"),
}
CALC = "calc mode"
AXIS_TYPES[CALC] = ("newline or comma", "the calc mode (normal, cosineA, ... see docs/calc-modes.md); every key "
                                        "is re-merged when it changes")
PINPOINT = (PIN_ELEMENT, PIN_BLOCKS)
RATIO_AXES = (ALPHA, BETA)


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

    def describe(self) -> str:
        parts = [f"alpha={self.alpha:g}", f"beta={self.beta:g}"]
        if self.calc_mode != NORMAL:
            parts.append(f"calc_mode={self.calc_mode} calc_option={self.calc_option:g}")
        for name in ("block_weights_alpha", "block_weights_beta"):
            if getattr(self, name):
                parts.append(f"{name}={getattr(self, name)}")
        for name in ("elemental_alpha", "elemental_beta"):
            text = _one_line(getattr(self, name))
            if text:
                parts.append(f"{name}=[{text}]")
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


@dataclass(frozen=True)
class Cell:
    x: int
    y: int
    x_label: str
    y_label: str
    settings: Settings


# ---- small text helpers -------------------------------------------------------------------------------------

def _one_line(text: str) -> str:
    lines = [l.split("#", 1)[0].strip() for l in (text or "").splitlines()]
    return ", ".join(l for l in lines if l)


def _entries(text: str):
    """(entry, line) for each newline- or comma-separated non-empty entry; '#' starts a comment."""
    for n, raw in enumerate((text or "").replace("\r\n", "\n").split("\n"), start=1):
        for part in raw.split("#", 1)[0].split(","):
            if part.strip():
                yield part.strip(), n


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


# ---- axes ---------------------------------------------------------------------------------------------------

def _parse_numbers(text: str, where: str) -> list[Item]:
    items = []
    for entry, line in _entries(text):
        v = finite_float(entry)
        if v is None:
            raise AxisError(f"{where} line {line}: '{entry}' is not a finite number")
        items.append(Item(f"{v:g}", line, v))
    return _nonempty(items, f"{where}: no number given")


def _parse_elemental(text: str, arch, where: str) -> list[Item]:
    items = []
    for group, start in _groups(text):
        errors = _problem(group, arch, validate_spec)
        if errors is not None:
            d = errors[0]
            raise AxisError(f"{where} line {start + d.line - 1}: {d.format().split(': ', 1)[1]}")
        items.append(Item(_one_line(group), start, group))
    return _nonempty(items, f"{where}: no spec given (separate the specs of the cells by blank lines)")


def _parse_presets(text: str, arch, where: str) -> list[Item]:
    items = []
    for n, raw in enumerate((text or "").replace("\r\n", "\n").split("\n"), start=1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        _require_valid(entry, arch, validate_block_weights, where, n, entry)
        items.append(Item(entry, n, entry))
    return _nonempty(items, f"{where}: no preset given (one preset name or weight string per line)")


def _parse_calc_modes(text: str, where: str) -> list[Item]:
    from ..merge.calc_modes import CALC_MODE_NAMES

    items = []
    for entry, line in _entries(text):
        if entry not in CALC_MODE_NAMES:
            raise AxisError(f"{where} line {line}: unknown calc mode '{entry}' (valid: {', '.join(CALC_MODE_NAMES)})")
        items.append(Item(entry, line, entry))
    return _nonempty(items, f"{where}: no calc mode given")


def parse_axis(axis_type: str, text: str, arch=None, where: str = "values") -> Axis:
    """The Axis for `axis_type` and its values text; AxisError names `where` and the line."""
    if axis_type not in AXIS_TYPES:
        raise AxisError(f"{where}: unknown axis type '{axis_type}' (valid: {', '.join(AXIS_TYPES)})")
    if axis_type == NONE:
        return Axis(NONE, (Item("", 0, None),))
    if axis_type in RATIO_AXES:
        return Axis(axis_type, tuple(_parse_numbers(text, where)))
    if axis_type == ELEMENTAL:
        return Axis(axis_type, tuple(_parse_elemental(text, arch, where)))
    if axis_type == PRESET:
        return Axis(axis_type, tuple(_parse_presets(text, arch, where)))
    if axis_type == CALC:
        return Axis(axis_type, tuple(_parse_calc_modes(text, where)))
    return Axis(axis_type, tuple(parse_targets(text, arch, where, kind=axis_type)))


def check_pairing(x_type: str, y_type: str) -> None:
    """A pinpoint axis needs `alpha` or `beta` ratios on the other axis; two pinpoint axes make no plot."""
    for this, other, name in ((x_type, y_type, "x"), (y_type, x_type, "y")):
        if this in PINPOINT and other not in RATIO_AXES:
            other_name = "y" if name == "x" else "x"
            raise AxisError(f"{name}_type '{this}' takes its ratios from the other axis: set {other_name}_type "
                            f"to 'alpha' or 'beta' (the pinpoint's ratio), not '{other}'")


def parse_plot(x_type, x_values, y_type, y_values, arch=None) -> tuple[Axis, Axis]:
    check_pairing(x_type, y_type)
    return (parse_axis(x_type, x_values, arch, "x_values"), parse_axis(y_type, y_values, arch, "y_values"))


def _modify(settings: Settings, axis_type: str, value) -> Settings:
    if axis_type == NONE:
        return settings
    if axis_type == ALPHA:
        return replace(settings, alpha=value)
    if axis_type == BETA:
        return replace(settings, beta=value)
    if axis_type == ELEMENTAL:
        return replace(settings, elemental_alpha=join_spec(settings.elemental_alpha, value))
    if axis_type == PRESET:
        return replace(settings, block_weights_alpha=value)
    if axis_type == CALC:
        return replace(settings, calc_mode=value)
    raise AssertionError(axis_type)


def pinpoint(settings: Settings, target: Target, ratio: float, which: str) -> Settings:
    """`settings` with `target` set to `ratio` in the alpha (`which`="alpha") or beta spec."""
    field_name = "elemental_alpha" if which == ALPHA else "elemental_beta"
    return replace(settings, **{field_name: join_spec(getattr(settings, field_name), target.spec_line(ratio))})


def build_cells(base: Settings, x: Axis, y: Axis) -> list[Cell]:
    """Row-major cells (y outer, x inner): consecutive cells differ in one axis value."""
    cells = []
    for yi, yv in enumerate(y.items):
        for xi, xv in enumerate(x.items):
            if x.type in PINPOINT:
                s = pinpoint(base, xv.value, yv.value, y.type)
            elif y.type in PINPOINT:
                s = pinpoint(base, yv.value, xv.value, x.type)
            else:
                s = _modify(_modify(base, x.type, xv.value), y.type, yv.value)
            cells.append(Cell(xi, yi, xv.label, yv.label, s))
    return cells


def axis_title(this: Axis, other: Axis) -> str:
    """What an axis shows, e.g. 'alpha of the pinpoint element' opposite a pinpoint axis."""
    if this.type in RATIO_AXES and other.type in PINPOINT:
        return f"{this.type} of the {other.type.replace('pinpoint ', '')}"
    return this.title


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, default: str) -> str:
    """A file-system-safe version of a model name (no folders, no extension)."""
    base = re.sub(r"\.(safetensors|ckpt|pt|pth|bin|sft)$", "", str(text or "").split("/")[-1].split("\\")[-1])
    base = _SAFE.sub("_", base).strip("._")
    return base[:64] or default

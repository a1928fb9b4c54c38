"""Random merge ratios (SuperMerger's "Let the Dice roll"), seeded and written back as plain merge settings.

Why it is written this way: a random cell is only useful if it can be kept. Every drawn ratio is rounded to
3 decimals *before* it is used, and the draw is rendered as an ordinary block-weight string and/or elemental
spec (`Draw.block_weights`, `Draw.spec`), so pasting the reported text into ElementalMerge rebuilds the cell
bit for bit. The generator is the standard library's Mersenne Twister (`random.Random(seed)`), the same
numbers on every platform and Python version.

Modes (the `random_settings` text, see `parse_random_settings`):

* block modes, one ratio per block (BASE included for SD1/SD2/SDXL): ``R`` uniform in [0, 1], ``U`` in
  [-0.5, 1.5], ``X`` in [lower, upper] (bounds one number or one per block);
* element modes, one ratio per key of the chosen blocks (``blocks=``, default every block): ``ER`` in [0, 1],
  ``EU`` = 1 - 2r in (-1, 1], ``EX`` in [lower, upper];
* a custom pattern, one token per block: a number (fixed), or one of the six mode names for that block.

Optional per-block limits (``limit_lower=``, ``limit_upper=``) clamp block draws before rounding, as
SuperMerger's limits do. Draw order: blocks in the architecture's order (one ``random()`` each for block
tokens), then, for element tokens, the chosen keys' canonical names in sorted order (one ``random()`` each).
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field

from ..arch.architectures import Architecture, get_architecture
from ..diagnostics import MergeSpecError
from ..arch.keys import canonical_key
from ..numbers import finite_float
from ..text.spec import describe_blocks, parse_spec

BLOCK_MODES = ("R", "U", "X")
ELEMENT_MODES = ("ER", "EU", "EX")
MODES = BLOCK_MODES + ELEMENT_MODES
OPTIONS = ("lower", "upper", "limit_lower", "limit_upper", "blocks", "ratio")
DECIMALS = 3

# mode -> (fixed range or None for the user's lower/upper, how r in [0, 1) becomes a ratio)
_RANGES = {
    "R": lambda r, lo, hi: r,
    "U": lambda r, lo, hi: -0.5 + 2.0 * r,
    "X": lambda r, lo, hi: lo + (hi - lo) * r,
    "ER": lambda r, lo, hi: r,
    "EU": lambda r, lo, hi: 1.0 - 2.0 * r,
    "EX": lambda r, lo, hi: lo + (hi - lo) * r,
}

HELP = ("random_settings: a mode R, U, X (one ratio per block), ER, EU, EX (one per key of blocks=), or a "
        "custom pattern of one token per block (number, R, U, X, ER, EU, EX) separated by commas; then options "
        "lower=, upper= (X/EX bounds: one number or one per block), limit_lower=, limit_upper= (clamp block "
        "draws), blocks= (element modes, e.g. IN04,OUT05-OUT11), ratio=alpha|beta. "
        "Example: 'X lower=0.2 upper=0.8'.")


class RandomSettingsError(ValueError):
    """Invalid random_settings text; the message names the token and the valid choices."""


@dataclass(frozen=True)
class RandomSettings:
    """Parsed random_settings for one architecture: one token per block and the bounds per block."""
    arch_name: str
    tokens: tuple          # per block: a float (fixed) or a mode name
    lower: tuple           # per block
    upper: tuple
    limit_lower: tuple     # per block, -inf when unset
    limit_upper: tuple
    element_blocks: frozenset  # blocks whose keys element tokens reach (mode given as one name)
    ratio: str = "alpha"
    text: str = ""

    @property
    def uses_elements(self) -> bool:
        return any(isinstance(t, str) and t in ELEMENT_MODES for t in self.tokens)

    @property
    def uses_blocks(self) -> bool:
        return any(not (isinstance(t, str) and t in ELEMENT_MODES) for t in self.tokens)


@dataclass(frozen=True)
class Draw:
    """One seed's ratios, already rounded: block -> ratio, canonical key -> ratio; and their texts."""
    seed: int
    arch_name: str
    blocks: dict = field(default_factory=dict)     # every block (element blocks get `fill`)
    elements: dict = field(default_factory=dict)   # canonical key -> ratio
    block_weights: str | None = None               # weight string (one value per block, BASE first)
    spec: str = ""                                 # elemental spec, one entry per drawn key
    ratio: str = "alpha"

    def label(self) -> str:
        """What a cell label shows: the seed and the block weights (element draws are summarised)."""
        text = f"seed {self.seed}"
        if self.block_weights is not None:
            text += f": {self.block_weights}"
        if self.elements:
            text += f" + {len(self.elements)} keys drawn (spec in the table)"
        return text

    def settings_text(self) -> str:
        """The ElementalMerge inputs that rebuild this draw, one per line."""
        lines = []
        if self.block_weights is not None:
            lines.append(f"block_weights_{self.ratio}: {self.block_weights}")
        if self.spec:
            lines.append(f"elemental_{self.ratio} (appended): {self.spec.replace(chr(10), ', ')}")
        return "\n".join(lines)


def number_text(v: float) -> str:
    """A rounded ratio as text that reads back as the very same float (``0.5``, ``-0.125``, ``1``)."""
    v = float(v) + 0.0  # -0.0 -> 0.0
    return str(int(v)) if v == int(v) else repr(v)


def _round(v: float) -> float:
    return round(v, DECIMALS) + 0.0


# ---- parsing ------------------------------------------------------------------------------------------------

def _tokens(text: str) -> list[str]:
    body = " ".join(line.split("#", 1)[0] for line in (text or "").replace("\r\n", "\n").split("\n"))
    body = re.sub(r"\s*,\s*", ",", body)
    body = re.sub(r"\s*=\s*", "=", body)
    return body.split()


def _per_block(name: str, raw: str, a: Architecture) -> tuple:
    parts = [p for p in raw.split(",") if p]
    values = []
    for i, p in enumerate(parts, start=1):
        v = finite_float(p)
        if v is None:
            raise RandomSettingsError(f"random_settings: {name}= value {i} '{p}' is not a finite number")
        values.append(v)
    if len(values) == 1:
        return tuple(values) * len(a.blocks)
    if len(values) != len(a.blocks):
        raise RandomSettingsError(f"random_settings: {name}= needs one number or {len(a.blocks)} for "
                                  f"{a.label} ({describe_blocks(a)}), got {len(values)}")
    return tuple(values)


def _pattern(mode: str, a: Architecture) -> tuple:
    """One token per block from a mode name or a comma-separated custom pattern."""
    parts = mode.split(",") if "," in mode else [mode]
    if len(parts) == 1:
        up = parts[0].upper()
        if up not in MODES:
            raise RandomSettingsError(f"random_settings: unknown mode '{parts[0]}' (valid: {', '.join(MODES)}, or "
                                      f"a custom pattern of {len(a.blocks)} comma-separated tokens)")
        return (up,) * len(a.blocks)
    if len(parts) != len(a.blocks):
        raise RandomSettingsError(f"random_settings: a custom pattern needs one token per {a.label} block "
                                  f"({len(a.blocks)}: {describe_blocks(a)}), got {len(parts)}")
    tokens = []
    for i, (p, block) in enumerate(zip(parts, a.blocks), start=1):
        if p.upper() in MODES:
            tokens.append(p.upper())
            continue
        v = finite_float(p)
        if v is None:
            raise RandomSettingsError(f"random_settings: pattern token {i} ({block}) '{p}' is not a number or "
                                      f"a mode (valid: {', '.join(MODES)})")
        tokens.append(v)
    return tuple(tokens)


def _blocks_option(raw: str, a: Architecture) -> frozenset:
    try:
        entry = parse_spec(f"{raw.replace(',', ' ')}::0", a).entries[0]
    except MergeSpecError as exc:
        first = exc.errors[0] if exc.errors else None
        detail = f"{first.message} ({first.hint})" if first and first.hint else (first.message if first else str(exc))
        raise RandomSettingsError(f"random_settings: blocks={raw}: {detail}") from None
    if entry.invert_blocks:
        return frozenset(b for b in a.blocks if b not in entry.blocks)
    return frozenset(entry.blocks)


def _options(tokens: list[str]) -> tuple[str | None, dict]:
    mode, opts = None, {}
    for tok in tokens:
        if "=" in tok:
            name, _, value = tok.partition("=")
            name = name.lower()
            if name not in OPTIONS:
                raise RandomSettingsError(f"random_settings: unknown option '{name}=' (valid: "
                                          f"{', '.join(o + '=' for o in OPTIONS)})")
            if name in opts:
                raise RandomSettingsError(f"random_settings: option '{name}=' given twice")
            if not value:
                raise RandomSettingsError(f"random_settings: option '{name}=' has no value")
            opts[name] = value
        elif mode is None:
            mode = tok
        else:
            raise RandomSettingsError(f"random_settings: '{tok}' after the mode '{mode}': options are written "
                                      f"name=value ({', '.join(o + '=' for o in OPTIONS)}); a custom pattern "
                                      "separates its tokens with commas")
    return mode, opts


def parse_random_settings(text: str, arch) -> RandomSettings:
    """RandomSettings for `arch` from the random_settings text; RandomSettingsError says what is wrong."""
    a = get_architecture(arch)
    mode, opts = _options(_tokens(text))
    if mode is None:
        raise RandomSettingsError("random_settings: no mode given. " + HELP)
    tokens = _pattern(mode, a)
    n = len(a.blocks)
    lower = _per_block("lower", opts["lower"], a) if "lower" in opts else (0.0,) * n
    upper = _per_block("upper", opts["upper"], a) if "upper" in opts else (1.0,) * n
    for i, (lo, hi) in enumerate(zip(lower, upper)):
        if lo > hi:
            raise RandomSettingsError(f"random_settings: lower {lo:g} > upper {hi:g} for block {a.blocks[i]}")
    limit_lower = _per_block("limit_lower", opts["limit_lower"], a) if "limit_lower" in opts else (-math.inf,) * n
    limit_upper = _per_block("limit_upper", opts["limit_upper"], a) if "limit_upper" in opts else (math.inf,) * n
    for i, (lo, hi) in enumerate(zip(limit_lower, limit_upper)):
        if lo > hi:
            raise RandomSettingsError(f"random_settings: limit_lower {lo:g} > limit_upper {hi:g} for block "
                                      f"{a.blocks[i]}")
    element_blocks = _blocks_option(opts["blocks"], a) if "blocks" in opts else frozenset(a.blocks)
    if "blocks" in opts and "," in mode:
        raise RandomSettingsError("random_settings: blocks= is for the element modes ER, EU, EX; a custom "
                                  "pattern chooses the element blocks by its ER/EU/EX tokens")
    if "blocks" in opts and mode.upper() not in ELEMENT_MODES:
        raise RandomSettingsError(f"random_settings: blocks= is for the element modes ER, EU, EX, not '{mode}'")
    ratio = opts.get("ratio", "alpha").lower()
    if ratio not in ("alpha", "beta"):
        raise RandomSettingsError(f"random_settings: ratio={opts['ratio']} (valid: alpha, beta)")
    if "," in mode:
        element_blocks = frozenset(b for b, t in zip(a.blocks, tokens) if t in ELEMENT_MODES)
    return RandomSettings(a.name, tokens, lower, upper, limit_lower, limit_upper, element_blocks, ratio,
                          text or "")


def check_random_settings(text: str, arch=None) -> None:
    """RandomSettingsError unless `text` is valid for `arch` (None: for some architecture)."""
    from ..arch.architectures import ARCHITECTURES
    archs = [get_architecture(arch)] if arch is not None else list(ARCHITECTURES.values())
    first = None
    for a in archs:
        try:
            parse_random_settings(text, a)
            return
        except RandomSettingsError as exc:
            first = first or exc
    raise first


# ---- drawing ------------------------------------------------------------------------------------------------

def draw(settings: RandomSettings, seed: int, keys=(), fill: float = 0.5) -> Draw:
    """The ratios for `seed`. `keys`: the model's keys (any form), needed by element tokens; `fill`: the block
    weight written for blocks whose every key is drawn (the spec overrides it; the base ratio reads best)."""
    a = get_architecture(settings.arch_name)
    rng = random.Random(int(seed))
    blocks: dict = {}
    for i, (block, tok) in enumerate(zip(a.blocks, settings.tokens)):
        if isinstance(tok, float):
            blocks[block] = tok
        elif tok in BLOCK_MODES:
            v = _RANGES[tok](rng.random(), settings.lower[i], settings.upper[i])
            v = min(max(v, settings.limit_lower[i]), settings.limit_upper[i])
            blocks[block] = _round(v)
        else:
            blocks[block] = float(fill)
    elements = _draw_elements(settings, rng, a, keys)
    bw = ",".join(number_text(blocks[b]) for b in a.blocks) if settings.uses_blocks else None
    return Draw(int(seed), a.name, blocks, elements, bw, element_spec(elements, a), settings.ratio)


def _element_token(settings: RandomSettings, a: Architecture, block: str):
    i = a.blocks.index(block)
    tok = settings.tokens[i]
    if isinstance(tok, str) and tok in ELEMENT_MODES and block in settings.element_blocks:
        return tok, i
    return None, i


def _draw_elements(settings: RandomSettings, rng: random.Random, a: Architecture, keys) -> dict:
    if not settings.uses_elements:
        return {}
    chosen = {}
    for key in keys:
        block = a.block_of(key)
        if block is None:
            continue
        tok, i = _element_token(settings, a, block)
        if tok is not None:
            chosen[canonical_key(key, a)] = (tok, i)
    if not chosen:
        raise RandomSettingsError(f"random_settings: the element mode reaches no key of the model (blocks "
                                  f"{', '.join(sorted(settings.element_blocks)) or 'none'})")
    out = {}
    for name in sorted(chosen):
        tok, i = chosen[name]
        out[name] = _round(_RANGES[tok](rng.random(), settings.lower[i], settings.upper[i]))
    return out


def element_spec(elements: dict, arch) -> str:
    """One spec entry per key, `BLOCK:<canonical key>:ratio`. A key name can be a substring of a longer one
    (elements match by substring), so shorter names come first and the longer, later entry wins for its key."""
    a = get_architecture(arch)
    lines = [f"{a.block_of(k)}:{k}:{number_text(v)}"
             for k, v in sorted(elements.items(), key=lambda kv: (len(kv[0]), kv[0]))]
    return "\n".join(lines)

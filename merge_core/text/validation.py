"""Is a text valid for an architecture, and which architecture did the user mean: answered once.

Every input that takes a spec or a block-weight string (the merge nodes at queue time, the XY/diff axes, the
editor's /validate route) asks the same two questions. `validate_block_weights` gives block weights the same
shape of answer `validate_spec` gives specs (a list of positioned Diagnostics, never an exception), so that
`closest_architecture` can pick, for either kind of text, the architecture it fits: the first one (table
order) with no error, else the one with the fewest errors, which is the one the user most likely meant.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from ..arch.architectures import ARCHITECTURES, Architecture, get_architecture
from ..arch.derived import stand_in
from .block_weights import parse_block_weights
from ..diagnostics import ERROR, Diagnostic, MergeSpecError

AUTO = "auto"  # the architecture choice "any architecture": the text is judged against the closest one

# (text, architecture) -> every problem of the text for that architecture, errors and warnings.
Validator = Callable[[str, Architecture], "list[Diagnostic]"]


def validate_block_weights(text: str, arch, alpha: float | None = None,
                           user_presets: dict | None = None) -> list[Diagnostic]:
    """Every problem of a preset name or weight string for `arch`, positioned; never raises.

    Same rules as `parse_block_weights` (without `alpha`, a list that leaves BASE unset is an error)."""
    try:
        parse_block_weights(text, arch, alpha=alpha, user_presets=user_presets)
    except MergeSpecError as exc:
        return list(exc.diagnostics)
    except ValueError as exc:  # an unknown architecture name
        return [Diagnostic(1, 1, str(exc), ERROR)]
    return []


@dataclass(frozen=True)
class ArchitectureFit:
    """The architecture a text was judged against and its problems there (warnings included)."""
    architecture: Architecture
    diagnostics: list[Diagnostic]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def valid(self) -> bool:
        return not self.errors


def closest_architecture(text: str, validate: Validator, candidates: Iterable | None = None) -> ArchitectureFit:
    """The first of `candidates` (Architectures or names; None = every architecture, table order) for which
    `validate(text, arch)` finds no error, else the one with the fewest errors (the first such on a tie)."""
    archs = list(ARCHITECTURES.values()) if candidates is None else [get_architecture(a) for a in candidates]
    if not archs:
        raise ValueError("closest_architecture needs at least one candidate architecture")
    best = None
    for arch in archs:
        fit = ArchitectureFit(arch, list(validate(text, arch)))
        if fit.valid:
            return fit
        if best is None or len(fit.errors) < len(best.errors):
            best = fit
    return best


def text_problem(kind: str, text: str, architecture: str, validate: Validator) -> str | None:
    """The queue-time message for an invalid `kind` text ("elemental spec", "block weights"), or None.

    `architecture` is a name or AUTO (valid for any architecture passes, including any model with derived
    blocks (`merge_core.arch.derived.stand_in`); otherwise the closest record is reported). Empty text is no
    problem here: what empty means is the caller's rule."""
    if not text.strip():
        return None
    auto = architecture == AUTO
    fit = closest_architecture(text, validate, None if auto else [architecture])
    if fit.valid:
        return None
    if auto and not [d for d in validate(text, stand_in(text)) if d.is_error]:
        return None  # may be for a model whose blocks are derived from its keys: the merge checks it
    label = fit.architecture.label
    head = f"invalid {kind}: valid for no architecture; as {label}:" if auto else f"invalid {kind} for {label}:"
    return "\n".join([head] + [d.format() for d in fit.errors])


# ---- elements that match a key only through its prefix -------------------------------------------------------

PREFIX_MATCH = "only inside their prefix"  # in the message of every such warning (the queue-time log picks them)
_WORD_EDGE = "._"


def key_prefixes(arch: Architecture) -> tuple[str, ...]:
    """The prefixes of `arch`'s canonical key names, the part before the block path: the diffusion model's
    ``model.diffusion_model.`` and each text encoder's checkpoint prefix (``cond_stage_model.``,
    ``conditioner.embedders.0.``, ``text_encoders.clip_l.``), longest first."""
    from ..arch.keys import UNET_PREFIX

    found = {UNET_PREFIX, *(t.checkpoint_prefix for t in getattr(arch, "text_encoders", ()) or ())}
    return tuple(sorted(found, key=len, reverse=True))


def _names_a_word(element: str, prefix: str) -> bool:
    """Whether `element` occurs in `prefix` as whole words (``model``, ``diffusion``, ``cond_stage_model``,
    ``embedders.0``): written on purpose to pick the prefix, not by accident inside a word (``ff`` in
    ``diffusion``)."""
    start = prefix.find(element)
    while start != -1:
        end = start + len(element)
        if (start == 0 or prefix[start - 1] in _WORD_EDGE) and (end == len(prefix) or prefix[end] in _WORD_EDGE):
            return True
        start = prefix.find(element, start + 1)
    return False


def _narrower(element: str, names) -> str | None:
    """The element name to write instead: the shortest of `names` in which `element` starts a word and that
    is longer (``ff`` -> ``ff.net``), one that continues it with ``.`` first; None when there is none."""
    def starts_word(n):
        i = n.find(element)
        while i != -1:
            if i == 0 or n[i - 1] in _WORD_EDGE:
                return True
            i = n.find(element, i + 1)
        return False
    cands = [n for n in names if n != element and starts_word(n)]
    if not cands:
        return None
    return min(cands, key=lambda n: (not n.startswith(element + "."), len(n), n))


def element_prefix_warning(entry, element: str, arch: Architecture, keys=None) -> tuple[str, str] | None:
    """(message, hint) when `element` hits keys of `entry`'s blocks only inside their prefix, else None.

    Elements match by substring of the whole canonical key name, as in SuperMerger, so ``ff`` matches every
    UNet key through ``model.diffusion_model.`` ("di-ff-usion"): ``NOT OUT04:ff:0.9`` sets every key outside
    OUT04, not only the feed-forward layers. The result is kept (SuperMerger's), and this says so: how many
    of the entry's keys (`keys`, or the architecture's built-in list) the element reaches only through the
    prefix, which prefix, and a narrower element from the architecture's element names (`elements_by_block`).
    An element that names whole words of the prefix (``diffusion_model``, ``cond_stage_model``,
    ``embedders.0``) is taken as meant and gives no warning. `entry` needs ``blocks`` and ``invert_blocks``
    (a `SpecEntry`)."""
    from ..arch.key_index import key_index

    prefixes = [p for p in key_prefixes(arch) if element and element in p]
    if not prefixes or any(_names_a_word(element, p) for p in prefixes):
        return None
    index = key_index(arch, None if keys is None else tuple(keys))
    hits: dict[str, int] = {}
    blocks: set[str] = set()
    for block, canon in zip(index.blocks, index.canon):
        if (block in entry.blocks) == entry.invert_blocks:
            continue
        prefix = next((p for p in prefixes if canon.startswith(p)), None)
        if prefix is None or canon.find(element, max(0, len(prefix) - len(element) + 1)) != -1:
            continue  # no prefix with the element, or a match that reaches past the prefix: a real match
        hits[prefix] = hits.get(prefix, 0) + 1
        blocks.add(block)
    if not hits:
        return None
    total = sum(hits.values())
    where = ", ".join(f"'{p}'" + "".join(f" (in '{w}')" for w in p.split(".") if element in w)[:60] for p in hits)
    message = (f"element '{element}' matches {total} key{'s' if total != 1 else ''} of these blocks {PREFIX_MATCH} "
               f"{where}")
    try:
        from ..arch.elements import elements_by_block

        per_block = elements_by_block(arch)
        names = sorted({n for b in blocks for n in per_block.get(b, ())} or
                       {n for v in per_block.values() for n in v})
    except ValueError:  # an architecture that is not registered (a stand-in): no names to offer
        names = []
    better = _narrower(element, names)
    hint = ("elements match anywhere in the key name, as in SuperMerger, so these keys are hit whatever "
            "their layer; " + (f"for the '{element}' layers write '{better}'" if better else
                               "write a longer element that names the layer"))
    return message, hint


def spec_queue_warnings(text: str, architecture: str) -> list[str]:
    """The prefix-match warnings of a spec at queue time, formatted for the server log (`element_prefix_warning`
    for every element of every entry), checked against the named architecture or, for `auto`, the first
    record the text is valid for. Empty for an invalid text (the error is reported instead)."""
    from .spec import validate_spec

    if not isinstance(text, str) or not text.strip():
        return []
    auto = architecture == AUTO
    try:
        fit = closest_architecture(text, validate_spec, None if auto else [architecture])
    except ValueError:
        return []
    if not fit.valid:
        return []
    label = fit.architecture.label + (" (auto: the first architecture the text fits)" if auto else "")
    return [f"{label}: {d.format()}" for d in fit.diagnostics if d.is_warning and PREFIX_MATCH in d.message]

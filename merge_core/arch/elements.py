"""Element names: the word a user types in a spec's elements field to pick a parameter, and, per block, every
such word an architecture's keys offer (the editor's completion lists and the /elemental/elements route).

An element is a substring of the canonical key name (see `merge_core.keys`); `element_of` picks the one a
person would write: the part after the innermost numbered container, without indices and ``.weight``.
"""
from __future__ import annotations

import re

from .architectures import get_architecture
from ..cache import cached
from .keys import canonical_key

_PARAM_SUFFIXES = ("weight", "bias", "scale")  # scale: the RMSNorm parameter of Flux/SD3
# Path segments that name a container, not a part: never offered as an element on their own.
_ROOTS = {"model", "diffusion_model", "cond_stage_model", "transformer", "text_model", "conditioner", "embedders",
          "text_encoders", "clip_l", "clip_g", "t5xxl", "encoder"}
_CONTAINER = re.compile(r"(?:blocks|block|layers|layer|resblocks|refiner)$")  # refiner: Z-Image's refiner lists


def _inner_start(segs: list[str]) -> int | None:
    """Index just after the innermost ``<container>.<number>`` that still has a named part after it."""
    start = None
    for i in range(1, len(segs) - 1):
        if segs[i].isdigit() and _CONTAINER.search(segs[i - 1]) and not all(s.isdigit() for s in segs[i + 1:]):
            start = i + 1
    return start


def element_of(canon: str) -> str | None:
    """The element a user would type to pick this parameter: ``attn2.to_k``, ``ff.net``, ``norm1``, ``proj_in``.

    The path after the innermost numbered container (``transformer_blocks.0``, ``layers.5``, ``input_blocks.4``),
    without leading module indices, cut before the next index, without ``.weight``/``.bias``. A parameter
    outside any container gives its last two named segments with no index between them
    (``embeddings.token_embedding``, ``time_embed``; Cosmos' ``t_embedder.1.linear_1`` gives ``linear_1``).
    """
    segs = canon.split(".")
    if len(segs) > 1 and segs[-1] in _PARAM_SUFFIXES:
        segs = segs[:-1]
    start = _inner_start(segs)
    if start is None:  # the last two named segments, when no index stands between them (a substring of the key)
        named = []
        for s in reversed(segs):
            if s.isdigit() or s in _ROOTS:
                if named:
                    break
                continue
            named.insert(0, s)
            if len(named) == 2:
                break
        return ".".join(named) or None
    tail = segs[start:]
    while tail and tail[0].isdigit():
        tail = tail[1:]
    out = []
    for s in tail:
        if s.isdigit():
            break
        out.append(s)
    return ".".join(out) or None


@cached(maxsize=16)
def _elements_by_block(arch_name: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    a = get_architecture(arch_name)
    found: dict[str, set[str]] = {b: set() for b in a.blocks}
    for key in a.default_keys():
        block = a.block_of(key)
        if block is None:
            continue
        element = element_of(canonical_key(key, a))
        if element:
            found[block].add(element)
    return tuple((b, tuple(sorted(found[b]))) for b in a.blocks)


def elements_by_block(arch) -> dict[str, list[str]]:
    """block -> the distinct elements of its keys (built-in key list), in block order, each sorted."""
    return {b: list(v) for b, v in _elements_by_block(get_architecture(arch).name)}

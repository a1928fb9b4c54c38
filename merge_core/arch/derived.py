"""An Architecture for a diffusion model that no record describes, derived from the model's own key names.

ComfyUI loads many model families this pack has no record for (Mochi, LTXV, Cosmos, HunyuanVideo, Lumina 2,
HiDream, ...). Their diffusion models are all built the same way: a few modules that prepare the input, one
or more numbered lists of transformer blocks, and a few modules that produce the output. The blocks of such a
model are read off its keys (ComfyUI's ``diffusion_model.X`` or the checkpoint's ``model.diffusion_model.X``;
any other key, such as a text encoder's or ``model_sampling``'s, belongs to no block):

* **Containers.** A top-level name whose every key continues with a number and at least one key has a
  module under that number (``blocks.N.attn.qkv.weight``) is a numbered container. Each index present is one
  block, named by the container's prefix and the index in two digits (three from index 100 on):
  ``blocks.N`` -> ``B00..B29``, ``layers.N`` -> ``L00``, ``transformer_blocks.N`` -> ``T00``,
  ``double_blocks.N`` -> ``D00``, ``single_blocks.N`` -> ``S00``, ``input_blocks.N`` -> ``I00``.
  A numbered list that holds parameters directly (``time_embedding.0.weight``, an ``nn.Sequential`` of
  layers) is not a container: it is an input or output module like any other.
* **Prefixes.** The upper-cased first letter of the container's name. When several containers share that
  letter, each takes the shortest start of its name (underscores dropped, upper-cased) that no other of them
  has: ``double_blocks`` and ``down_blocks`` -> ``DOU`` and ``DOW``; ``noise_refiner``,
  ``context_refiner``, ``layers`` -> ``N``, ``C``, ``L``. A prefix is never ``IN`` or ``OUT`` (one more
  letter is taken); a name that is the start of another (``blocks``, ``blocks2``) keeps its whole name.
* **IN and OUT.** Every other top-level module (or parameter) goes to ``IN`` when its first key comes before
  the first key of the last container in the model's key order, to ``OUT`` when it comes after. ComfyUI's
  state dicts list modules in the order the model class builds them, embedders first and final layers last,
  so ``IN`` holds the embedders (``x_embedder``, ``t_embedder``, ``patchify_proj``, ...) and ``OUT`` the final
  norm and projection. A model without any container puts everything in ``IN``; an empty ``IN`` or ``OUT``
  is left out.
* **Order.** ``IN``, the containers in key order (each in index order), ``OUT``.

The architecture is named ``derived-<8 hex digits>``, a hash of its blocks and rules: two models with the
same layout get the same name (so they merge together, and a recipe names the same architecture in another
session), different layouts different names. `register` makes `get_architecture` find it by that name.
Text encoders are not part of a derived architecture: their keys belong to no block and merge at the plain
ratio, as SuperMerger treats keys outside every block.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Iterable

from .architectures import DERIVED, Architecture

PREFIX_CHECKPOINT = "model.diffusion_model."
PREFIX_COMFY = "diffusion_model."
NAME_PREFIX = "derived-"
IN, OUT = "IN", "OUT"
_RESERVED = (IN, OUT)
_NAME = re.compile(r"^derived-[0-9a-f]{8}$")
_U = r"^model\.diffusion_model\."


@dataclass(frozen=True)
class DerivedArchitecture(Architecture):
    """An Architecture read off a model's keys: carries those keys (its `default_keys`) and a summary."""
    source_keys: tuple[str, ...] = field(default=(), repr=False)
    containers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (container name, prefix)

    def __hash__(self) -> int:
        return hash(self.name)

    def default_keys(self) -> list[str]:
        return list(self.source_keys)

    def group_of(self, block: str) -> str:
        m = re.match(r"^([A-Z]+?)(\d{2,})$", block)
        return m.group(1) if m else block

    def summary(self) -> str:
        """``derived from its keys: 30 blocks B00-B29, IN, OUT`` (the report's and the error's wording)."""
        parts = []
        for name, prefix in self.containers:
            numbered = [b for b in self.blocks if self.group_of(b) == prefix]
            run = numbered[0] if len(numbered) == 1 else f"{numbered[0]}-{numbered[-1]}"
            parts.append(f"{len(numbered)} block{'s' if len(numbered) != 1 else ''} {run} ({name}.N)")
        parts += [b for b in self.blocks if b in _RESERVED]
        return "derived from its keys: " + ", ".join(parts)


def is_derived_name(name) -> bool:
    """Whether `name` has the form of a derived architecture's name (registered or not)."""
    return isinstance(name, str) and _NAME.match(name) is not None


def is_derived(arch) -> bool:
    return isinstance(arch, DerivedArchitecture)


def diffusion_part(key: str) -> str | None:
    """The name under the diffusion model (``blocks.0.attn.weight``), or None for any other key."""
    for prefix in (PREFIX_CHECKPOINT, PREFIX_COMFY):
        if key.startswith(prefix):
            return key[len(prefix):]
    return None


def _prefixes(names: list[str]) -> dict[str, str]:
    """Container name -> block prefix (see the module docstring)."""
    squashed = {n: re.sub(r"[^A-Za-z0-9]", "", n).upper() or "X" for n in names}
    out: dict[str, str] = {}
    for n in names:
        letter = squashed[n][0]
        rivals = [m for m in names if m != n and squashed[m][0] == letter]
        length = 1
        while True:
            p = squashed[n][:length]
            clash = any(squashed[m][:length] == p for m in rivals) or p in _RESERVED
            if not clash or length >= len(squashed[n]):
                break
            length += 1
        p = squashed[n][:length]
        p = re.sub(r"\d+$", "", p) or "X"  # a trailing digit would run into the index
        out[n] = p
    taken: dict[str, str] = {}
    for n in names:  # two names that squash alike (blocks_2 / blocks2): number the later ones
        p = out[n]
        k = 2
        while p in taken or p in _RESERVED:
            p = f"{out[n]}{chr(ord('A') + k - 2)}"
            k += 1
        taken[p] = n
        out[n] = p
    return out


def derive_architecture(keys: Iterable[str], label: str = "") -> DerivedArchitecture:
    """The architecture of a diffusion model's key set, from its key names alone (see the module docstring).

    `keys` in the model's own order (ComfyUI's `model_state_dict()` order); `label` names the model family
    (ComfyUI's model config class) in messages. ValueError when no key is under the diffusion model."""
    parts: list[str] = []
    for k in keys:
        p = diffusion_part(k)
        if p is not None:
            parts.append(p)
    if not parts:
        raise ValueError("no diffusion-model key (diffusion_model.… or model.diffusion_model.…) to derive "
                         "blocks from")
    first_at: dict[str, int] = {}
    numeric: dict[str, bool] = {}
    nested: dict[str, bool] = {}
    indices: dict[str, set[int]] = {}
    for pos, part in enumerate(parts):
        segs = part.split(".")
        top = segs[0]
        first_at.setdefault(top, pos)
        is_num = len(segs) >= 2 and segs[1].isdigit()
        numeric[top] = numeric.get(top, True) and is_num
        if is_num:
            indices.setdefault(top, set()).add(int(segs[1]))
            nested[top] = nested.get(top, False) or len(segs) >= 4
    containers = [t for t in first_at if numeric[t] and nested.get(t, False)]
    containers.sort(key=first_at.__getitem__)
    others = [t for t in first_at if t not in containers]
    if containers:
        boundary = first_at[containers[-1]]
        ins = [t for t in others if first_at[t] < boundary]
        outs = [t for t in others if first_at[t] > boundary]
    else:
        ins, outs = others, []
    prefixes = _prefixes(containers)
    blocks: list[str] = [IN] if ins else []
    rules: list[tuple[str, str]] = []
    for c in containers:
        width = max(2, len(str(max(indices[c]))))
        blocks += [f"{prefixes[c]}{i:0{width}d}" for i in sorted(indices[c])]
        rules.append((_U + re.escape(c) + r"\.(\d+)(?:\.|$)", prefixes[c] + "{:0" + str(width) + "d}"))
    for name, group in ((IN, ins), (OUT, outs)):
        if group:
            rules.append((_U + "(?:" + "|".join(re.escape(t) for t in group) + r")(?:\.|$)", name))
    if outs:
        blocks.append(OUT)
    digest = hashlib.sha1(repr((tuple(blocks), tuple(rules))).encode("utf-8")).hexdigest()[:8]
    name = NAME_PREFIX + digest
    family = label or "unknown model"
    return DerivedArchitecture(
        name=name, label=f"{family} (derived)", blocks=tuple(blocks), rules=tuple(rules),
        source_keys=tuple(PREFIX_CHECKPOINT + p for p in parts),
        containers=tuple((c, prefixes[c]) for c in containers))


def register(arch: DerivedArchitecture) -> DerivedArchitecture:
    """Makes `get_architecture(arch.name)` find `arch`; returns the one registered under that name (the first
    one: the same layout always gives the same blocks and rules)."""
    return DERIVED.setdefault(arch.name, arch)


def derive_and_register(keys: Iterable[str], label: str = "") -> DerivedArchitecture:
    return register(derive_architecture(keys, label))


def uncovered(arch: Architecture, keys: Iterable[str]) -> list[str]:
    """The diffusion-model keys of `keys` that `arch` puts in no block."""
    return [k for k in keys if diffusion_part(k) is not None and arch.block_of(k) is None]


_BLOCK_WORD = re.compile(r"(?<![A-Za-z0-9_.])([A-Za-z]{1,6})(\d{2,3})(?![A-Za-z0-9_.])")


def stand_in(text: str) -> DerivedArchitecture:
    """A derived architecture that any model's derived blocks named in `text` could belong to: IN, OUT, every
    block-shaped word of the text (letters and two or three digits, not IN/OUT, ranges filled in) and, for a
    list of numbers, as many blocks as it has values. Queue-time validation in `auto` judges a text against it
    when no record accepts the text: the models are not loaded yet, and the merge checks the text again
    against the model's real blocks."""
    found: dict[str, set[int]] = {}
    widths: dict[str, int] = {}
    for m in _BLOCK_WORD.finditer(text):
        prefix = m.group(1).upper()
        if prefix in _RESERVED:
            continue
        found.setdefault(prefix, set()).add(int(m.group(2)))
        widths[prefix] = max(widths.get(prefix, 2), len(m.group(2)))
    blocks = [IN]
    for prefix, idx in found.items():
        blocks += [f"{prefix}{i:0{widths[prefix]}d}" for i in range(min(idx), max(idx) + 1)]
    blocks.append(OUT)
    values = len(re.findall(r"[^,\s]+", text))
    blocks += [f"X{i:03d}" for i in range(max(0, values - len(blocks)))]
    return DerivedArchitecture(name="derived-any", label="a model with derived blocks", blocks=tuple(blocks),
                               rules=())

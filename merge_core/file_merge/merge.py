"""Merge safetensors files into a safetensors file, key by key, without loading any model whole.

Each output tensor is computed when the streaming writer (merge_core.files.safetensors_stream) asks for it:
A's tensor and each needed source's are read with plain file reads (merge_core.files.tensor_file), merged in
float32 by the same per-key decision (merge_core.merge.key_work) and arithmetic (merge_core.merge.key_compute)
as the live merge's weight adapter, cast to the output precision (merge_core.files.save_dtypes), written and
dropped. Memory therefore holds one key's tensors at a time, whatever the model's size; model-wide statistics
(cosineA/cosineB) take a first pass over the pairs.

What is merged: the diffusion model's keys and the text encoders' (the keys of a block, and any other key
under the diffusion model's prefix, at the plain ratio, as the live merge does). The VAE and any other key
are copied from A. Integer tensors are copied. Keys are matched between files by their canonical checkpoint
name, so a diffusion-model-only file (no `model.diffusion_model.` prefix) merges with a checkpoint. The output
holds A's keys under A's names, less the scales and configs of quantized layers (their weights are written as
plain values, as the live save does).

Equal to the live merge: for the same settings the tensors equal those Save Merged Checkpoint writes for the
live merge, bit for bit, given the dtypes the live model holds its weights in (`weight_dtypes`: "unet" and
"clip" -> dtype; ComfyUI picks them per device, e.g. float32 diffusion model and fp16 text encoder on a CPU,
fp16 or bf16 for both on most GPUs). Each weight, merged or A's, is rounded to its part's dtype before the
output cast, as the live model holds it; without `weight_dtypes` no rounding happens besides the output's.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..arch.architectures import Architecture, detect_architecture
from ..arch.keys import UNET_PREFIX, UNMERGED_TEXT_SUFFIXES, canonical_key
from ..files.produce_ahead import ProducedAhead
from ..files.safetensors_stream import plan_file, write_planned
from ..files.save_dtypes import PRECISIONS, VAE_PREFIXES, cast_for_save, stored_dtype
from ..files.tensor_file import TensorFile, TensorFileError
from ..merge.calc_modes import NORMAL, cosine_statistic, get_calc_mode, uses_beta
from ..merge.key_compute import computes_by_element, merged_weight
from ..merge.key_work import CalcSettings, TaskSettings, key_work
from ..merge.merge_checks import check_calc
from ..merge.merge_ratios import resolve
from ..merge.methods import get_merge_method
from ..merge.params import GAMMA
from ..merge.plan import MergeNotes
from ..merge.scratch import return_freed_memory, scratch_tensor
from ..merge.task_params import resolve_task_values
from ..text.written import TextInput
from .pieces import PieceBuffers, merged_in_pieces

SOURCE_NAMES = ("a", "b", "c", "d", "e")


@dataclass
class FileMergeSettings:
    """Everything that decides the merged weights (the same fields as Elemental Merge's inputs)."""
    mode: str = "Weight sum"
    alpha: float = 0.5
    beta: float = 0.25
    block_weights_alpha: str | None = None
    block_weights_beta: str | None = None
    elemental_alpha: str | None = None
    elemental_beta: str | None = None
    calc_mode: str = NORMAL
    calc_option: float = GAMMA.default
    task_values: dict = field(default_factory=dict)   # density, drop_rate, ..., merge_seed, model_weights
    task_texts: dict = field(default_factory=dict)    # block_weights_<p> / elemental_<p> -> text


@dataclass
class Progress:
    """What `on_progress` gets after each tensor: counts and bytes so far."""
    done: int
    total: int
    read_bytes: int
    written_bytes: int
    seconds: float


@dataclass
class FileMergeResult:
    path: str
    architecture: Architecture
    notes: dict            # "unet" / "clip" -> MergeNotes
    ratios: object         # merge_core.merge.merge_ratios.Ratios
    task: TaskSettings | None
    read_bytes: int
    written_bytes: int
    seconds: float


class _Source:
    """A source file with its keys by canonical name (a diffusion-model-only file's keys get the prefix)."""

    def __init__(self, path: str, label: str):
        self.file = TensorFile(path, label)
        self.label = label
        self.quant = self.file.companions()
        keys = [k for k in self.file.keys() if k not in self.quant]
        self.arch = detect_architecture(keys)
        canons = {k: canonical_key(k, self.arch) for k in keys}
        # A diffusion-model-only file holds the diffusion model's keys without the checkpoint prefix.
        bare = not any(c.startswith(UNET_PREFIX) for c in canons.values())
        self.by_canonical = {}
        for k, c in canons.items():
            if bare and not _is_text(c, self.arch) and not c.startswith(VAE_PREFIXES):
                c = UNET_PREFIX + c
            self.by_canonical[c] = k
        self.read_bytes = 0

    def shape(self, canon: str):
        k = self.by_canonical.get(canon)
        return self.file.shape(k) if k is not None else None

    def float32(self, canon: str) -> torch.Tensor:
        k = self.by_canonical[canon]
        e = self.file.entries[k]
        self.read_bytes += e.end - e.begin
        return self.file.read_float32(k)

    def stored(self, canon: str):
        """(the stored values, flat, in this source's reused buffer; the dequantization scale or None)."""
        k = self.by_canonical[canon]
        e = self.file.entries[k]
        scale = self.file.dequantize_scale(k)
        self.read_bytes += e.end - e.begin
        return self.file.read_reused(k), scale

    def dtype(self, canon: str) -> torch.dtype:
        return self.file.entries[self.by_canonical[canon]].dtype


def _is_text(canon: str, arch: Architecture) -> bool:
    return any(canon.startswith(te.checkpoint_prefix) for te in arch.text_encoders)


def _part(canon: str, arch: Architecture) -> str | None:
    """"unet" or "clip" for a key the merge computes, None for keys copied from A (VAE, others)."""
    if canon.startswith(UNET_PREFIX):
        return "unet"
    return "clip" if _is_text(canon, arch) else None


def open_sources(paths: dict, labels: dict | None = None) -> dict:
    """name ("a".."e") -> _Source; every file one architecture (TensorFileError / ValueError naming them)."""
    labels = labels or {}
    sources = {}
    for name, path in paths.items():
        label = labels.get(name) or os.path.basename(path)
        try:
            sources[name] = _Source(path, label)
        except TensorFileError:
            raise
        except ValueError as e:
            raise ValueError(f"model {name.upper()} ({label}): {e}") from None
    archs = {s.arch.name for s in sources.values()}
    if len(archs) > 1:
        said = ", ".join(f"{n.upper()} ({s.label}) is {s.arch.label}" for n, s in sources.items())
        raise ValueError(f"the models are of different architectures: {said}")
    return sources


def text_encoders_in_all(sources: dict) -> bool:
    """Whether every source holds its architecture's text encoders (the recipe's text_encoder_merged)."""
    arch = sources["a"].arch
    prefixes = tuple(te.checkpoint_prefix for te in arch.text_encoders)
    return bool(prefixes) and all(any(c.startswith(prefixes) for c in s.by_canonical) for s in sources.values())


def close_sources(sources: dict) -> None:
    for s in sources.values():
        s.file.close()


def _text(value) -> TextInput | None:
    return TextInput(value) if value is not None and str(value).strip() else None


def plan_merge_files(sources: dict, settings: FileMergeSettings):
    """(arch, method, ratios, task, calc, merge keys by part) for `sources` under `settings`: every check
    that needs no tensor runs here, before the output is created."""
    a = sources["a"]
    arch = a.arch
    method = get_merge_method(settings.mode)
    check_calc(method.name, settings.calc_mode, settings.calc_option)
    others = [n for n in SOURCE_NAMES[1:] if n in sources]
    if method.task:
        problem = method.count_problem(len(others))
        if problem:
            raise ValueError(problem)
        if method.max_models is not None and len(others) > method.max_models:
            raise ValueError(f"mode '{method.name}' reads models A and B only; give {len(others) + 1} fewer files")
    else:
        need = ["b", "c"] if method.needs_c else ["b"]
        missing = [n.upper() for n in need if n not in sources]
        extra = [n.upper() for n in others if n not in need]
        if missing:
            raise ValueError(f"mode '{method.name}' needs model {' and '.join(missing)}")
        if extra:
            raise ValueError(f"mode '{method.name}' reads models {', '.join(n.upper() for n in ['a'] + need)} only; "
                             f"model {', '.join(extra)} given (task-vector methods read up to five)")
    keys = {"unet": [], "clip": []}
    for canon, k in a.by_canonical.items():
        part = _part(canon, arch)
        if part == "clip" and canon.endswith(UNMERGED_TEXT_SUFFIXES):
            continue  # copied from A, as the live merge leaves them
        if part is not None and a.file.entries[k].dtype.is_floating_point:
            keys[part].append(canon)
    all_keys = keys["unet"] + keys["clip"]
    ratios = resolve(arch, all_keys, settings.alpha, settings.beta, uses_beta(method, settings.calc_mode),
                     _text(settings.block_weights_alpha), _text(settings.block_weights_beta),
                     _text(settings.elemental_alpha), _text(settings.elemental_beta))
    task = None
    if method.task:
        texts = {k: _text(v) for k, v in settings.task_texts.items()}
        values = resolve_task_values(arch, all_keys, method, settings.task_values, texts, len(others) + 1)
        task = TaskSettings(values, tuple(others), arch)
    calc = CalcSettings(settings.calc_mode, float(settings.calc_option), None, arch)
    return arch, method, ratios, task, calc, keys


TRIM_BYTES = 16 * 2 ** 20  # before a key of at least this many stored bytes, freed memory is handed back


def cosine_stat_of_files(sources: dict, keys: list, mode: str):
    """The cosine statistic of A and B over every merged key both hold in one shape (the first pass)."""
    a, b = sources["a"], sources["b"]

    def pairs():
        for canon in keys:
            if b.shape(canon) is not None and tuple(b.shape(canon)) == tuple(a.shape(canon)):
                e = a.file.entries[a.by_canonical[canon]]
                if e.end - e.begin >= TRIM_BYTES:
                    return_freed_memory()
                yield a.float32(canon), b.float32(canon)
    return cosine_statistic(pairs(), mode)


def merge_files(paths: dict, out_path: str, settings: FileMergeSettings, precision: str = "fp16",
                metadata: dict | None = None, weight_dtypes: dict | None = None,
                on_progress: Callable[[Progress], None] | None = None, labels: dict | None = None,
                overwrite: bool = False, sources: dict | None = None) -> FileMergeResult:
    """Merges the files `paths` ("a".."e" -> path) into `out_path` (never partially: written under a
    temporary name, renamed at the end). `metadata`: the output's safetensors metadata (the recipe).
    `sources`: `open_sources(paths, labels)` already made by the caller (closed here, like those opened here)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}' (valid: {', '.join(PRECISIONS)})")
    if os.path.exists(out_path) and not overwrite:
        raise FileExistsError(f"{out_path} exists; the merge never overwrites a file")
    if "a" not in paths or "b" not in paths:
        raise ValueError("a merge needs model A and model B")
    started = time.monotonic()
    weight_dtypes = weight_dtypes or {}
    if sources is None:
        sources = open_sources(paths, labels)
    try:
        arch, method, ratios, task, calc, keys = plan_merge_files(sources, settings)
        a = sources["a"]
        if get_calc_mode(calc.mode).uses_stat:
            calc = CalcSettings(calc.mode, calc.gamma, cosine_stat_of_files(sources, keys["unet"] + keys["clip"],
                                                                             calc.mode), arch)
        # Files hold checkpoint layout: fused q/k/v and projections are single keys, so no key needs the
        # layout units the live merge builds from ComfyUI's split keys.
        shapes = {canon: tuple(a.shape(canon)) for canon in keys["unet"] + keys["clip"]}

        def shape_of(name, canon):
            return sources[name].shape(canon) if name in sources else None

        works, notes = {}, {"unet": MergeNotes(), "clip": MergeNotes()}
        for part, part_keys in keys.items():
            n = notes[part]
            for canon in part_keys:
                work = key_work(canon, shapes, shape_of, method, ratios.a(canon), ratios.b(canon), calc, task)
                if work.plan.kept is not None:
                    n.kept.append((a.by_canonical[canon], work.plan.kept))
                elif not work.changes:
                    n.unchanged += 1
                else:
                    works[canon] = work
                    n.patched += 1
                    if work.plan.offset is not None:
                        d, _, length = work.plan.offset
                        n.narrowed.append((a.by_canonical[canon], f"dim {d}: {length} of {shapes[canon][d]}"))
        written = {k: canon for canon, k in a.by_canonical.items()}
        layout = {}
        for k, canon in written.items():
            e = a.file.entries[k]
            dtype = torch.float32 if e.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) and a.file.scale_of(k) \
                else e.dtype
            layout[k] = (stored_dtype(k, dtype, e.shape, precision), e.shape)
        plan = plan_file(layout, metadata)
        counters = {"written": 0}

        def load_for(canon):
            return lambda name, index: sources[name].float32(canon)

        buffers = PieceBuffers()

        def b_dtype_of(canon):
            if "b" in sources and sources["b"].shape(canon) is not None:
                return weight_dtypes.get(_part(canon, arch)) or sources["b"].dtype(canon)
            return None

        def produce(k: str) -> torch.Tensor:
            canon = written[k]
            e = a.file.entries[k]
            target = layout[k][0]
            held = weight_dtypes.get(_part(canon, arch))
            work = works.get(canon)
            if not e.dtype.is_floating_point:
                a.read_bytes += e.end - e.begin
                return a.file.read(k)
            if work is None or (work.plan.offset is None and computes_by_element(work)):
                read = {}

                def stored(name):
                    if name not in read:
                        read[name] = sources[name].stored(canon)
                    return read[name]
                out = merged_in_pieces(work, stored, scratch_tensor(e.shape, target), held, buffers,
                                       b_dtype_of(canon))
                counters["written"] += out.numel() * out.element_size()
                return out
            if e.end - e.begin >= TRIM_BYTES:
                return_freed_memory()
            value = a.float32(canon)
            view = value if work.plan.offset is None else value.narrow(*work.plan.offset)
            merged_weight(work, view, load_for(canon), b_dtype_of(canon))
            if held is not None:
                value = value.to(held)
            out = cast_for_save(value, target)
            counters["written"] += out.numel() * out.element_size()
            return out

        def progress(i: int, name: str) -> None:
            if on_progress is not None:
                on_progress(Progress(i + 1, len(plan.tensors), sum(s.read_bytes for s in sources.values()),
                                     counters["written"], time.monotonic() - started))

        with ProducedAhead(plan.order, produce) as ahead:
            write_planned(out_path, plan, ahead, progress)
    finally:
        close_sources(sources)
    return FileMergeResult(out_path, arch, notes, ratios, task, sum(s.read_bytes for s in sources.values()),
                           counters["written"], time.monotonic() - started)

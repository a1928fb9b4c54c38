"""`python -m merge_core merge`: merge safetensors files into one, key by key, without ComfyUI.

    python -m merge_core merge A.safetensors B.safetensors [C D E] -o OUT.safetensors \\
        --mode "Weight sum" --alpha 0.3 [--spec TEXT | --spec @FILE] [--block-weights ...] \\
        [--calc-mode cosineA] [--density 0.2 --elemental-density @FILE ...] [--precision fp16]
    python -m merge_core merge --recipe SAVED.safetensors -o OUT.safetensors [--models-dir DIR ...]

Every merge parameter is a flag derived from the parameter registry (merge_core.merge.params): each per-key
parameter also takes `--block-weights-<name>` and `--elemental-<name>`. Progress goes to stderr; the
per-block summary is printed at the end. Exit code 2 on bad input, with the reason.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from ..diagnostics import MergeSpecError
from ..files.tensor_file import TensorFileError
from ..merge.calc_modes import CALC_MODE_NAMES, NORMAL
from ..merge.methods import MERGE_METHODS
from ..merge.params import PARAMS, TASK_ONLY_PARAMS
from ..merge.report import format_change_report
from ..merge.task_params import MODEL_WEIGHTS, MODEL_WEIGHTS_MEANING
from ..files.save_dtypes import PRECISIONS
from .merge import SOURCE_NAMES, FileMergeSettings, merge_files
from .recipe_io import (RecipeRebuildError, merge_recipe, ordered, read_recipe, recipe_metadata, settings_of,
                        source_files, temp_path)

WEIGHT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def arguments(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Merge safetensors checkpoints file to file, one tensor "
                                "at a time (memory: a few tensors, whatever the model's size).")
    p.add_argument("models", nargs="*", help="model A (the base), B, then C, D, E as the mode needs")
    p.add_argument("-o", "--output", required=True, help="the merged file (never overwritten)")
    p.add_argument("--recipe", help="rebuild the merge recorded in this saved file instead")
    p.add_argument("--models-dir", action="append", default=[], help="where --recipe looks for its sources "
                   "(repeatable; default: the saved file's folder)")
    p.add_argument("--mode", default="Weight sum", choices=list(MERGE_METHODS), help="merge mode or method")
    p.add_argument("--calc-mode", default=NORMAL, choices=list(CALC_MODE_NAMES))
    for param in PARAMS.values():
        kind = int if param.integer else float
        p.add_argument(_flag(param.name), type=kind, default=param.default, help=param.meaning)
        if param.per_key and param in TASK_ONLY_PARAMS:
            p.add_argument(_flag(f"block_weights_{param.name}"), default=None, help=f"block weights of {param.name}")
            p.add_argument(_flag(f"elemental_{param.name}"), default=None, help=f"elemental spec of {param.name}")
    p.add_argument(_flag(MODEL_WEIGHTS), default="", help=MODEL_WEIGHTS_MEANING)
    p.add_argument("--block-weights", default=None, help="alpha's block weights: values or a preset name")
    p.add_argument("--block-weights-beta", default=None, help="beta's block weights")
    p.add_argument("--spec", default=None, help="alpha's elemental spec, or @FILE")
    p.add_argument("--spec-beta", default=None, help="beta's elemental spec, or @FILE")
    p.add_argument("--precision", default="fp16", choices=list(PRECISIONS))
    for part, what in (("unet", "diffusion model"), ("text_encoder", "text encoders")):
        p.add_argument(_flag(f"{part}_dtype"), default=None, choices=list(WEIGHT_DTYPES),
                       help=f"round each {what} weight to this dtype before the output cast, as a live ComfyUI "
                            "holding it in that dtype does (to equal a save of the live merge)")
    p.add_argument("--no-hash", action="store_true", help="record no sha256 of the sources in the recipe")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    if value.startswith("@"):
        with open(value[1:], encoding="utf-8") as f:
            return f.read()
    return value


def settings_from(args) -> FileMergeSettings:
    values, texts = {}, {}
    for param in TASK_ONLY_PARAMS:
        values[param.name] = getattr(args, param.name)
        for prefix in ("block_weights_", "elemental_"):
            text = _text(getattr(args, prefix + param.name, None))
            if text:
                texts[prefix + param.name] = text
    values[MODEL_WEIGHTS] = getattr(args, MODEL_WEIGHTS)
    return FileMergeSettings(args.mode, args.alpha, args.beta, _text(args.block_weights),
                             _text(args.block_weights_beta), _text(args.spec), _text(args.spec_beta),
                             args.calc_mode, args.calc_option, values, texts)


class _Meter:
    """Progress lines on stderr, at most one per second, and the last one."""

    def __init__(self, quiet: bool):
        self.quiet, self.last = quiet, 0.0

    def __call__(self, p) -> None:
        now = time.monotonic()
        if self.quiet or (now - self.last < 1.0 and p.done != p.total):
            return
        self.last = now
        rate = (p.read_bytes + p.written_bytes) / max(p.seconds, 1e-9) / 1e6
        tty = sys.stderr.isatty()
        print(f"{chr(13) if tty else ''}keys {p.done}/{p.total}  read {p.read_bytes / 1e9:.2f} GB  "
              f"written {p.written_bytes / 1e9:.2f} GB  {rate:.0f} MB/s",
              end="\n" if p.done == p.total or not tty else "", file=sys.stderr, flush=True)


def summary(result, settings: FileMergeSettings) -> str:
    parts = [f"{settings.mode} ({result.architecture.label}) alpha={settings.alpha:g}"
             + (f", calc mode: {settings.calc_mode}" if settings.calc_mode != NORMAL else ""),
             format_change_report(result.ratios.resolution_a, title="alpha")]
    if result.ratios.resolution_b is not None:
        parts.append(format_change_report(result.ratios.resolution_b, title="beta"))
    for name, resolution in (result.task.values.resolutions.items() if result.task is not None else ()):
        parts.append(format_change_report(resolution, title=name))
    parts.append(result.notes["unet"].summary("diffusion model"))
    parts.append(result.notes["clip"].summary("text encoders"))
    parts.append(f"wrote {result.path}: {result.written_bytes / 1e9:.2f} GB in {result.seconds:.1f} s "
                 f"(read {result.read_bytes / 1e9:.2f} GB)")
    return "\n".join(p for p in parts if p)


def run_merge(paths: dict, output: str, settings: FileMergeSettings, precision: str, weight_dtypes=None,
              hashes: bool = True, quiet: bool = False, names: dict | None = None):
    """One file merge with its recipe in the output's metadata; returns the FileMergeResult."""
    from .merge import close_sources, open_sources, text_encoders_in_all
    sources = open_sources(paths)
    try:
        node = merge_recipe(paths, settings, sources["a"].arch.name, text_encoders_in_all(sources), hashes=hashes,
                            names=names)
    except BaseException:
        close_sources(sources)
        raise
    return merge_files(paths, output, settings, precision, recipe_metadata(node, precision), weight_dtypes,
                       _Meter(quiet), sources=sources)


def rebuild(saved: str, output: str, folders: list, weight_dtypes=None, quiet: bool = False):
    """Rebuilds the merge recorded in `saved`: nested merges first, into temporary files beside `output`."""
    doc = read_recipe(saved)
    precision = (doc.get("save") or {}).get("precision", "fp16")
    folders = folders or [os.path.dirname(os.path.abspath(saved))]
    temps = []

    def build(node: dict, out: str, path: str):
        files = source_files(node, folders, path=path)
        for letter, value in list(files.items()):
            if isinstance(value, dict):
                tmp = temp_path(os.path.dirname(os.path.abspath(output)) or ".")
                temps.append(tmp)
                build(value, tmp, f"{path}.sources.{letter.upper()}")
                files[letter] = tmp
        return run_merge(ordered(files), out, settings_of(node), precision if out == output else "fp32",
                         weight_dtypes, quiet=quiet)
    try:
        return build(doc["model"], output, "model")
    finally:
        for t in temps:
            if os.path.exists(t):
                os.remove(t)


def main(argv=None, prog: str = "python -m merge_core merge") -> int:
    args = arguments(prog).parse_args(argv)
    weight_dtypes = {part: WEIGHT_DTYPES[name] for part, name in (("unet", args.unet_dtype),
                                                                 ("clip", args.text_encoder_dtype)) if name}
    try:
        if os.path.exists(args.output):
            raise FileExistsError(f"{args.output} exists; the merge never overwrites a file")
        if args.recipe:
            if args.models:
                raise ValueError("--recipe takes no model files: it names its own sources")
            result = rebuild(args.recipe, args.output, args.models_dir, weight_dtypes, args.quiet)
            print(f"rebuilt {args.recipe} -> {result.path}")
            return 0
        if len(args.models) < 2:
            raise ValueError("give model A and model B (and C, D, E as the mode needs)")
        if len(args.models) > len(SOURCE_NAMES):
            raise ValueError(f"at most {len(SOURCE_NAMES)} models (A..E); got {len(args.models)}")
        settings = settings_from(args)
        paths = dict(zip(SOURCE_NAMES, args.models))
        result = run_merge(paths, args.output, settings, args.precision, weight_dtypes, not args.no_hash,
                           args.quiet)
    except MergeSpecError as e:
        for d in e.diagnostics:
            print(d.format(), file=sys.stderr)
        return 2
    except (TensorFileError, RecipeRebuildError, FileExistsError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(result, settings))
    return 0

"""The command line: the ratio preview, and `merge` (file-to-file merge, merge_core.file_merge.cli).

    python -m merge_core --arch sd1 --alpha 0.5 --spec "OUT05:attn2:0.2" [--format json] [--changes]
    python -m merge_core merge A.safetensors B.safetensors -o OUT.safetensors --mode "Weight sum" --alpha 0.3

The preview prints every key with its block and final ratio (or JSON), the change report on request.

Invalid input prints the positioned diagnostics on stderr and exits 2.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys

from .arch.architectures import get_architecture
from .text.block_weights import load_user_presets, parse_block_weights
from .diagnostics import MergeSpecError
from .merge.report import fmt_ratio, format_change_report
from .merge.resolve import resolve_ratios
from .text.spec import parse_spec


def _arguments(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Preview the per-key ratios of an elemental merge.")
    p.add_argument("--arch", required=True, help="sd1, sd2, sdxl, flux or sd3")
    p.add_argument("--alpha", type=float, default=0.5, help="model B's share (default 0.5)")
    p.add_argument("--block-weights", default=None, help="comma-separated weights or a preset name")
    p.add_argument("--presets-file", default=None, help="user presets (tsv: name<TAB>values)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--spec", default=None, help="elemental spec text")
    g.add_argument("--spec-file", default=None, help="file holding the elemental spec")
    p.add_argument("--keys-file", default=None, help="one key per line (.gz allowed); default: built-in list")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--changes", action="store_true", help="print the change report (table format)")
    return p


def _read_text(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read()


def _inputs(args, arch):
    """(keys, block weights, spec) from the arguments; MergeSpecError or OSError when one is invalid."""
    if args.keys_file:
        keys = [k.strip() for k in _read_text(args.keys_file).splitlines() if k.strip()]
    else:
        keys = arch.default_keys()
    user = load_user_presets(args.presets_file) if args.presets_file else None
    weights = None
    if args.block_weights:
        weights = parse_block_weights(args.block_weights, arch, alpha=args.alpha, user_presets=user)
    text = args.spec if args.spec is not None else (_read_text(args.spec_file) if args.spec_file else "")
    spec = parse_spec(text, arch, keys) if text.strip() else None
    return keys, weights, spec


def _print_table(res) -> None:
    width = max((len(k) for k in res.ratios), default=3)
    print(f"{'key':<{width}}  {'block':<6} ratio")
    for k, r in res.ratios.items():
        print(f"{k:<{width}}  {res.blocks[k]:<6} {fmt_ratio(r)}")


def main(argv=None, prog: str = "python -m merge_core") -> int:
    """Preview CLI: every key with its block and ratio, or the diagnostics and exit code 2; `merge ...` runs
    the file-to-file merge."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["merge"]:
        from .file_merge.cli import main as merge_main  # imports torch: only for a merge
        return merge_main(argv[1:], prog=f"{prog} merge")
    args = _arguments(prog).parse_args(argv)
    try:
        arch = get_architecture(args.arch)
        keys, weights, spec = _inputs(args, arch)
    except MergeSpecError as e:
        for d in e.diagnostics:
            print(d.format(), file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:  # ValueError: an unknown architecture
        print(f"error: {e}", file=sys.stderr)
        return 2
    res = resolve_ratios(keys, arch, args.alpha, weights, spec)
    for w in res.warnings:
        print(w.format(), file=sys.stderr)
    if args.format == "json":
        json.dump(res.ratios, sys.stdout, indent=0)
        sys.stdout.write("\n")
        return 0
    _print_table(res)
    if args.changes:
        print()
        print(format_change_report(res, "changes:"))
    return 0


def run(prog: str = "python -m merge_core") -> None:
    """Exits with main()'s code; output piped into `head` and the like ends quietly."""
    try:
        sys.exit(main(prog=prog))
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(0)


if __name__ == "__main__":
    run()

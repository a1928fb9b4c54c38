"""The demo: a real ComfyUI with this pack, one example elemental merge queued through the queue API.

Uses the checkpoints of a models folder (yours with --models DIR or COMFYUI_DIR, else a cache folder), and
writes seeded demo checkpoints there first if it has fewer than the workflow needs. Prints the path of the
image it produced and the URL of the running UI, then keeps ComfyUI running until Ctrl-C (or exits at
once with --exit).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from devkit.checkpoints import ensure_checkpoints  # noqa: E402
from devkit.server import ComfyError, ComfyServer, free_port  # noqa: E402
from devkit.workflows import load_api_workflow  # noqa: E402

PER_KEY_LINE = re.compile(r"^\S+\s+\S+  \S+ -> \S+  \[line \d+: |^  (kept from A|common channels only): ")
CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".sft")
DEMO_NAMES = ("test_A.safetensors", "test_B.safetensors", "test_C.safetensors")


def default_models_dir() -> str:
    if os.environ.get("ELEMENTAL_USER_COMFYUI"):
        return os.path.join(os.environ["COMFYUI_DIR"], "models")
    return os.environ.get("ELEMENTAL_CACHE", os.path.expanduser("~/.cache/comfyui-elemental-merge"))


def checkpoints_in(models_dir: str) -> list[str]:
    folder = os.path.join(models_dir, "checkpoints")
    return sorted(os.path.relpath(p, folder) for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
                  if p.endswith(CHECKPOINT_EXTENSIONS))


def needed_checkpoints(prompt: dict) -> list[str]:
    names = []
    for node in prompt.values():
        name = node["inputs"].get("ckpt_name")
        if isinstance(name, str) and name not in names:
            names.append(name)
    return names


def summary_lines(report: str) -> str:
    """The change report without its per-key lines (`BLOCK key  before -> after  [line N: entry]`), which run
    to hundreds; the per-block table and the engine's totals stay."""
    return "\n".join(line for line in report.splitlines() if not PER_KEY_LINE.match(line))


def use_available_checkpoints(prompt: dict, models_dir: str) -> None:
    """Points the workflow's loaders at checkpoints of `models_dir`, writing seeded ones if there are too few."""
    wanted = needed_checkpoints(prompt)
    have = checkpoints_in(models_dir)
    if len(have) < len(wanted):
        print(f"[demo] {models_dir}/checkpoints has {len(have)} checkpoint(s); writing seeded demo checkpoints "
              f"(2.1 GB each, about 20 s each)", file=sys.stderr)
        ensure_checkpoints(os.path.join(models_dir, "checkpoints"), names=("A", "B", "C")[:len(wanted)])
        have = checkpoints_in(models_dir)
    # The workflow names test_A/B/C; with other checkpoints, take the first ones of the folder in order.
    chosen = {w: (w if w in have else have[i]) for i, w in enumerate(wanted)}
    for node in prompt.values():
        if node["inputs"].get("ckpt_name") in chosen:
            node["inputs"]["ckpt_name"] = chosen[node["inputs"]["ckpt_name"]]
    print("[demo] models: " + ", ".join(f"{w} -> {c}" for w, c in chosen.items()), file=sys.stderr)


def show_outputs(server, outputs: dict) -> None:
    """Prints the saved images' paths and the per-block change report; the whole report goes to a file."""
    images = [img for out in outputs.values() for img in out.get("images", []) if img.get("type") == "output"]
    if not images:
        raise ComfyError(f"the workflow produced no saved image: {json.dumps(outputs)[:500]}")
    paths = [os.path.join(server.output_dir, img.get("subfolder", ""), img["filename"]) for img in images]
    for path in paths:
        print("IMAGE " + path)
    reports = [text for out in outputs.values() for text in out.get("text", [])]
    if reports:
        report_path = os.path.splitext(paths[0])[0] + "_report.txt"
        with open(report_path, "w", encoding="utf-8") as f:
            f.write("\n\n".join(reports) + "\n")
        print("[demo] change report, per block (every key: " + report_path + "):\n"
              + "\n".join(summary_lines(r) for r in reports), file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help="a ComfyUI models folder (with checkpoints/) to take the models from")
    ap.add_argument("--workflow", default="elemental_merge_basic", help="example workflow to queue")
    ap.add_argument("--port", type=int, default=8188)
    ap.add_argument("--exit", action="store_true", help="stop ComfyUI after the image is made")
    args = ap.parse_args()

    models_dir = os.path.abspath(args.models or default_models_dir())
    prompt = load_api_workflow(args.workflow)
    use_available_checkpoints(prompt, models_dir)

    cache = os.environ.get("ELEMENTAL_CACHE", os.path.expanduser("~/.cache/comfyui-elemental-merge"))
    base = os.path.join(cache, "demo-base")
    port = args.port
    try:
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    except OSError:
        port = free_port()
    server = ComfyServer(os.environ["COMFYUI_DIR"], os.environ.get("COMFYUI_PYTHON", sys.executable),
                         models_dir=models_dir, base_dir=base, port=port)
    print(f"[demo] starting ComfyUI on {server.url} (log: {server.log_path})", file=sys.stderr)
    try:
        server.start()
        t = time.time()
        outputs = server.run(prompt)
        print(f"[demo] workflow '{args.workflow}' ran in {time.time() - t:.1f} s", file=sys.stderr)
        show_outputs(server, outputs)
        print(f"UI    {server.url}")
        sys.stdout.flush()
        if not args.exit:
            print("[demo] ComfyUI keeps running; Ctrl-C stops it", file=sys.stderr)
            while server.proc.poll() is None:
                time.sleep(1)
        return 0
    except KeyboardInterrupt:
        return 0
    except ComfyError as err:
        print(f"[demo] failed: {err}", file=sys.stderr)
        return 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())

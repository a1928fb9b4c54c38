"""Makes the README's pictures from a real run: docs/diff_chart.png and docs/spec_editor.png.

Starts a real ComfyUI with this pack and the seeded demo checkpoints test_A/test_B (written first if missing,
about 20 s each), then
1. queues the diff checker example workflow (example_workflows/api/diff_checker.json) through /prompt, copies
   the chart PNG it saved in the server's output folder to docs/diff_chart.png and prints the run's table
   (the CSV the node wrote next to the chart);
2. opens the web UI in headless Chromium (Debian's, through Playwright), loads the elemental_merge_basic example,
   types a spec with an unknown block into the Elemental Spec editor, waits until the editor marks it at its line
   and column, and screenshots that node to docs/spec_editor.png.
Run it with `bash scripts/docs_figures.sh` (which provisions and sets PYTHON/COMFYUI_DIR first).
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from devkit import browser as ui  # noqa: E402
from devkit.checkpoints import ensure_checkpoints  # noqa: E402
from devkit.server import REPO_ROOT, ComfyError, ComfyServer  # noqa: E402
from devkit.workflows import load_api_workflow  # noqa: E402

DIFF_WORKFLOW = "diff_checker"
DIFF_NODE = "10"                      # the ElementalDiffChecker node of that workflow
EDITOR_WORKFLOW = "elemental_merge_basic"
# Line 2, column 17 names a block SD1 does not have; the editor marks it there.
BAD_SPEC = "IN04:attn2:0.3\nOUT03-OUT05::0, OUT99:attn1:0.5"
BAD_AT = ("2", "17")
# Two SD1.5 models in fp32 plus the patched copy peak at ~12 GB on the CPU; UNet weights stored in fp16 (computed
# in fp32, ComfyUI's manual cast) halve that, so the figures can be remade on a small machine.
COMFY_ARGS = ("--fp16-unet",)


def log(msg: str) -> None:
    print(f"[docs] {msg}", file=sys.stderr, flush=True)


def default_checkpoint_dir() -> str:
    cache = os.environ.get("ELEMENTAL_CACHE", os.path.expanduser("~/.cache/comfyui-elemental-merge"))
    return os.environ.get("ELEMENTAL_CHECKPOINTS", os.path.join(cache, "checkpoints"))


def format_table(rows: list[dict]) -> str:
    """The CSV rows as aligned text columns, header first."""
    head = list(rows[0]) if rows else []
    cells = [head] + [[r[h] for h in head] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells)


def diff_chart(server: ComfyServer, dest: str) -> list[dict]:
    """Runs the diff checker example; copies its chart to `dest`; returns the rows of the CSV it wrote."""
    t = time.time()
    outputs = server.run(load_api_workflow(DIFF_WORKFLOW))
    charts = [i for i in outputs[DIFF_NODE]["images"] if i["filename"].endswith("_chart.png")]
    if not charts:
        raise ComfyError(f"the diff checker reported no chart: {outputs[DIFF_NODE]}")
    folder = os.path.join(server.output_dir, charts[0]["subfolder"])
    chart = os.path.join(folder, charts[0]["filename"])
    shutil.copyfile(chart, dest)
    with open(chart[: -len("_chart.png")] + ".csv", newline="") as f:
        rows = list(csv.DictReader(f))
    log(f"diff checker ran in {time.time() - t:.1f} s; chart {chart} -> {dest}")
    return rows


def spec_editor(server: ComfyServer, dest: str) -> None:
    """Types BAD_SPEC into the Elemental Spec editor and screenshots the node once the error is marked."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = ui.launch_chromium(pw)
        try:
            context, page = ui.open_comfy_page(chromium, server, pixel_ratio=2)
            ui.load_workflow(page, EDITOR_WORKFLOW, "ElementalSpec")
            nid = ui.node_id(page, "ElementalSpec")
            ui.set_spec(page, nid, BAD_SPEC)
            panel = ui.wait_state(page, nid, "error", BAD_SPEC)
            diag = panel.locator(".elemental-diag.error")
            at = (diag.first.get_attribute("data-line"), diag.first.get_attribute("data-column"))
            if diag.count() != 1 or at != BAD_AT:
                raise RuntimeError(f"the editor marked {diag.count()} error(s), the first at {at}; "
                                   f"expected one at line {BAD_AT[0]}, column {BAD_AT[1]}")
            page.mouse.click(5, 5)  # blur the textarea: no caret, no completion popup in the picture
            page.wait_for_timeout(500)
            page.screenshot(path=dest, clip=ui.node_clip(page, nid))
            log(f"editor marked: {diag.inner_text().strip()!r} at line {at[0]}, column {at[1]} -> {dest}")
            context.close()
        finally:
            chromium.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, "docs"), help="folder for the two PNGs")
    ap.add_argument("--checkpoints", default=default_checkpoint_dir(),
                    help="folder with (or for) the seeded demo checkpoints test_A/test_B.safetensors")
    ap.add_argument("--fp32", action="store_true",
                    help="keep ComfyUI's CPU default (fp32 UNet weights, ~12 GB peak) instead of --fp16-unet (~6 GB)")
    ap.add_argument("--only", choices=("chart", "editor"), help="make just one of the two pictures")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    checkpoints = ensure_checkpoints(args.checkpoints, names=("A", "B"))
    server = ComfyServer(os.environ["COMFYUI_DIR"], os.environ.get("COMFYUI_PYTHON", sys.executable),
                         checkpoints=checkpoints, extra_args=() if args.fp32 else COMFY_ARGS)
    log(f"starting ComfyUI on {server.url} (log: {server.log_path})")
    try:
        server.start()
        if args.only in (None, "chart"):
            rows = diff_chart(server, os.path.join(args.out, "diff_chart.png"))
            print(f"diff checker table ({DIFF_WORKFLOW} example, test_A x test_B):")
            print(format_table(rows))
            server.free_memory()  # the editor needs no model in memory
        if args.only in (None, "editor"):
            spec_editor(server, os.path.join(args.out, "spec_editor.png"))
        return 0
    except (ComfyError, RuntimeError, ui.BrowserMissing) as err:
        log(f"failed: {err}")
        return 1
    except BaseException:
        log(f"failed; ComfyUI log (tail):\n{server.log_tail(4000)}")
        raise
    finally:
        server.cleanup()


if __name__ == "__main__":
    sys.exit(main())

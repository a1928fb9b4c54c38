"""Headless Chromium (Debian's, driven by Playwright) on a real ComfyUI server with this pack.

The browser tests and scripts/docs_figures.py both drive the web UI through these helpers, so the README's
screenshot is taken exactly the way the tests look at the editor. Playwright never downloads a browser here:
it launches /usr/bin/chromium (scripts/browser.sh installs it); a missing Chromium is an error.
"""
from __future__ import annotations

import json
import os

from .workflows import load_ui_workflow

CHROMIUM = os.environ.get("ELEMENTAL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EXTENSION_NAME = "elemental.merge.editors"
APP = "window.comfyAPI.app.app"
# The same object before the front end has defined it (window.comfyAPI is set only once its modules load).
APP_SOON = "window.comfyAPI?.app?.app"
# Settings that keep first-run dialogs (templates browser, release notes) from covering the canvas.
# Comfy.VueNodes.Enabled ("Nodes 2.0") is left unset on purpose: the pages use each front end's default node
# rendering, which is the canvas (LiteGraph) one in 1.32.9 and still in 1.49.6 (that setting defaults to false).
QUIET_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Workflow.ShowMissingNodesWarning": False,
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    "Comfy.NodeBadge.NodeIdBadgeMode": "Show all",
    "Comfy.Minimap.Visible": False,
}


class BrowserMissing(RuntimeError):
    """No Chromium at CHROMIUM; the message says how to install it."""


def launch_chromium(playwright):
    """Debian's Chromium through Playwright (`playwright` is the object `sync_playwright()` yields)."""
    if not os.path.isfile(CHROMIUM):
        raise BrowserMissing(f"Chromium not found at {CHROMIUM}: run scripts/browser.sh (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def quiet_settings(server) -> None:
    """Stores QUIET_SETTINGS on the server (the front end reads them at load)."""
    for key, value in QUIET_SETTINGS.items():
        status, raw = server.request("POST", f"/settings/{key}", value)
        if status != 200:
            raise RuntimeError(f"setting {key} answered {status}: {raw[:200]!r}")


def open_comfy_page(browser, server, viewport=(1600, 1000), pixel_ratio: float = 1):
    """(context, page): the ComfyUI front end loaded, this pack's extension registered, no dialog open.
    `page.console_errors` collects the page's console errors and uncaught exceptions; `pixel_ratio` 2 gives
    screenshots at twice the CSS size (sharp pictures for the docs)."""
    quiet_settings(server)
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                  device_scale_factor=pixel_ratio)
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    page.goto(server.url, wait_until="domcontentloaded")
    page.wait_for_function(
        f"() => {APP_SOON}?.graph && {APP}.extensions?.some"
        f"(e => e.name === {json.dumps(EXTENSION_NAME)}) && {APP}.canvas?.canvas"
        # Front ends from 1.4x restore the startup workflow after the app is ready, and only then drop their
        # splash screen: a workflow loaded before that is replaced by the restored one.
        f" && {APP}.extensionManager?.workflow?.activeWorkflow && !document.getElementById('splash-loader')",
        timeout=90_000)
    page.wait_for_timeout(1000)  # let the front end finish drawing the restored workflow
    return context, page


def load_workflow(page, workflow: str | dict, focus_type: str | None = None) -> None:
    """Loads a UI-format workflow (an example's name, or the workflow itself) through the app, as the workflow
    menu does, and centres a node."""
    if isinstance(workflow, str):
        workflow = load_ui_workflow(workflow)
    page.evaluate(f"async (wf) => {{ await {APP}.loadGraphData(wf); }}", workflow)
    if focus_type:  # zoom out a little and put that node in the middle of the window
        page.evaluate(f"(t) => {{ const c = {APP}.canvas; const n = {APP}.graph.nodes.find((n) => n.type === t);"
                      " const s = 0.8; c.ds.scale = s;"
                      " c.ds.offset = [c.canvas.clientWidth / 2 / s - n.pos[0] - n.size[0] / 2,"
                      "                c.canvas.clientHeight / 2 / s - n.pos[1] - n.size[1] / 2];"
                      " c.setDirty(true, true); }", focus_type)
    page.wait_for_timeout(500)


PANELS = {"ElementalSpec": "elemental-spec-panel", "BlockWeights": "elemental-weights-panel"}


def open_editor(page, workflow: str | dict, node_type: str):
    """Loads `workflow`, centres its first `node_type` node and waits for the pack's editor panel on it:
    (node id, the panel's locator)."""
    load_workflow(page, workflow, node_type)
    nid = node_id(page, node_type)
    panel = page.locator(f'.{PANELS[node_type]}[data-node="{nid}"]')
    panel.wait_for(timeout=15_000)
    return nid, panel


def node_id(page, node_type: str) -> int:
    ids = page.evaluate(f"(t) => {APP}.graph.nodes.filter((n) => n.type === t).map((n) => n.id)", node_type)
    if not ids:
        raise LookupError(f"the workflow has no {node_type} node")
    return ids[0]


def widget_value(page, nid: int, name: str):
    return page.evaluate(f"([id, name]) => {APP}.graph.getNodeById(id).widgets.find((w) => w.name === name).value",
                         [nid, name])


def set_spec(page, nid: int, text: str) -> None:
    """Types `text` into the spec textarea the way a user does (select all, type)."""
    area = page.locator(f'textarea[data-elemental-spec="{nid}"]')
    area.click()
    area.press("Control+a")
    area.press("Delete")
    area.type(text, delay=5)


def wait_state(page, nid: int, state: str, text: str):
    """Waits until the spec panel of node `nid` has checked exactly `text` and shows `state` (ok, error...);
    returns the panel's locator."""
    page.wait_for_function(
        "([id, state, text]) => { const p = document.querySelector(`.elemental-spec-panel[data-node='${id}']`);"
        f" const w = {APP}.graph.getNodeById(id).widgets.find((w) => w.name === 'spec');"
        " return p && p.dataset.state === state && w.value === text && p.dataset.checked === text; }",
        arg=[nid, state, text], timeout=15_000)
    return page.locator(f'.elemental-spec-panel[data-node="{nid}"]')


def node_clip(page, nid: int, margin: int = 6) -> dict:
    """The page rectangle (x, y, width, height) a node covers on the canvas, title bar included, plus a margin:
    a `clip` for page.screenshot that shows just that node."""
    box = page.evaluate(
        f"(id) => {{ const c = {APP}.canvas; const n = {APP}.graph.getNodeById(id);"
        " const r = c.canvas.getBoundingClientRect(); const s = c.ds.scale, o = c.ds.offset;"
        " const title = window.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;"
        " return { x: r.left + (n.pos[0] + o[0]) * s, y: r.top + (n.pos[1] - title + o[1]) * s,"
        "          width: n.size[0] * s, height: (n.size[1] + title) * s }; }", nid)
    return {"x": max(0, box["x"] - margin), "y": max(0, box["y"] - margin),
            "width": box["width"] + 2 * margin, "height": box["height"] + 2 * margin}

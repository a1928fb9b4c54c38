"""Headless Chromium (Debian's, driven by Playwright) on the real ComfyUI server with this pack.

Playwright never downloads a browser here: it launches /usr/bin/chromium (scripts/browser.sh installs it).
A missing Chromium fails the tests instead of skipping them, so a CI run cannot pass without the browser.
Screenshots go to artifacts/screenshots/ (git-ignored) for a person to look at.
"""
from __future__ import annotations

import json
import os

import pytest

from devkit.server import REPO_ROOT

CHROMIUM = os.environ.get("ELEMENTAL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT_DIR = os.path.join(REPO_ROOT, "artifacts", "screenshots")
EXTENSION_NAME = "elemental.merge.editors"
# Settings that keep first-run dialogs (templates browser, release notes) from covering the canvas.
QUIET_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Workflow.ShowMissingNodesWarning": False,
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    "Comfy.NodeBadge.NodeIdBadgeMode": "Show all",
    "Comfy.Minimap.Visible": False,
}


@pytest.fixture(scope="session")
def chromium_browser():
    if not os.path.isfile(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: run scripts/browser.sh (apt-get install chromium)",
                    pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def comfy_page(chromium_browser, comfy_server):
    """A page with the ComfyUI front end loaded, this pack's extension registered and no dialog open."""
    for key, value in QUIET_SETTINGS.items():
        status, raw = comfy_server.request("POST", f"/settings/{key}", value)
        assert status == 200, (key, status, raw[:200])
    context = chromium_browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    page.goto(comfy_server.url, wait_until="domcontentloaded")
    page.wait_for_function(
        "() => window.comfyAPI?.app?.app?.graph && window.comfyAPI.app.app.extensions?.some"
        f"(e => e.name === {json.dumps(EXTENSION_NAME)}) && window.comfyAPI.app.app.canvas?.canvas",
        timeout=90_000)
    page.wait_for_timeout(1000)  # let the front end finish restoring its (empty) workflow
    try:
        yield page
    finally:
        context.close()


def screenshot(page, name: str) -> str:
    os.makedirs(SCREENSHOT_DIR, exist_ok=True)
    path = os.path.join(SCREENSHOT_DIR, f"{name}.png")
    page.screenshot(path=path)
    return path

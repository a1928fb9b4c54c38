"""Headless Chromium (Debian's, driven by Playwright) on the real ComfyUI server with this pack.

Playwright never downloads a browser here: it launches /usr/bin/chromium (scripts/browser.sh installs it).
A missing Chromium fails the tests instead of skipping them, so a CI run cannot pass without the browser.
The launching and page helpers live in devkit/browser.py (scripts/docs_figures.py uses them too).
Screenshots go to artifacts/screenshots/ (git-ignored) for a person to look at.
"""
from __future__ import annotations

import os

import pytest

from devkit.browser import BrowserMissing, launch_chromium, open_comfy_page
from devkit.server import REPO_ROOT

SCREENSHOT_DIR = os.path.join(REPO_ROOT, "artifacts", "screenshots")


@pytest.fixture(scope="session")
def chromium_browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        try:
            browser = launch_chromium(pw)
        except BrowserMissing as err:
            pytest.fail(str(err), pytrace=False)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def comfy_page(chromium_browser, comfy_server):
    """A page with the ComfyUI front end loaded, this pack's extension registered and no dialog open."""
    context, page = open_comfy_page(chromium_browser, comfy_server)
    try:
        yield page
    finally:
        context.close()


def screenshot(page, name: str) -> str:
    os.makedirs(SCREENSHOT_DIR, exist_ok=True)
    path = os.path.join(SCREENSHOT_DIR, f"{name}.png")
    page.screenshot(path=path)
    return path

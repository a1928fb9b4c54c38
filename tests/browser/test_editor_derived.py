"""The editors on a model with no record, in real headless Chromium: an LTXV file behind `Load Diffusion Model`
gives the spec editor and the block-weight sliders its derived blocks (IN, T00..T27, OUT), and an element
that matches only through the key prefix (``ff`` in ``model.diffusion_model.``) is warned about in the
editor, with the narrower element to write."""
from __future__ import annotations

import os
import time

import pytest

from devkit.browser import APP, node_clip, node_id, open_editor, set_spec, wait_state, widget_value
from devkit.ui_workflow import api_to_ui
from tests.browser.conftest import SCREENSHOT_DIR
from tests.helpers.ltxv_files import BLOCKS, write_ltxv

pytestmark = pytest.mark.browser

NAME = "ltxv_browser.safetensors"
SPEC = "T05:attn2:0.3\nNOT T05:ff:0.9"


@pytest.fixture
def ltxv_file(comfy_server):
    folder = os.path.join(comfy_server.models_dir, "diffusion_models")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, NAME)
    write_ltxv(path)
    try:
        yield path
    finally:
        os.remove(path)


def node_screenshot(page, nid: int, name: str) -> str:
    """A screenshot of one node, centred in the window first."""
    page.evaluate(f"(id) => {{ const c = {APP}.canvas; const n = {APP}.graph.getNodeById(id); const s = c.ds.scale;"
                  " c.ds.offset = [c.canvas.clientWidth / 2 / s - n.pos[0] - n.size[0] / 2,"
                  "                c.canvas.clientHeight / 2 / s - n.pos[1] - n.size[1] / 2]; c.setDirty(true, true); }",
                  nid)
    page.wait_for_timeout(500)
    os.makedirs(SCREENSHOT_DIR, exist_ok=True)
    path = os.path.join(SCREENSHOT_DIR, f"{name}.png")
    page.screenshot(path=path, clip=node_clip(page, nid, margin=10))
    return path


def test_editors_show_derived_blocks_and_the_prefix_warning(comfy_page, comfy_server, ltxv_file):
    loader = {"class_type": "UNETLoader", "inputs": {"unet_name": NAME, "weight_dtype": "default"}}
    api = {"1": loader, "2": loader,
           "3": {"class_type": "ElementalSpec", "inputs": {"spec": SPEC, "architecture": "auto"}},
           "4": {"class_type": "BlockWeights", "inputs": {"weights": "", "architecture": "auto"}},
           "5": {"class_type": "ElementalMerge", "inputs": {
               "model_a": ["1", 0], "model_b": ["2", 0], "mode": "Weight sum", "alpha": 0.5, "beta": 0.25,
               "elemental_alpha": ["3", 0], "block_weights_alpha": ["4", 0], "print_change": False}}}
    page = comfy_page
    page.set_viewport_size({"width": 1800, "height": 1000})
    spec_id, panel = open_editor(page, api_to_ui(api, comfy_server.object_info()), "ElementalSpec")
    bw_id = node_id(page, "BlockWeights")
    # Room for both editors: the spec node above the block weights, each wide enough to read.
    page.evaluate(f"([s, b]) => {{ const g = {APP}.graph; const spec = g.getNodeById(s), bw = g.getNodeById(b);"
                  " spec.setSize([560, 440]); bw.pos = [spec.pos[0], spec.pos[1] + 520]; bw.setSize([760, 300]);"
                  f" {APP}.canvas.ds.scale = 1.1; {APP}.canvas.setDirty(true, true); }}", [spec_id, bw_id])

    # The spec editor: checked against the derived architecture, its blocks listed in the status.
    page.wait_for_function("(id) => document.querySelector(`.elemental-spec-panel[data-node='${id}']`)"
                           "?.dataset.derived === 'true'", arg=spec_id, timeout=20_000)
    wait_state(page, spec_id, "ok", SPEC)
    arch = panel.get_attribute("data-arch")
    assert arch.startswith("derived-")
    status = panel.locator(".elemental-status").inner_text()
    assert f"LTXV (derived) from {NAME}" in status, status
    assert "derived from its keys: 28 blocks T00-T27 (transformer_blocks.N), IN, OUT" in status, status
    assert comfy_server.get_json(f"/elemental/architectures/{arch}")["blocks"] == BLOCKS

    # The warning: in the panel (line 2, the element's column) and marked behind the text.
    warning = panel.locator(".elemental-diag.warning")
    assert warning.count() == 1
    assert (warning.get_attribute("data-line"), warning.get_attribute("data-column")) == ("2", "9")
    text = warning.inner_text()
    assert "element 'ff' matches" in text and "only inside their prefix 'model.diffusion_model.'" in text
    assert "write 'ff.net'" in text
    mark = page.locator(".elemental-mark.warning")
    assert mark.count() == 1 and mark.inner_text() == "ff"
    rows = panel.locator(".elemental-entry")
    assert rows.count() == 2 and int(rows.nth(0).get_attribute("data-count")) > 0
    shot = node_screenshot(page, spec_id, "spec_derived_prefix_warning")

    # Completion offers the derived blocks.
    set_spec(page, spec_id, "T2")
    popup = page.locator(".elemental-complete:not([hidden])")
    popup.wait_for(timeout=5_000)
    assert popup.locator(".elemental-complete-item").all_inner_texts() == [f"T2{i}" for i in range(8)]
    page.locator(f'textarea[data-elemental-spec="{spec_id}"]').press("Escape")

    # The block-weight editor: one slider per derived block, in order.
    page.wait_for_function(f"([id, arch]) => document.querySelector(`.elemental-weights-panel[data-node='${{id}}']`)"
                           "?.dataset.arch === arch", arg=[bw_id, arch], timeout=20_000)
    weights = page.locator(f'.elemental-weights-panel[data-node="{bw_id}"]')
    sliders = weights.locator("input.elemental-slider")
    assert sliders.count() == len(BLOCKS)
    assert [sliders.nth(i).get_attribute("data-block") for i in range(sliders.count())] == BLOCKS
    values = ",".join(str(round(i / (len(BLOCKS) - 1), 4)) for i in range(len(BLOCKS)))
    # Typed into the widget (its callback, as the front end calls it on an edit): the sliders follow.
    page.evaluate(f"([id, v]) => {{ const w = {APP}.graph.getNodeById(id).widgets.find((w) => w.name === 'weights');"
                  " w.value = v; w.callback?.(v); }", [bw_id, values])
    page.wait_for_function("(id) => { const p = document.querySelector(`.elemental-weights-panel[data-node='${id}']`);"
                           " return p.dataset.state === 'ok' && p.querySelector(\"input[data-block='T13']\").value"
                           " === '0.4828'; }", arg=bw_id, timeout=10_000)
    assert sliders.nth(len(BLOCKS) - 1).input_value() == "1"
    assert "LTXV (derived)" in weights.locator(".elemental-arch").inner_text()
    assert widget_value(page, bw_id, "weights") == values
    shot2 = node_screenshot(page, bw_id, "block_weights_derived")
    print(f"screenshots: {shot} {shot2}")
    assert not [e for e in page.console_errors if "elemental" in e.lower()], page.console_errors

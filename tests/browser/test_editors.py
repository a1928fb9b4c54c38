"""The web extension in real headless Chromium against the real server: spec validation marked at the right
line and column, matched-key counts equal to the preview route's, completion, presets written into the
weight text, and the change report shown on the merge node after a run.
"""
from __future__ import annotations

import json
import os
import re
import time

import pytest

from tests.browser.conftest import screenshot
from devkit.browser import APP, load_workflow, node_id, open_editor, set_spec, wait_state, widget_value

pytestmark = pytest.mark.browser

BASIC = "elemental_merge_basic"                  # loaders -> ElementalSpec -> ElementalMerge (print_change)
WITH_WEIGHTS = "add_difference_block_weights"    # the same with BlockWeights (GRAD_V) and a third model


def test_spec_editor_marks_errors_and_counts_matched_keys(comfy_page, comfy_server):
    page = comfy_page
    spec_id, panel = open_editor(page, BASIC, "ElementalSpec")

    # An unknown block on line 2: marked there, in the panel and behind the text.
    bad = "IN04:attn2:0.3\nOUT03-OUT05::0, OUT99:attn1:0.5"
    set_spec(page, spec_id, bad)
    wait_state(page, spec_id, "error", bad)
    diag = panel.locator(".elemental-diag.error")
    assert diag.count() == 1
    assert (diag.get_attribute("data-line"), diag.get_attribute("data-column")) == ("2", "17")
    assert "unknown block 'OUT99'" in diag.inner_text()
    mark = page.locator(".elemental-mark.error")
    assert mark.count() == 1 and mark.inner_text() == "OUT99"
    assert (mark.get_attribute("data-line"), mark.get_attribute("data-column")) == ("2", "17")
    # The mark sits on the second line of the textarea, right of the text before it.
    area = page.locator(f'textarea[data-elemental-spec="{spec_id}"]').bounding_box()
    box = mark.bounding_box()
    screenshot(page, "spec_error")
    line_height = box["height"]  # the mark is one line of text high
    assert area["y"] + line_height * 0.9 < box["y"] < area["y"] + line_height * 2.5, (area, box)
    assert box["x"] > area["x"] + 40
    assert "SD1.x from test_A.safetensors" in panel.locator(".elemental-status").inner_text()

    # Fixed: every entry's count equals what the preview route says.
    good = "IN04:attn2:0.3\nOUT03-OUT05::0, OUT09:attn1:0.5"
    set_spec(page, spec_id, good)
    wait_state(page, spec_id, "ok", good)
    assert page.locator(".elemental-mark").count() == 0
    status, raw = comfy_server.request("POST", "/elemental/preview", {"spec": good, "arch": "sd1"})
    expected = json.loads(raw)["entries"]
    assert status == 200 and [e["count"] for e in expected] == [5, 116, 5]
    rows = panel.locator(".elemental-entry")
    shown = [(rows.nth(i).get_attribute("data-line"), int(rows.nth(i).get_attribute("data-count")))
             for i in range(rows.count())]
    assert shown == [(str(e["line"]), e["count"]) for e in expected]
    assert rows.nth(0).locator(".elemental-count").inner_text() == "5 keys"

    # The key list on demand, grouped by block.
    rows.nth(0).locator(".elemental-keys-button").click()
    keys = rows.nth(0).locator(".elemental-key")
    keys.first.wait_for(timeout=10_000)
    assert keys.count() == 5
    assert keys.nth(1).inner_text() == \
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight → 0.3"
    assert rows.nth(0).locator("summary").inner_text() == "IN04 (5)"
    screenshot(page, "spec_ok_keys")


def test_spec_editor_completes_block_and_element_names(comfy_page):
    page = comfy_page
    spec_id, _ = open_editor(page, BASIC, "ElementalSpec")
    set_spec(page, spec_id, "OUT1")
    popup = page.locator(".elemental-complete:not([hidden])")
    popup.wait_for(timeout=5_000)
    assert popup.locator(".elemental-complete-item").all_inner_texts() == ["OUT10", "OUT11"]
    area = page.locator(f'textarea[data-elemental-spec="{spec_id}"]')
    area.press("ArrowDown")
    area.press("Enter")
    area.type(":attn2.to_")
    assert popup.locator(".elemental-complete-item").all_inner_texts() == [
        "attn2.to_k", "attn2.to_out", "attn2.to_q", "attn2.to_v"]
    screenshot(page, "spec_completion")
    area.press("Tab")
    area.type(":0.2")
    assert widget_value(page, spec_id, "spec") == "OUT11:attn2.to_k:0.2"
    wait_state(page, spec_id, "ok", "OUT11:attn2.to_k:0.2")


def test_block_weight_preset_writes_the_text_and_the_sliders(comfy_page, comfy_server):
    page = comfy_page
    bw_id, panel = open_editor(page, WITH_WEIGHTS, "BlockWeights")
    page.wait_for_function("(id) => document.querySelector(`.elemental-weights-panel[data-node='${id}']`)"
                           "?.dataset.arch === 'sd1'", arg=bw_id, timeout=15_000)
    # The workflow's text names a preset: the menu shows it and the sliders show its values.
    assert widget_value(page, bw_id, "weights") == "GRAD_V"
    page.wait_for_function("(id) => document.querySelector(`.elemental-weights-panel[data-node='${id}'] "
                           "input[data-block='IN01']`)?.value === '0.9166666667'", arg=bw_id, timeout=10_000)
    assert panel.locator("select.elemental-preset").input_value() == "GRAD_V"
    sliders = panel.locator("input.elemental-slider")
    assert sliders.count() == 26
    assert [sliders.nth(i).get_attribute("data-block") for i in (0, 1, 13, 25)] == ["BASE", "IN00", "M00", "OUT11"]
    assert [float(sliders.nth(i).input_value()) for i in (0, 1, 2, 13)] == [0.0, 1.0, 0.9166666667, 0.0]
    screenshot(page, "block_weights_loaded")

    # Picking another preset writes its values into the text.
    panel.locator("select.elemental-preset").select_option("GRAD_A")
    grad_a = json.loads(comfy_server.request("GET", "/elemental/presets?arch=sd1")[1])["presets"]["GRAD_A"]
    expected = ",".join(f"{v:.10g}" for v in grad_a)
    assert expected.startswith("0,0,0.0833333333,0.1666666667,0.25,")
    page.wait_for_function(f"([id, t]) => {APP}.graph.getNodeById(id).widgets.find((w) => w.name === 'weights')"
                           ".value === t", arg=[bw_id, expected], timeout=5_000)
    assert [float(sliders.nth(i).input_value()) for i in (0, 1, 2, 13)] == [0.0, 0.0, 0.0833333333, 1.0]
    # Moving a slider writes the text; the select no longer names a preset.
    page.evaluate("(id) => { const s = document.querySelector(`.elemental-weights-panel[data-node='${id}'] "
                  "input[data-block='M00']`); s.value = '0.5'; s.dispatchEvent(new Event('input')); }", bw_id)
    values = widget_value(page, bw_id, "weights").split(",")
    assert values[13] == "0.5" and values[:3] == ["0", "0", "0.0833333333"] and len(values) == 26
    assert panel.locator("select.elemental-preset").input_value() == ""
    # And the text typed in the widget moves the sliders.
    page.evaluate(f"(id) => {{ {APP}.graph.getNodeById(id).widgets.find((w) => w.name === 'weights').value = "
                  "'FLAT_75'; }", bw_id)
    page.wait_for_function("(id) => document.querySelector(`.elemental-weights-panel[data-node='${id}'] "
                           "input[data-block='IN05']`).value === '0.75'", arg=bw_id, timeout=10_000)
    assert panel.locator("select.elemental-preset").input_value() == "FLAT_75"
    screenshot(page, "block_weights")


def test_change_report_is_shown_on_the_merge_node_after_a_run(comfy_page):
    page = comfy_page
    load_workflow(page, BASIC, "ElementalMerge")
    spec_id = node_id(page, "ElementalSpec")
    merge_id = node_id(page, "ElementalMerge")
    page.evaluate(f"([s, m]) => {{ const g = {APP}.graph;"
                  " g.getNodeById(s).widgets.find((w) => w.name === 'spec').value = 'IN04:attn2:0.3';"
                  " g.getNodeById(m).widgets.find((w) => w.name === 'print_change').value = true; }",
                  [spec_id, merge_id])
    started = time.time()
    page.evaluate(f"async () => {{ await {APP}.queuePrompt(0, 1); }}")
    report = page.locator(".elemental-report")
    page.wait_for_function("() => document.querySelector('.elemental-report')?.value?.includes('IN04')",
                           timeout=300_000)
    text = report.input_value()
    assert "(SD1.x)" in text.splitlines()[0] and "A=test_A.safetensors" in text.splitlines()[0]
    changed = [l for l in text.splitlines() if l.endswith("[line 1: IN04:attn2:0.3]")]
    assert len(changed) == 5, text[:2000]
    assert re.fullmatch(r"IN04 +(model\.)?diffusion_model\.input_blocks\.4\.1\.transformer_blocks\.0\.attn2\.to_k"
                        r"\.weight  \S+ -> 0\.3  \[line 1: IN04:attn2:0\.3\]", changed[1]), changed
    page.wait_for_timeout(500)
    screenshot(page, "change_report")
    print(f"run took {time.time() - started:.1f} s")
    assert not [e for e in page.console_errors if "elemental" in e.lower()], page.console_errors


def test_editor_reads_the_architecture_of_a_diffusion_model_loader(comfy_page, comfy_server):
    """A spec fed to a merge of `Load Diffusion Model` outputs (Flux, SD3) is checked for that file's
    architecture: the editor asks /elemental/detect with the loader's folder, not the checkpoint folder."""
    import torch
    from safetensors.torch import save_file

    from devkit.ui_workflow import api_to_ui

    folder = os.path.join(comfy_server.models_dir, "diffusion_models")
    os.makedirs(folder, exist_ok=True)
    name = "header_only_flux.safetensors"  # detection reads key names only: tiny tensors are enough
    save_file({k: torch.zeros(1) for k in ("double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight",
                                           "img_in.weight", "final_layer.linear.weight")}, os.path.join(folder, name))
    loader = {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": "default"}}
    api = {"1": loader, "2": loader,
           "3": {"class_type": "ElementalSpec", "inputs": {"spec": "D00::0.5", "architecture": "auto"}},
           "4": {"class_type": "ElementalMerge", "inputs": {
               "model_a": ["1", 0], "model_b": ["2", 0], "mode": "Weight sum", "alpha": 0.5, "beta": 0.25,
               "elemental_alpha": ["3", 0], "print_change": False}}}
    page = comfy_page
    spec_id, panel = open_editor(page, api_to_ui(api, comfy_server.object_info()), "ElementalSpec")
    status = panel.locator(".elemental-status")
    deadline = time.time() + 15
    while f"Flux from {name}" not in status.inner_text() and time.time() < deadline:
        time.sleep(0.2)
    assert f"Flux from {name}" in status.inner_text()
    set_spec(page, spec_id, "D00::0.5\nOUT05::1")  # an SD block: an error for Flux
    wait_state(page, spec_id, "error", "D00::0.5\nOUT05::1")
    screenshot(page, "spec_flux_from_unet_loader")

"""The answers of the /elemental/ routes, without a server and without ComfyUI (`merge_core/editor/route_logic.py`;
the real server tests are in tests/e2e/test_routes.py)."""
from __future__ import annotations

import os

import pytest

from merge_core import ARCHITECTURES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def rl():
    from merge_core.editor import route_logic

    return route_logic


def test_validate_auto_names_the_architecture_that_fits(rl):
    out = rl.validate({"text": ",".join(["0.25"] * 20), "kind": "block_weights"})
    assert (out["arch"], out["ok"], out["errors"], out["warnings"]) == ("sdxl", True, 0, 0)
    assert out["weights"] == {b: 0.25 for b in ARCHITECTURES["sdxl"].blocks}
    out = rl.validate({"text": "D03::1, S05::1, IN10::1"})
    assert (out["arch"], out["kind"], out["ok"], out["errors"]) == ("flux", "spec", False, 1)
    assert [(d["line"], d["column"], d["message"]) for d in out["diagnostics"]] == [(1, 17, "unknown block 'IN10'")]
    out = rl.validate({"text": "1,2,3", "kind": "block_weights", "arch": "sd1"})
    assert out["ok"] is False and out["weights"] is None and out["diagnostics"][0]["text"].startswith("line 1, column 1")


def test_preview_counts_what_each_entry_selects_and_decides(rl):
    arch = ARCHITECTURES["sd1"]
    out05 = [k for k in arch.default_keys() if arch.block_of(k) == "OUT05"]
    attn2 = [k for k in out05 if "attn2" in k]
    out = rl.preview({"spec": "OUT05:attn2:0.2\nOUT05::0.7", "arch": "sd1", "alpha": 0.5})
    assert out["ok"] and out["total_keys"] == sum(1 for k in arch.default_keys() if arch.block_of(k))
    e0, e1 = out["entries"]
    assert (e0["count"], e0["effective"], e0["blocks"]) == (len(attn2), 0, {"OUT05": len(attn2)})
    assert (e1["count"], e1["effective"], e1["line"]) == (len(out05), len(out05), 2)
    assert out["blocks"]["OUT05"] == {"keys": len(out05), "min": 0.7, "max": 0.7, "changed": len(out05)}
    assert out["blocks"]["OUT04"]["changed"] == 0 and out["blocks"]["OUT04"]["min"] == 0.5
    with_keys = rl.preview({"spec": "OUT05:attn2:0.2", "arch": "sd1", "include_keys": True, "entry": 0})
    assert with_keys["entries"][0]["keys"] == {"OUT05": [{"key": k, "ratio": 0.2} for k in attn2]}


def test_bad_requests_are_4xx_with_a_message(rl):
    with pytest.raises(rl.RequestError) as exc:
        rl.parse_body(b"[1]")
    assert (exc.value.status, exc.value.message) == (400, "request body must be a JSON object, not list")
    with pytest.raises(rl.RequestError) as exc:
        rl.preview({"spec": "OUT05::1", "arch": "sd1", "entry": 3})
    assert exc.value.message == "'entry' 3 is out of range: the spec has 1 entries"
    with pytest.raises(rl.RequestError) as exc:
        rl.validate({"text": "x", "arch": "sd9"})
    assert exc.value.status == 400 and exc.value.message.startswith("unknown architecture 'sd9'; valid: auto, sd1")

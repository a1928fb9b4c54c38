"""The /elemental/ routes on the real ComfyUI server: what the editor relies on, and that malformed or
oversized requests get a 4xx with a message (never a 500, never a dead server).

The details the routes build on (element names, the safetensors header reader) are pinned without a server
in tests/unit/test_elements.py.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from merge_core import ARCHITECTURES, get_architecture, parse_spec, resolve_ratios

IN04_ATTN2_KEYS = [
    "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_q.weight",
    "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
    "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_v.weight",
    "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_out.0.weight",
    "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_out.0.bias",
]


def post(server, path, body):
    status, raw = server.request("POST", path, body)
    return status, json.loads(raw)


def raw_request(server, method, path, data: bytes, headers=None):
    req = urllib.request.Request(server.url + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


# ---- what the editor reads ---------------------------------------------------------------------------------

def test_architectures_list_blocks_and_presets(comfy_server):
    data = comfy_server.get_json("/elemental/architectures")
    by_name = {a["name"]: a for a in data["architectures"]}
    assert list(by_name) == list(ARCHITECTURES)  # every record, in the table's order
    assert list(by_name)[:3] == ["sd1", "sd2", "sdxl"] and {"flux", "sd3", "wan", "sdxl_ext"} <= set(by_name)
    assert by_name["sd1"]["blocks"][:3] == ["BASE", "IN00", "IN01"]
    assert len(by_name["sd1"]["blocks"]) == 26 and len(by_name["sdxl"]["blocks"]) == 20
    assert len(by_name["flux"]["blocks"]) == 61 and len(by_name["sd3"]["blocks"]) == 42
    assert by_name["sd1"]["has_base"] is True and by_name["flux"]["has_base"] is False
    assert by_name["sd1"]["presets"][:2] == ["GRAD_V", "GRAD_A"]
    assert by_name["flux"]["presets"] == []
    # ComfyUI also serves every route under /api, which is what the front end's api.fetchApi calls.
    assert comfy_server.get_json("/api/elemental/architectures") == data


def test_architecture_info_has_elements_per_block_and_preset_values(comfy_server):
    info = comfy_server.get_json("/elemental/architectures/SD1")
    assert info["name"] == "sd1" and info["label"] == "SD1.x"
    assert info["elements"]["IN03"] == ["op"]
    assert info["elements"]["IN00"] == ["input_blocks", "time_embed"]
    assert info["elements"]["M00"] == [
        "attn1.to_k", "attn1.to_out", "attn1.to_q", "attn1.to_v", "attn2.to_k", "attn2.to_out", "attn2.to_q",
        "attn2.to_v", "emb_layers", "ff.net", "in_layers", "norm", "norm1", "norm2", "norm3", "out_layers",
        "proj_in", "proj_out"]
    assert "self_attn.k_proj" in info["elements"]["BASE"]
    assert info["presets"]["FLAT_25"] == [0.0] + [0.25] * 25
    assert len(info["presets"]["GRAD_V"]) == 26 and info["presets"]["GRAD_V"][:3] == [0.0, 1.0, 0.9166666667]


def test_elements_and_presets_queries(comfy_server):
    assert comfy_server.get_json("/elemental/elements?arch=sdxl&block=in03") == {
        "arch": "sdxl", "elements": {"IN03": ["op"]}, "element_names": ["op"]}
    flux = comfy_server.get_json("/elemental/elements?arch=flux&block=D00")
    assert flux["elements"]["D00"][:4] == ["img_attn.norm.key_norm", "img_attn.norm.query_norm", "img_attn.proj",
                                          "img_attn.qkv"]
    presets = comfy_server.get_json("/elemental/presets?arch=sdxl")
    assert presets["blocks"][0] == "BASE" and len(presets["presets"]["FLAT_25"]) == 20


def test_validate_marks_line_and_column(comfy_server):
    status, data = post(comfy_server, "/elemental/validate",
                        {"text": "IN04:attn2:0.3\nOUT03-OUT05::0, IN99:attn1:0.5\nM00:attn1:x", "arch": "sd1"})
    assert status == 200
    assert (data["arch"], data["ok"], data["errors"], data["warnings"]) == ("sd1", False, 2, 0)
    first, second = data["diagnostics"]
    assert (first["line"], first["column"], first["severity"], first["message"]) == (
        2, 17, "error", "unknown block 'IN99'")
    assert first["hint"] == "did you mean IN09? valid: BASE, IN00..IN11, M00, OUT00..OUT11"
    assert first["entry"] == "IN99:attn1:0.5"
    assert (second["line"], second["column"], second["message"]) == (3, 11, "ratio 'x' is not a finite number")


def test_validate_auto_picks_the_first_architecture_the_text_fits(comfy_server):
    assert post(comfy_server, "/elemental/validate", {"text": "OUT11::0"})[1]["arch"] == "sd1"
    assert post(comfy_server, "/elemental/validate", {"text": "D18:img_attn:0.2", "arch": "auto"})[1]["arch"] == "flux"


def test_validate_block_weights_gives_every_block(comfy_server):
    status, data = post(comfy_server, "/elemental/validate", {"text": "flat_25", "arch": "sdxl", "kind": "block_weights"})
    assert status == 200 and data["ok"] is True
    assert data["weights"] == {"BASE": 0.0, **{b: 0.25 for b in ARCHITECTURES["sdxl"].blocks[1:]}}
    status, data = post(comfy_server, "/elemental/validate", {"text": "0.5,0.5,abc", "arch": "sd1",
                                                              "kind": "block_weights"})
    assert status == 200 and data["ok"] is False and data["weights"] is None
    assert (data["diagnostics"][0]["line"], data["diagnostics"][0]["column"]) == (1, 9)


def test_preview_counts_keys_per_entry_with_final_ratios(comfy_server):
    spec = "IN04:attn2:0.3\nOUT03-OUT05::0, BASE:NOT:1\nIN04:attn2.to_k:0.9"
    status, data = post(comfy_server, "/elemental/preview", {"spec": spec, "arch": "sd1", "alpha": 0.4,
                                                             "include_keys": True, "entry": 0})
    assert status == 200 and data["ok"] is True and data["total_keys"] == 882
    counts = [(e["line"], e["column"], e["source"], e["count"], e["effective"], e["blocks"]) for e in data["entries"]]
    assert counts == [
        (1, 1, "IN04:attn2:0.3", 5, 4, {"IN04": 5}),
        (2, 1, "OUT03-OUT05::0", 116, 116, {"OUT03": 38, "OUT04": 38, "OUT05": 40}),
        (2, 17, "BASE:NOT:1", 196, 196, {"BASE": 196}),
        (3, 1, "IN04:attn2.to_k:0.9", 1, 1, {"IN04": 1}),
    ]
    keys = data["entries"][0]["keys"]["IN04"]
    assert [k["key"] for k in keys] == IN04_ATTN2_KEYS
    assert [k["ratio"] for k in keys] == [0.3, 0.9, 0.3, 0.3, 0.3]  # to_k: the later entry wins
    assert all("keys" not in e for e in data["entries"][1:])
    assert data["blocks"]["IN04"] == {"keys": 38, "min": 0.3, "max": 0.9, "changed": 5}
    assert data["blocks"]["IN05"] == {"keys": 36, "min": 0.4, "max": 0.4, "changed": 0}
    # The counts are merge_core's own resolution, not a second implementation.
    arch = get_architecture("sd1")
    res = resolve_ratios(arch.default_keys(), arch, 0.4, spec=parse_spec(spec, arch))
    assert sum(e["count"] for e in data["entries"]) == len(res.changes)


def test_preview_applies_block_weights_and_reports_errors_without_entries(comfy_server):
    status, data = post(comfy_server, "/elemental/preview", {"spec": "", "arch": "sd1", "block_weights": "FLAT_75"})
    assert status == 200 and data["entries"] == [] and data["block_weights"]["OUT11"] == 0.75
    assert data["blocks"]["BASE"]["min"] == 0.0 and data["blocks"]["IN05"]["max"] == 0.75
    status, data = post(comfy_server, "/elemental/preview", {"spec": "IN04:attn2", "arch": "sd1"})
    assert status == 200 and data["ok"] is False and data["entries"] == [] and data["total_keys"] == 0
    assert data["diagnostics"][0]["message"] == \
        "expected 'blocks:elements:ratio' (3 fields separated by ':'), found 2 fields"


def test_detect_reads_the_checkpoint_header(comfy_server):
    data = comfy_server.get_json("/elemental/detect?ckpt_name=test_A.safetensors")
    assert (data["ckpt_name"], data["arch"], data["label"]) == ("test_A.safetensors", "sd1", "SD1.x")


# ---- bad requests ------------------------------------------------------------------------------------------

BAD_JSON_REQUESTS = [
    # (path, body, status, exact error message)
    ("/elemental/validate", [1, 2], 400, "request body must be a JSON object, not list"),
    ("/elemental/validate", {}, 400, "missing field(s) 'text'"),
    ("/elemental/validate", {"text": 3}, 400, "'text' must be a string, not int"),
    ("/elemental/validate", {"text": "", "arch": "sd9"}, 400,
     "unknown architecture 'sd9'; valid: auto, " + ", ".join(ARCHITECTURES)),
    ("/elemental/validate", {"text": "", "arch": ["sd1"]}, 400, "'arch' must be a string, not list"),
    ("/elemental/validate", {"text": "", "kind": "lora"}, 400, "'kind' must be 'spec' or 'block_weights', not 'lora'"),
    ("/elemental/validate", {"text": "", "spec": ""}, 400,
     "unknown field(s) 'spec'; accepted: alpha, arch, kind, text"),
    ("/elemental/validate", {"text": "x" * (64 * 1024 + 1)}, 413,
     "'text' has 65537 characters, over the limit of 65536"),
    ("/elemental/validate", {"text": "\n" * 2000}, 413, "'text' has more than 2000 lines"),
    ("/elemental/preview", {"spec": "", "alpha": "0.5"}, 400, "'alpha' must be a number, not str"),
    ("/elemental/preview", {"spec": "", "alpha": True}, 400, "'alpha' must be a number, not bool"),
    ("/elemental/preview", {"spec": "", "include_keys": 1}, 400, "'include_keys' must be true or false, not int"),
    ("/elemental/preview", {"spec": "", "entry": -1}, 400, "'entry' must be a non-negative integer (0-based entry index)"),
    ("/elemental/preview", {"spec": "IN04::1", "arch": "sd1", "entry": 1}, 400,
     "'entry' 1 is out of range: the spec has 1 entries"),
    ("/elemental/preview", {"spec": "", "block_weights": 5}, 400, "'block_weights' must be a string, not int"),
]


@pytest.mark.parametrize("path,body,status,message", BAD_JSON_REQUESTS,
                         ids=[f"{p.rsplit('/', 1)[1]}-{m[:30]}" for p, _, _, m in BAD_JSON_REQUESTS])
def test_bad_json_requests_get_a_4xx_with_a_message(comfy_server, path, body, status, message):
    got_status, data = post(comfy_server, path, body)
    assert (got_status, data) == (status, {"error": message})


BAD_RAW_REQUESTS = [
    # (method, path, raw body, status, start of the error message)
    ("POST", "/elemental/preview", b"", 400, "empty request body: send a JSON object"),
    ("POST", "/elemental/preview", b"{spec: 1}", 400, "request body is not valid JSON"),
    ("POST", "/elemental/preview", b'{"spec": "\xff"}', 400, "request body is not UTF-8"),
    ("POST", "/elemental/preview", b'{"spec": "", "alpha": NaN}', 400, "'alpha' must be finite"),
    ("POST", "/elemental/preview", b"[" * 100000 + b"]" * 100000, 400, "request body is not valid JSON"),
    ("POST", "/elemental/validate", b" " * (256 * 1024 + 1), 413, "request body of 262145 bytes is over the limit"),
    ("GET", "/elemental/architectures/sd9", None, 404, "unknown architecture 'sd9'"),
    ("GET", "/elemental/elements", None, 400, "unknown architecture ''"),
    ("GET", "/elemental/elements?arch=sd1&block=IN12", None, 400, "unknown block 'IN12' for SD1.x"),
    ("GET", "/elemental/presets?arch=" + "x" * 600, None, 400, "'arch' is too long"),
    ("GET", "/elemental/detect", None, 400, "'ckpt_name' must be a checkpoint name"),
    ("GET", "/elemental/detect?ckpt_name=nope.safetensors", None, 404, "no checkpoint named 'nope.safetensors'"),
    ("GET", "/elemental/detect?ckpt_name=../../comfyui.log", None, 404, "no checkpoint named"),
]


@pytest.mark.parametrize("method,path,data,status,message", BAD_RAW_REQUESTS,
                         ids=[f"{m}-{p[10:30]}-{s}-{msg[:20]}" for m, p, _, s, msg in BAD_RAW_REQUESTS])
def test_malformed_requests_get_a_4xx_with_a_message(comfy_server, method, path, data, status, message):
    got_status, raw = raw_request(comfy_server, method, path, data)
    assert got_status == status, raw[:300]
    assert json.loads(raw)["error"].startswith(message)


def test_wrong_method_is_refused_and_the_server_survives_the_bad_requests(comfy_server):
    # A GET on a POST-only path falls through to ComfyUI's static files (404); a POST on a GET path is 405.
    assert raw_request(comfy_server, "GET", "/elemental/preview", None)[0] == 404
    assert raw_request(comfy_server, "POST", "/elemental/architectures", b"{}")[0] == 405
    assert comfy_server.get_json("/system_stats")["system"]
    log = comfy_server.log_text()
    assert "Traceback" not in "\n".join(l for l in log.splitlines()[-400:] if "elemental" in l.lower())
    crashed = [l for l in log.splitlines() if l.startswith(("[Elemental Merge] POST", "[Elemental Merge] GET"))]
    assert crashed == []  # no handler failed (each failure logs one such line with its traceback)

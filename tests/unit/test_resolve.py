"""resolve_ratios: the documented examples, block weights, both key forms, the change list and report."""
from __future__ import annotations

import time

import pytest

from merge_core import canonical_key, parse_block_weights, parse_spec, resolve_ratios
from merge_core import format_change_report

from tests.unit.conftest import REFERENCE_TSV
from tests.helpers.expected_blocks import expected_block

ALPHA = 0.3


def _expect(arch, keys, rule):
    """key -> expected ratio: rule(block, canonical name) gives the ratio or None for alpha."""
    out = {}
    for k in keys:
        b = expected_block(arch, k)
        if b is None:
            continue
        r = rule(b, k)
        out[k] = ALPHA if r is None else r
    return out


EXAMPLES = {
    "OUT03 OUT04 OUT05:attn2 attn1.to_out:0.5":
        lambda b, k: 0.5 if b in ("OUT03", "OUT04", "OUT05") and ("attn2" in k or "attn1.to_out" in k) else None,
    "OUT06:attn:0.5,OUT06:attn2.to_k:0.2":
        lambda b, k: (0.2 if "attn2.to_k" in k else 0.5 if "attn" in k else None) if b == "OUT06" else None,
    # SDXL's OUT06..OUT08 have no attention; the same pair of entries on a block that has
    "OUT02:attn:0.5,OUT02:attn2.to_k:0.2":
        lambda b, k: (0.2 if "attn2.to_k" in k else 0.5 if "attn" in k else None) if b == "OUT02" else None,
    "NOT OUT04:attn:1":
        lambda b, k: 1.0 if b != "OUT04" and "attn" in k else None,
    "OUT05:NOT attn proj:0.2":
        lambda b, k: 0.2 if b == "OUT05" and "attn" not in k and "proj" not in k else None,
}


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
@pytest.mark.parametrize("text", list(EXAMPLES))
def test_documented_examples(arch, text, keylists):
    keys = keylists[arch]
    spec = parse_spec(text, arch)
    res = resolve_ratios(keys, arch, ALPHA, spec=spec)
    expected = _expect(arch, keys, EXAMPLES[text])
    assert res.ratios == expected
    changed = [k for k, r in expected.items() if r != ALPHA]
    assert {c.key for c in res.changes} == set(changed)
    if (arch, text.split(":")[0]) in (("sdxl", "OUT06"), ("sd1", "OUT02")):  # blocks without attention
        assert changed == [] and {w.message for w in res.warnings} == {"entry selects no key"}
    else:
        assert len(changed) > 0 and res.warnings == []


def test_example_counts_sd1(keylists):
    """Concrete numbers for SD1, so a wrong predicate cannot hide."""
    keys = keylists["sd1"]
    res = resolve_ratios(keys, "sd1", ALPHA, spec=parse_spec("OUT06:attn:0.5,OUT06:attn2.to_k:0.2", "sd1"))
    by = {}
    for k, r in res.ratios.items():
        if res.blocks[k] == "OUT06":
            by.setdefault(r, []).append(k)
    assert len(by[0.2]) == 1 and by[0.2][0].endswith("output_blocks.6.1.transformer_blocks.0.attn2.to_k.weight")
    assert len(by[0.5]) == 9  # attn1 q,k,v,out.w,out.b + attn2 q,v,out.w,out.b
    assert res.ratios["model.diffusion_model.output_blocks.6.0.in_layers.2.weight"] == ALPHA
    assert len(res.changes) == 11  # 10 keys hit by the first entry + to_k again by the second
    to_k = [c for c in res.changes if c.key.endswith("6.1.transformer_blocks.0.attn2.to_k.weight")]
    assert [(c.before, c.after, c.entry.source) for c in to_k] == [
        (ALPHA, 0.5, "OUT06:attn:0.5"), (0.5, 0.2, "OUT06:attn2.to_k:0.2")]


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
@pytest.mark.parametrize("text", list(EXAMPLES))
def test_comfy_key_form_gets_same_ratios(arch, text, keylists, comfy_keylists):
    spec = parse_spec(text, arch)
    ref = resolve_ratios(keylists[arch], arch, ALPHA, spec=spec).ratios
    res = resolve_ratios(comfy_keylists[arch], arch, ALPHA, spec=spec)
    assert set(res.ratios) == set(comfy_keylists[arch])  # keys kept in the form given
    for k, r in res.ratios.items():
        canon = canonical_key(k, arch)
        if canon in ref:
            assert r == ref[canon], k
        else:
            assert k == "clip_l.transformer.text_projection.weight"
    # UNet keys, independently: the model patcher form is the checkpoint name without "model."
    rule = EXAMPLES[text]
    for k in comfy_keylists[arch]:
        if k.startswith("diffusion_model."):
            full = "model." + k
            exp = rule(expected_block(arch, full), full)
            assert res.ratios[k] == (ALPHA if exp is None else exp)


def test_elements_written_in_comfy_form_match_checkpoint_keys(keylists):
    # the canonical name is what elements match, so a name written in checkpoint form hits ComfyUI keys
    spec = parse_spec("BASE:cond_stage_model.transformer.text_model.final_layer_norm:0.9", "sd1")
    res = resolve_ratios(["clip_l.transformer.text_model.final_layer_norm.weight",
                          "clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight"], "sd1", 0.1, spec=spec)
    assert res.ratios == {"clip_l.transformer.text_model.final_layer_norm.weight": 0.9,
                          "clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight": 0.1}
    spec = parse_spec("BASE:resblocks.3.attn.in_proj:0.7", "sdxl")
    res = resolve_ratios(["clip_g.transformer.text_model.encoder.layers.3.self_attn.k_proj.weight",
                          "clip_g.transformer.text_model.encoder.layers.3.self_attn.out_proj.weight"], "sdxl", 0.1,
                         spec=spec)
    assert list(res.ratios.values()) == [0.7, 0.1]


def test_block_weights_then_spec(keylists):
    keys = keylists["sd1"]
    tsv = {}
    with open(REFERENCE_TSV) as f:
        next(f)
        for line in f:
            name, vals = line.rstrip("\n").split("\t")
            tsv[name] = [float(v) for v in vals.split(",")]
    order = ["BASE"] + ["IN%02d" % i for i in range(12)] + ["M00"] + ["OUT%02d" % i for i in range(12)]
    bw = parse_block_weights("GRAD_V", "sd1")
    spec = parse_spec("IN01-IN02:attn1:0.25", "sd1")
    res = resolve_ratios(keys, "sd1", ALPHA, block_weights=bw, spec=spec)
    for k, r in res.ratios.items():
        b = expected_block("sd1", k)
        want = tsv["GRAD_V"][order.index(b)]
        if b in ("IN01", "IN02") and "attn1" in k:
            want = 0.25
        assert r == want, k
    # without block weights every key starts at alpha; VAE keys get no ratio
    res = resolve_ratios(keys + ["first_stage_model.decoder.conv_in.weight"], "sd1", 0.7)
    assert set(res.ratios.values()) == {0.7} and "first_stage_model.decoder.conv_in.weight" not in res.ratios
    assert len(res.ratios) == len(keys) and res.changes == [] and res.warnings == []


def test_later_entries_override_and_blank_words():
    keys = ["model.diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_q.weight",
            "model.diffusion_model.middle_block.0.in_layers.0.weight"]
    spec = parse_spec("M00::0.1\n  m00 :  attn1   :0.9 ,\n", "sd1")
    res = resolve_ratios(keys, "sd1", 0.5, spec=spec)
    assert res.ratios == {keys[0]: 0.9, keys[1]: 0.1}
    spec = parse_spec("M00:NOT:0.4, :NOT attn1:0.6", "sd1")
    assert resolve_ratios(keys, "sd1", 0.5, spec=spec).ratios == {keys[0]: 0.4, keys[1]: 0.6}
    spec = parse_spec("NOT:attn1:0.8", "sd1")  # NOT alone in blocks: every block
    assert resolve_ratios(keys, "sd1", 0.5, spec=spec).ratios == {keys[0]: 0.8, keys[1]: 0.5}


def test_warnings_for_entries_selecting_nothing(keylists):
    spec = parse_spec("IN00:attn:0.5", "sd1")  # IN00 (conv_in, time_embed) has no attention
    assert [d.message for d in spec.diagnostics] == ["entry selects no key"]
    res = resolve_ratios(keylists["sd1"], "sd1", 0.5, spec=spec)
    assert [(w.line, w.column, w.severity) for w in res.warnings] == [(1, 1, "warning")]
    # an entry that selects keys of the built-in list but none of the given ones
    spec = parse_spec("OUT11::0.5", "sd1")
    res = resolve_ratios(["model.diffusion_model.input_blocks.1.0.emb_layers.1.weight"], "sd1", 0.5, spec=spec)
    assert [w.message for w in res.warnings] == ["entry selects no key"]


def test_change_report(keylists):
    spec = parse_spec("OUT06:attn:0.5\nOUT06:attn2.to_k:0.2", "sd1")
    res = resolve_ratios(keylists["sd1"], "sd1", ALPHA, spec=spec)
    report = format_change_report(res, title="print change")
    lines = report.splitlines()
    assert lines[0] == "print change"
    assert any("OUT06" in l and "attn2.to_k.weight" in l and "0.5 -> 0.2" in l and "line 2: OUT06:attn2.to_k:0.2" in l
               for l in lines)
    assert lines[-1].split() == ["OUT06", "10", "0.2..0.5"]
    empty = format_change_report(resolve_ratios(keylists["sd1"], "sd1", ALPHA))
    assert "no key changed" in empty


def test_spec_for_other_arch_rejected(keylists):
    spec = parse_spec("IN10::0.5", "sd1")
    with pytest.raises(ValueError):
        resolve_ratios(keylists["sdxl"], "sdxl", 0.5, spec=spec)
    # SD2 shares SD1's block names
    assert resolve_ratios(keylists["sd2"], "sd2", 0.5, spec=spec).changes


def test_resolution_is_fast_when_cached(keylists):
    keys = keylists["sdxl"]
    text = "OUT03 OUT04 OUT05:attn2 attn1.to_out:0.5\nNOT OUT04:attn:1\nOUT05:NOT attn proj:0.2"
    bw = parse_block_weights("GRAD_V", "sdxl")
    resolve_ratios(keys, "sdxl", 0.5, bw, parse_spec(text, "sdxl"))
    t = time.perf_counter()
    for _ in range(10):
        resolve_ratios(keys, "sdxl", 0.5, bw, parse_spec(text, "sdxl"))
    per_call = (time.perf_counter() - t) / 10
    assert per_call < 0.05  # a few ms normally; generous for a loaded CI machine

"""The spec language: entries, NOT, ranges, comments, diagnostics with positions; fuzzing."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from merge_core import Diagnostic, MergeSpecError, parse_spec, validate_spec

SD1 = ["BASE"] + ["IN%02d" % i for i in range(12)] + ["M00"] + ["OUT%02d" % i for i in range(12)]


def only(text, arch="sd1"):
    spec = parse_spec(text, arch)
    assert len(spec.entries) == 1
    return spec.entries[0]


def test_empty_specs():
    for text in ("", "   ", "\n\n", "# just a comment\n  # another", ",,, ,\n,"):
        spec = parse_spec(text, "sd1")
        assert spec.entries == () and spec.diagnostics == ()
        assert validate_spec(text, "sd1") == []


def test_entry_fields():
    e = only("OUT03 OUT04 OUT05:attn2 attn1.to_out:0.5")
    assert e.blocks == frozenset({"OUT03", "OUT04", "OUT05"}) and not e.invert_blocks
    assert e.elements == ("attn2", "attn1.to_out") and not e.invert_elements
    assert (e.ratio, e.line, e.column, e.source) == (0.5, 1, 1, "OUT03 OUT04 OUT05:attn2 attn1.to_out:0.5")
    e = only("::1")
    assert e.blocks == frozenset(SD1) and e.elements == () and e.ratio == 1.0
    assert e.selects("BASE", "cond_stage_model.x") and e.selects("OUT11", "anything")


def test_not_and_ranges_and_case():
    e = only("NOT OUT04:attn:1")
    assert e.invert_blocks and e.blocks == frozenset({"OUT04"})
    assert e.selects("OUT03", "x.attn1") and not e.selects("OUT04", "x.attn1") and not e.selects("OUT03", "x.ff")
    e = only("in05-In02 out11:NOT attn proj:0.2")
    assert e.blocks == frozenset({"IN02", "IN03", "IN04", "IN05", "OUT11"})
    assert e.invert_elements and e.elements == ("attn", "proj")
    assert e.selects("IN03", "op.weight") and not e.selects("IN03", "proj_in.weight")
    e = only("NOT::0.3")  # NOT alone: every block
    assert all(e.selects(b, "k") for b in SD1)
    e = only("M00:NOT:0.3")  # NOT alone in elements: every key
    assert e.selects("M00", "anything") and not e.selects("IN01", "anything")
    assert only("OUT05:  attn2   :0.5").elements == ("attn2",)  # stray spaces make no empty word
    assert only("IN00-IN00::1").blocks == frozenset({"IN00"})
    assert only("D00-D03 S37::1", "flux").blocks == frozenset({"D00", "D01", "D02", "D03", "S37"})


def test_separators_comments_order():
    spec = parse_spec("IN01::0.1, IN02::0.2\n# comment: with colons, and commas\nIN03::0.3 # trailing\r\nIN04::0.4,",
                      "sd1")
    assert [(e.source, e.line, e.column, e.ratio) for e in spec.entries] == [
        ("IN01::0.1", 1, 1, 0.1), ("IN02::0.2", 1, 12, 0.2), ("IN03::0.3", 3, 1, 0.3), ("IN04::0.4", 4, 1, 0.4)]
    assert parse_spec("IN01::1e-1", "sd1").entries[0].ratio == 0.1
    assert parse_spec("IN01::-2", "sd1").entries[0].ratio == -2.0


def _errors(text, arch="sd1"):
    return [d for d in validate_spec(text, arch) if d.severity == "error"]


def test_unknown_block_diagnostic():
    text = "IN01::0.1\n    OUT4:attn:0.5"
    [d] = _errors(text)
    assert (d.line, d.column, d.severity, d.entry) == (2, 5, "error", "OUT4:attn:0.5")
    assert d.format() == ("line 2, column 5: unknown block 'OUT4' in entry 'OUT4:attn:0.5' "
                          "(did you mean OUT04? valid: BASE, IN00..IN11, M00, OUT00..OUT11)")
    with pytest.raises(MergeSpecError) as e:
        parse_spec(text, "sd1")
    assert str(e.value) == d.format()
    assert e.value.diagnostics == [d]
    [d] = _errors("OUT10:attn:0.5", "sdxl")
    assert "valid: BASE, IN00..IN08, M00, OUT00..OUT08" in d.format() and "did you mean OUT0" in d.format()
    [d] = _errors("IN01 mid:x:1")
    assert d.column == 6 and "did you mean M00?" in d.format()
    [d] = _errors("D5::1", "flux")
    assert "did you mean D05?" in d.format() and "CLIP, T5, IN, D00..D18, S00..S37, OUT" in d.format()
    [d] = _errors("IN0::1")  # no substring matching of names
    assert d.message == "unknown block 'IN0'"


def test_field_count_ratio_and_range_errors():
    [d] = _errors("IN01:attn")
    assert (d.line, d.column) == (1, 1) and "3 fields" in d.message and "found 2" in d.message
    ds = _errors("IN01:a:b:0.5, OUT01::0.1")
    assert [(x.column, x.entry) for x in ds] == [(1, "IN01:a:b:0.5")]
    [d] = _errors("IN01:attn: 0.5x")
    assert (d.column, d.message) == (12, "ratio '0.5x' is not a finite number")
    for bad in ("nan", "inf", "-inf", "1e999"):
        [d] = _errors(f"IN01::{bad}")
        assert "not a finite number" in d.message and d.column == 7
    [d] = _errors("IN01:attn:")
    assert d.message == "missing ratio" and d.column == 11
    [d] = _errors("  IN11-OUT02:x:1")
    assert d.column == 3 and "crosses block families" in d.message
    [d] = _errors("IN02-M00::1")
    assert "crosses" in d.message
    [d] = _errors("IN02-IN55::1")
    assert d.column == 6 and d.message == "unknown block 'IN55'"
    [d] = _errors("OUT01 NOT::1")
    assert d.column == 7 and "first word" in d.message


def test_several_errors_all_reported_in_order():
    text = "OUT4::1\nIN01:x\nM00::abc"
    ds = _errors(text)
    assert [(d.line, d.column) for d in ds] == [(1, 1), (2, 1), (3, 6)]
    with pytest.raises(MergeSpecError) as e:
        parse_spec(text, "sd1")
    assert str(e.value).splitlines() == [d.format() for d in ds]


def test_element_warnings():
    spec = parse_spec("OUT05:attn2 nosuchthing:0.5", "sd1")
    [w] = spec.diagnostics
    assert (w.line, w.column, w.severity) == (1, 13, "warning")
    assert w.format() == ("line 1, column 13: warning: element 'nosuchthing' matches no key of SD1.x "
                          "in entry 'OUT05:attn2 nosuchthing:0.5'")
    # against a given key set instead of the built-in list
    keys = ["model.diffusion_model.output_blocks.5.1.proj_in.weight"]
    spec = parse_spec("OUT05:proj_in attn2:0.5", "sd1", keys)
    assert [d.message for d in spec.diagnostics] == ["element 'attn2' matches no key of SD1.x"]
    assert validate_spec("OUT05:proj_in attn2:0.5", "sd1", keys)[0].severity == "warning"


def test_validate_never_raises_and_bad_arch():
    [d] = validate_spec("IN01::1", "sd9")
    assert d.severity == "error" and "sd9" in d.message
    with pytest.raises(MergeSpecError):
        parse_spec("IN01::1", "sd9")
    assert validate_spec(None, "sd1") == []


def test_diagnostic_type():
    d = Diagnostic(3, 4, "boom", "error")
    assert d.entry == "" and d.format() == "line 3, column 4: boom"
    assert isinstance(MergeSpecError([d]), ValueError)


SPEC_ALPHABET = st.sampled_from(list(" ,:\n\r\t#-.0123456789eE+") + ["IN", "OUT", "M00", "BASE", "NOT", "attn",
                                                                    "nan", "in", "D", "S", "J", "T5", "CLIP", "ü"])


@settings(max_examples=150, deadline=None)
@given(st.lists(SPEC_ALPHABET, max_size=30).map("".join), st.sampled_from(["sd1", "sdxl", "flux", "sd3"]))
def test_fuzz_spec_like_text(text, arch):
    diags = validate_spec(text, arch)
    assert all(isinstance(d, Diagnostic) and d.line >= 1 and d.column >= 1 for d in diags)
    try:
        spec = parse_spec(text, arch)
    except MergeSpecError as e:
        assert any(d.severity == "error" for d in e.diagnostics)
        assert [d for d in e.diagnostics] == diags
    else:
        assert list(spec.diagnostics) == diags
        assert all(d.severity == "warning" for d in diags)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_fuzz_any_text(text):
    validate_spec(text, "sd1")
    try:
        parse_spec(text, "sd1")
    except MergeSpecError:
        pass

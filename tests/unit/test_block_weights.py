"""Block-weight strings and presets against SuperMerger's tsv."""
from __future__ import annotations

import pytest

from merge_core import MergeSpecError, list_presets, load_user_presets, parse_block_weights

from tests.unit.conftest import REFERENCE_TSV

SD1 = ["BASE"] + ["IN%02d" % i for i in range(12)] + ["M00"] + ["OUT%02d" % i for i in range(12)]
SDXL = ["BASE"] + ["IN%02d" % i for i in range(9)] + ["M00"] + ["OUT%02d" % i for i in range(9)]


def reference():
    out = {}
    with open(REFERENCE_TSV) as f:
        assert next(f).startswith("preset_name")
        for line in f:
            name, vals = line.rstrip("\n").split("\t")
            out[name] = tuple(float(v) for v in vals.split(","))
    return out


def to_sdxl(v):
    """SuperMerger's SD1 -> SDXL conversion, written out by block name."""
    named = dict(zip(SD1, v))
    return tuple(named[b] for b in SDXL)


def test_sd1_presets_match_tsv():
    ref = reference()
    assert len(ref) == 38
    assert list_presets("sd1") == ref == list_presets("sd2")
    for name, values in ref.items():
        assert parse_block_weights(name, "sd1") == dict(zip(SD1, values))
        assert parse_block_weights(name.lower(), "sd1") == dict(zip(SD1, values))


def test_preset_spot_values():
    """Typed in from SuperMerger's list, independent of any file."""
    assert parse_block_weights("MID12_50", "sd1") == dict(zip(SD1, [0.0] * 6 + [0.5] * 14 + [0.0] * 6))
    assert parse_block_weights("ALL_B", "sd1") == {b: 1.0 for b in SD1}
    assert parse_block_weights("WRAP08", "sdxl") == dict(zip(SDXL, [0, 1, 1, 1, 1] + [0] * 14 + [1]))  # OUT09..11 fall away
    g = parse_block_weights("GRAD_V", "sd1")
    assert (g["BASE"], g["IN00"], g["IN06"], g["M00"], g["OUT11"]) == (0.0, 1.0, 0.5, 0.0, 1.0)


def test_sdxl_presets_derived():
    ref = reference()
    assert list_presets("sdxl") == {k: to_sdxl(v) for k, v in ref.items()}
    assert parse_block_weights("grad_v", "sdxl") == dict(zip(SDXL, to_sdxl(ref["GRAD_V"])))
    assert parse_block_weights("GRAD_V", "sdxl")["M00"] == 0.0 and parse_block_weights("GRAD_V", "sdxl")["OUT08"] == 0.75
    assert list_presets("flux") == {} and list_presets("sd3") == {}


def test_number_lists():
    v26 = [round(i / 25, 4) for i in range(26)]
    text = ",".join(str(x) for x in v26)
    assert parse_block_weights(text, "sd1") == dict(zip(SD1, v26))
    assert parse_block_weights(" , ".join(str(x) for x in v26[1:]), "sd1", alpha=0.9) == dict(zip(SD1, [0.9] + v26[1:]))
    assert parse_block_weights(text, "sdxl") == dict(zip(SDXL, to_sdxl(v26)))  # SD1 string given for SDXL
    assert parse_block_weights(",".join(str(x) for x in v26[1:]), "sdxl", alpha=0.4) == dict(
        zip(SDXL, (0.4,) + to_sdxl(v26)[1:]))
    v20 = [i / 20 for i in range(20)]
    assert parse_block_weights(",".join(map(str, v20)), "sdxl") == dict(zip(SDXL, v20))
    assert parse_block_weights(",".join(map(str, v20[1:])), "sdxl", alpha=0.5) == dict(zip(SDXL, [0.5] + v20[1:]))
    assert parse_block_weights("", "sd1", alpha=0.25) == {b: 0.25 for b in SD1}


def test_wrong_counts_state_expected():
    with pytest.raises(MergeSpecError) as e:
        parse_block_weights(",".join(["0.5"] * 24), "sd1")
    msg = str(e.value)
    assert "26 values" in msg and "25 without BASE" in msg and "got 24" in msg and "SD1.x" in msg
    with pytest.raises(MergeSpecError) as e:
        parse_block_weights(",".join(["0.5"] * 21), "sdxl")
    assert "20 values" in str(e.value) and "19 without BASE" in str(e.value) and "got 21" in str(e.value)
    with pytest.raises(MergeSpecError, match="BASE"):
        parse_block_weights(",".join(["0.5"] * 25), "sd1")  # no BASE and no alpha
    flux_n = 61
    assert len(parse_block_weights(",".join(["0.5"] * flux_n), "flux")) == flux_n
    with pytest.raises(MergeSpecError, match="61 values"):
        parse_block_weights(",".join(["0.5"] * 60), "flux")


def test_bad_values_and_unknown_preset():
    with pytest.raises(MergeSpecError) as e:
        parse_block_weights("0.1,0.2,abc," + ",".join(["1"] * 23), "sd1")
    [d] = e.value.diagnostics
    assert (d.line, d.column) == (1, 9) and "'abc'" in d.message
    with pytest.raises(MergeSpecError) as e:
        parse_block_weights("NO_SUCH_PRESET", "sd1")
    assert "GRAD_V" in str(e.value)
    with pytest.raises(MergeSpecError):
        parse_block_weights("nan," + ",".join(["1"] * 25), "sd1")


def test_user_presets(tmp_path):
    p = tmp_path / "mine.tsv"
    p.write_text("preset_name\tpreset_weights\n# mine\nHALF\t" + ",".join(["0.5"] * 26) + "\n"
                 "GRAD_V\t" + ",".join(["1"] * 26) + "\n\nXL\t" + ",".join(["0.2"] * 20) + "\n")
    user = load_user_presets(p)
    assert user == {"HALF": (0.5,) * 26, "GRAD_V": (1.0,) * 26, "XL": (0.2,) * 20}
    assert parse_block_weights("half", "sd1", user_presets=user) == {b: 0.5 for b in SD1}
    assert parse_block_weights("GRAD_V", "sd1", user_presets=user) == {b: 1.0 for b in SD1}  # user wins
    assert parse_block_weights("HALF", "sdxl", user_presets=user) == {b: 0.5 for b in SDXL}  # SD1 list converted
    assert parse_block_weights("XL", "sdxl", user_presets=user) == {b: 0.2 for b in SDXL}
    bad = tmp_path / "bad.tsv"
    bad.write_text("A\t0.1,x\n")
    with pytest.raises(MergeSpecError):
        load_user_presets(bad)

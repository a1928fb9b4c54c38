"""merge_core.merge.adjust against the formulas written out here by hand (not read from the module's tables)."""
from __future__ import annotations

import pytest
import torch

from merge_core.merge.adjust import (AdjustError, AdjustValues, adjust_state_dict, check_keys, colour_shift,
                               key_changes, parse_adjust)

U = "model.diffusion_model."
IN_W, IN_B = U + "input_blocks.0.0.weight", U + "input_blocks.0.0.bias"
OUT0_W, OUT0_B = U + "out.0.weight", U + "out.0.bias"
OUT2_W, OUT2_B = U + "out.2.weight", U + "out.2.bias"


def _state(prefix=U, dtype=torch.float32, in_ch=4):
    g = torch.Generator().manual_seed(7)
    shapes = {"input_blocks.0.0.weight": (320, in_ch, 3, 3), "input_blocks.0.0.bias": (320,),
              "out.0.weight": (320,), "out.0.bias": (320,), "out.2.weight": (4, 320, 3, 3), "out.2.bias": (4,),
              "middle_block.0.in_layers.0.weight": (1280,)}
    return {prefix + k: torch.randn(s, generator=g).to(dtype) for k, s in shapes.items()}


def test_parse_plain_named_and_round_trip():
    v = parse_adjust("2, 0, 1,0.5 1 0 -1 0.25")
    assert v.values == (2.0, 0.0, 1.0, 0.5, 1.0, 0.0, -1.0, 0.25)
    assert parse_adjust(v.text()) == v
    assert v.text() == "2,0,1,0.5,1,0,-1,0.25"
    named = parse_adjust("IN=2 col1=-1.5, OUT2=0.1")
    assert named.values == (2.0, 0.0, 0.1, 0.0, 0.0, -1.5, 0.0, 0.0)
    assert named.label() == "IN=2 OUT2=0.1 COL1=-1.5"
    assert parse_adjust("").is_zero and parse_adjust("").label() == "none"
    assert AdjustValues().with_value("cont", 3).values == (0, 0, 0, 3.0, 0, 0, 0, 0)


@pytest.mark.parametrize("text, message", [
    ("1,2,3", "expected 8 numbers"),
    ("IN=2 3", "mix of plain numbers"),
    ("FOO=1", "unknown name 'FOO' at column 1 (valid: IN, OUT, OUT2, CONT, BRI, COL1, COL2, COL3)"),
    ("1,2,3,4,5,6,7,x", "value 8 (COL3) at column 15: 'x' is not a finite number"),
    ("IN=1 in=2", "IN given twice"),
    ("1,2,3,4,5,6,7,inf", "not a finite number"),
])
def test_parse_errors_are_specific(text, message):
    with pytest.raises(AdjustError, match=None) as info:
        parse_adjust(text)
    assert message in str(info.value)


def test_scales_follow_the_formulas():
    v = parse_adjust("IN=3 OUT=-2 OUT2=5")
    changes = {c.key: c for c in key_changes(v, "sd1")}
    assert changes[IN_W].amount == 1 - 3 * 0.01
    assert changes[IN_B].amount == 1 + 3 * 0.02
    assert changes[OUT0_W].amount == 1 - (-2) * 0.01
    assert changes[OUT0_B].amount == 1 + (-2) * 0.02
    assert changes[OUT2_W].amount == 1 - 5 * 0.01
    assert OUT2_B not in changes  # CONT and colours are 0: the bias stays exactly as it is


def test_colour_vector_sd1_and_sdxl_by_hand():
    # BRI=1, COL1=2, COL2=-1, COL3=0.5, CONT=4; rows of M times 0.02, summed by hand:
    # SD1: BRI*[-1,1/3,2/3] + COL1*[1,1,0] + COL2*[0,-1,-1] + COL3*[1,0,1]
    v = parse_adjust("CONT=4 BRI=1 COL1=2 COL2=-1 COL3=0.5")
    sd1 = colour_shift(v, "sd1")
    expect1 = (4 * 0.02, 0.02 * (-1 + 2 + 0 + 0.5), 0.02 * (1 / 3 + 2 + 1 + 0), 0.02 * (2 / 3 + 0 + 1 + 0.5))
    assert sd1 == pytest.approx(expect1, abs=1e-15)
    assert colour_shift(v, "sd2") == sd1
    # SDXL: BRI*[0,0,1] + COL1*[1,0,0] + COL2*[-1,-1,0] + COL3*[-1,1,0]
    xl = colour_shift(v, "sdxl")
    expect_xl = (4 * 0.02, 0.02 * (0 + 2 + 1 - 0.5), 0.02 * (0 + 0 + 1 + 0.5), 0.02 * (1 + 0 + 0 + 0))
    assert xl == pytest.approx(expect_xl, abs=1e-15)


@pytest.mark.parametrize("prefix", [U, "diffusion_model."])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_changed_tensors_equal_the_formulas(prefix, dtype):
    state = _state(prefix, dtype)
    v = parse_adjust("1.5,-2,3,2,1,-1,0.5,2")
    out = adjust_state_dict(state, v, "sd1", prefix)
    p = lambda k: prefix + k[len(U):]  # noqa: E731
    assert set(out) == {p(k) for k in (IN_W, IN_B, OUT0_W, OUT0_B, OUT2_W, OUT2_B)}
    f32 = lambda k: state[p(k)].to(torch.float32)  # noqa: E731
    expect = {
        IN_W: f32(IN_W) * (1 - 1.5 * 0.01), IN_B: f32(IN_B) * (1 + 1.5 * 0.02),
        OUT0_W: f32(OUT0_W) * (1 + 2 * 0.01), OUT0_B: f32(OUT0_B) * (1 - 2 * 0.02),
        OUT2_W: f32(OUT2_W) * (1 - 3 * 0.01),
    }
    c1 = 0.02 * (-1 * 1 + 1 * -1 + 0 * 0.5 + 1 * 2)
    c2 = 0.02 * (1 / 3 * 1 + 1 * -1 + -1 * 0.5 + 0 * 2)
    c3 = 0.02 * (2 / 3 * 1 + 0 * -1 + -1 * 0.5 + 1 * 2)
    expect[OUT2_B] = f32(OUT2_B) + torch.tensor([2 * 0.02, c1, c2, c3], dtype=torch.float32)
    for k, t in expect.items():
        assert out[p(k)].dtype == dtype
        assert torch.equal(out[p(k)], t.to(dtype)), k
    # nothing else is touched
    assert p(U + "middle_block.0.in_layers.0.weight") not in out


def test_zero_values_change_nothing():
    assert key_changes(AdjustValues(), "sdxl") == []
    assert adjust_state_dict(_state(), AdjustValues(), "sd1") == {}


def test_flux_sd3_and_missing_keys_get_a_clear_error():
    for arch in ("flux", "sd3"):
        with pytest.raises(AdjustError, match="Adjust works on SD1, SD2 and SDXL"):
            key_changes(parse_adjust("IN=1"), arch)
    state = _state()
    del state[OUT2_B]
    with pytest.raises(AdjustError, match="lacks model.diffusion_model.out.2.bias"):
        adjust_state_dict(state, parse_adjust("IN=1"), "sd1")
    bad = _state()
    bad[OUT2_B] = torch.zeros(8)
    with pytest.raises(AdjustError, match=r"shape \(8,\), expected \(4,\)"):
        check_keys({k: tuple(t.shape) for k, t in bad.items()}, "sd1")


def test_inpainting_first_conv_is_scaled_whole():
    state = _state(in_ch=9)
    out = adjust_state_dict(state, parse_adjust("IN=4"), "sd1")
    assert torch.equal(out[IN_W], state[IN_W] * (1 - 4 * 0.01))

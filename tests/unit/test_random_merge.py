"""merge_core.plot.random_merge: draws re-derived here from random.Random(seed) and the README's ranges, and the
reported text read back through the ordinary parsers to exactly the drawn ratios."""
from __future__ import annotations

import random

import pytest

from merge_core import get_architecture, parse_block_weights, parse_spec, resolve_ratios
from merge_core.plot.random_merge import RandomSettingsError, check_random_settings, draw, parse_random_settings

SD1 = get_architecture("sd1")


def _expected_blocks(seed, n, fn):
    rng = random.Random(seed)
    return [round(fn(rng.random()), 3) + 0.0 for _ in range(n)]


@pytest.mark.parametrize("mode, fn, lo, hi", [
    ("R", lambda r: r, 0.0, 1.0),
    ("U", lambda r: -0.5 + 2 * r, -0.5, 1.5),
    ("X lower=0.2 upper=0.7", lambda r: 0.2 + 0.5 * r, 0.2, 0.7),
])
@pytest.mark.parametrize("arch, n", [("sd1", 26), ("sdxl", 20)])
def test_block_modes_draw_the_documented_ranges(mode, fn, lo, hi, arch, n):
    s = parse_random_settings(mode, arch)
    for seed in (0, 1, 12345):
        d = draw(s, seed)
        a = get_architecture(arch)
        values = [d.blocks[b] for b in a.blocks]
        assert values == _expected_blocks(seed, n, fn)
        assert all(lo <= v <= hi for v in values)
        assert all(v == round(v, 3) for v in values)
        # the reported weight string is a valid block-weight string giving exactly these values
        assert parse_block_weights(d.block_weights, arch) == dict(zip(a.blocks, values))
        assert d.spec == "" and d.elements == {}


def test_same_seed_same_draw_other_seed_other_draw():
    s = parse_random_settings("U", "sd1")
    assert draw(s, 5) == draw(s, 5)
    assert draw(s, 5).blocks != draw(s, 6).blocks


def test_x_bounds_per_block_and_limits():
    lower = ",".join(str(i / 100) for i in range(26))
    upper = ",".join(str(0.5 + i / 100) for i in range(26))
    s = parse_random_settings(f"X lower={lower} upper={upper} limit_upper=0.6", "sd1")
    d = draw(s, 3)
    rng = random.Random(3)
    for i, b in enumerate(SD1.blocks):
        raw = i / 100 + (0.5 + i / 100 - i / 100) * rng.random()
        assert d.blocks[b] == round(min(raw, 0.6), 3) + 0.0
    assert max(d.blocks.values()) <= 0.6


def test_element_mode_one_ratio_per_key_and_spec_reproduces(sd1_keys):
    s = parse_random_settings("ER blocks=OUT11,IN00", "sd1")
    d = draw(s, 9, sd1_keys)
    chosen = sorted(k for k in sd1_keys if k.startswith("model.diffusion_model.out.")
                    or k.startswith("model.diffusion_model.output_blocks.11.")
                    or k.startswith("model.diffusion_model.input_blocks.0.")
                    or k.startswith("model.diffusion_model.time_embed."))
    rng = random.Random(9)
    assert d.elements == {k: round(rng.random(), 3) + 0.0 for k in chosen}
    # the spec, appended to nothing, gives every drawn key its ratio and leaves the rest at alpha
    res = resolve_ratios(sd1_keys, SD1, 0.25, spec=parse_spec(d.spec, SD1, keys=sd1_keys))
    for k in sd1_keys:
        if SD1.block_of(k) is None:
            continue
        assert res.ratios[k] == d.elements.get(k, 0.25), k


def test_eu_range_and_ex_bounds(sd1_keys):
    eu = draw(parse_random_settings("EU blocks=M00", "sd1"), 2, sd1_keys)
    rng = random.Random(2)
    assert list(eu.elements.values()) == [round(1 - 2 * rng.random(), 3) + 0.0 for _ in eu.elements]
    assert all(-1 < v <= 1 for v in eu.elements.values())
    ex = draw(parse_random_settings("EX lower=0.3 upper=0.4 blocks=M00", "sd1"), 2, sd1_keys)
    assert all(0.3 <= v <= 0.4 for v in ex.elements.values())


def test_custom_pattern(sd1_keys):
    pattern = "U, 0.25, " + ", ".join(["0"] * 11) + ", R, " + ", ".join(["R"] * 11) + ", ER"
    s = parse_random_settings(pattern, "sd1")
    d = draw(s, 4, sd1_keys, fill=0.5)
    rng = random.Random(4)
    assert d.blocks["BASE"] == round(-0.5 + 2 * rng.random(), 3) + 0.0
    assert d.blocks["IN00"] == 0.25 and d.blocks["IN11"] == 0.0
    for b in ("M00",) + tuple(f"OUT{i:02d}" for i in range(11)):
        assert d.blocks[b] == round(rng.random(), 3) + 0.0
    assert d.blocks["OUT11"] == 0.5  # element block: the fill value, overridden key by key by the spec
    out11 = sorted(k for k in sd1_keys if SD1.block_of(k) == "OUT11")
    assert d.elements == {k: round(rng.random(), 3) + 0.0 for k in out11}
    bw = parse_block_weights(d.block_weights, SD1)
    res = resolve_ratios(sd1_keys, SD1, 0.5, block_weights=bw, spec=parse_spec(d.spec, SD1, keys=sd1_keys))
    for k in sd1_keys:
        b = SD1.block_of(k)
        if b is not None:
            assert res.ratios[k] == (d.elements[k] if b == "OUT11" else d.blocks[b])


def test_shorter_key_names_come_first_in_the_spec():
    # 'out.0.weight' is a substring of '...to_out.0.weight': the longer name must come later to win
    keys = ["model.diffusion_model.out.0.weight",
            "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.attn1.to_out.0.weight"]
    d = draw(parse_random_settings("ER blocks=OUT11", "sd1"), 1, keys)
    lines = d.spec.split("\n")
    assert lines[0].startswith("OUT11:model.diffusion_model.out.0.weight:")
    res = resolve_ratios(keys, SD1, 0.0, spec=parse_spec(d.spec, SD1, keys=keys))
    assert res.ratios == d.elements


@pytest.mark.parametrize("text, message", [
    ("", "no mode given"),
    ("Q", "unknown mode 'Q' (valid: R, U, X, ER, EU, EX"),
    ("X lower=0.8 upper=0.2", "lower 0.8 > upper 0.2 for block BASE"),
    ("X lower=1,2", "lower= needs one number or 26 for SD1.x"),
    ("R depth=2", "unknown option 'depth='"),
    ("R U", "'U' after the mode 'R'"),
    ("R blocks=IN04", "blocks= is for the element modes"),
    ("ER blocks=IN99", "unknown block 'IN99' (did you mean IN09?"),
    ("1,2,3", "needs one token per SD1.x block (26"),
    ("R ratio=gamma", "ratio=gamma (valid: alpha, beta)"),
    ("U," + ",".join(["0"] * 24) + ",Z", "pattern token 26 (OUT11) 'Z' is not a number or a mode"),
])
def test_errors_are_specific(text, message):
    with pytest.raises(RandomSettingsError) as info:
        parse_random_settings(text, "sd1")
    assert message in str(info.value)


def test_check_without_architecture_accepts_any_valid_one():
    check_random_settings("U," + ",".join(["0"] * 19))  # 20 tokens: valid for SDXL only
    with pytest.raises(RandomSettingsError):
        check_random_settings("U,0,0")


def test_element_mode_reaching_no_key_is_an_error():
    with pytest.raises(RandomSettingsError, match="reaches no key"):
        draw(parse_random_settings("ER blocks=OUT11", "sd1"), 1, ["model.diffusion_model.input_blocks.1.0.x"])

"""The extended SDXL block table (SuperMerger's 110-entry "extended XL" list): its blocks, which SDXL key goes
to which, and how a spec or weight string picks it over the standard 20-block table (no ComfyUI)."""
from __future__ import annotations

import collections
import re

import pytest

from merge_core import get_architecture
from merge_core.arch.architectures import detect_architecture
from merge_core.merge.merge_ratios import block_table, resolve
from merge_core.text.block_weights import parse_block_weights
from merge_core.text.spec import parse_spec
from merge_core.text.validation import closest_architecture, validate_block_weights
from merge_core.text.written import TextInput

from .conftest import read_keylist

SDXL = get_architecture("sdxl")
EXT = get_architecture("sdxl_ext")

# SuperMerger's BLOCKIDXLLL (scripts/mergers/mergers.py, also scripts/supermerger.py), typed out by hand.
SUPERMERGER_ORDER = (
    "CLIPL CLIPG IN0 IN00 IN10 IN20 IN30 IN40 IN41 IN410 IN411 IN50 IN51 IN510 IN511 IN60 IN70 IN71 "
    + " ".join(f"IN71{t}" for t in range(10)) + " IN80 IN81 " + " ".join(f"IN81{t}" for t in range(10))
    + " MID00 MID10 " + " ".join(f"MID10{t}" for t in range(10)) + " MID20 OUT00 OUT01 "
    + " ".join(f"OUT01{t}" for t in range(10)) + " OUT10 OUT11 " + " ".join(f"OUT11{t}" for t in range(10))
    + " OUT20 OUT21 " + " ".join(f"OUT21{t}" for t in range(10))
    + " OUT22 OUT30 OUT31 OUT310 OUT311 OUT40 OUT41 OUT410 OUT411 OUT50 OUT51 OUT510 OUT511 OUT52 OUT60 OUT70"
    " OUT80 OUT9 TIME LABEL VAE").split()

U = "model.diffusion_model."
CHOSEN = {  # checkpoint key -> its block, read off SuperMerger's blockfromkey (scripts/mergers/mergers.py)
    "conditioner.embedders.0.transformer.text_model.encoder.layers.3.mlp.fc1.weight": "CLIPL",
    "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.weight": "CLIPG",
    U + "time_embed.0.weight": "TIME",
    U + "label_emb.0.0.weight": "LABEL",
    U + "input_blocks.0.0.weight": "IN00",
    U + "input_blocks.3.0.op.weight": "IN30",
    U + "input_blocks.4.1.proj_in.weight": "IN41",
    U + "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight": "IN411",
    U + "input_blocks.8.1.transformer_blocks.9.ff.net.2.bias": "IN819",
    U + "middle_block.0.in_layers.2.weight": "MID00",
    U + "middle_block.1.transformer_blocks.7.norm1.weight": "MID107",
    U + "middle_block.2.out_layers.3.bias": "MID20",
    U + "output_blocks.2.2.conv.weight": "OUT22",
    U + "output_blocks.5.1.transformer_blocks.0.attn1.to_q.weight": "OUT510",
    U + "output_blocks.8.0.skip_connection.weight": "OUT80",
    U + "out.2.weight": "OUT9",
}


def test_110_blocks_in_supermerger_order_and_not_detected():
    assert len(EXT.blocks) == 110 and list(EXT.blocks) == SUPERMERGER_ORDER
    assert EXT.default_keys() == SDXL.default_keys()
    assert detect_architecture(SDXL.default_keys()).name == "sdxl"
    assert detect_architecture(read_keylist("sdxl.comfy")).name == "sdxl"


@pytest.mark.parametrize("form", ["sdxl", "sdxl.comfy"])
def test_every_key_in_exactly_one_block_with_supermerger_counts(form):
    keys = read_keylist(form)
    counts = collections.Counter(EXT.block_of(k) for k in keys)
    assert None not in counts and set(counts) <= set(EXT.blocks)
    # Counts from SuperMerger's blockfromkey (scripts/mergers/mergers.py, the isxl branch) over the same list;
    # the three CLIP keys that are not a weight or a bias (position_ids, positional_embedding, text_projection)
    # it leaves unmerged, here they go with their encoder: CLIPL 196 + 1, CLIPG 387 + 2.
    # ComfyUI's form splits CLIP-G's fused in_proj into q/k/v: every clip_g key is CLIPG.
    clip_g = 389 if form == "sdxl" else sum(k.startswith("clip_g.") for k in keys)
    assert counts["CLIPL"] == 197 and counts["CLIPG"] == clip_g
    assert counts["TIME"] == counts["LABEL"] == counts["OUT9"] == 4
    assert counts["IN00"] == counts["IN30"] == counts["OUT22"] == 2
    assert counts["IN40"] == counts["OUT80"] == 12 and counts["IN10"] == counts["MID00"] == 10
    assert counts["IN41"] == counts["MID10"] == counts["OUT51"] == 6
    depths = [b for b in EXT.blocks if re.fullmatch(r"(?:IN|OUT)\d{3}|MID10\d", b)]  # one transformer depth each
    assert len(depths) == 70 and all(counts[b] == 20 for b in depths)
    assert counts["IN0"] == counts["VAE"] == 0  # kept for the list's positions
    assert sum(counts.values()) == len(keys)


def test_chosen_keys_in_both_forms():
    for key, block in CHOSEN.items():
        assert EXT.block_of(key) == block
    assert EXT.block_of("diffusion_model.input_blocks.8.1.transformer_blocks.9.ff.net.2.bias") == "IN819"
    assert EXT.block_of("clip_l.transformer.text_model.encoder.layers.3.mlp.fc1.weight") == "CLIPL"
    assert EXT.block_of("clip_g.transformer.text_model.encoder.layers.9.mlp.fc2.weight") == "CLIPG"
    assert EXT.block_of("first_stage_model.decoder.conv_in.weight") is None


def _values() -> list[float]:
    return [i / 128 for i in range(110)]


def test_110_value_string_resolves_per_block_on_sdxl():
    text = ",".join(repr(v) for v in _values())
    assert block_table(SDXL, TextInput(text), None, 0.5) is EXT
    keys = tuple(CHOSEN)
    r = resolve(SDXL, keys, 0.5, 0.5, False, block_weights_alpha=TextInput(text))
    for key, block in CHOSEN.items():
        assert r.a(key) == EXT.blocks.index(block) / 128, key
    assert r.resolution_a.arch_name == "sdxl_ext"
    assert closest_architecture(text, validate_block_weights).architecture is EXT


def test_spec_on_an_extended_block_name():
    keys = tuple(CHOSEN)
    r = resolve(SDXL, keys, 0.5, 0.5, False, elemental_alpha=TextInput("CLIPG MID107 IN411::0.25"))
    got = {CHOSEN[k]: r.a(k) for k in keys}
    assert got["CLIPG"] == got["MID107"] == got["IN411"] == 0.25
    assert got["CLIPL"] == got["MID00"] == got["IN41"] == 0.5
    # written for the extended table in the editor: used as such
    r = resolve(SDXL, keys, 0.5, 0.5, False, elemental_alpha=TextInput("TIME::0.75", "sdxl_ext"))
    assert r.a(U + "time_embed.0.weight") == 0.75 and r.a(U + "label_emb.0.0.weight") == 0.5
    assert parse_spec("OUT9 LABEL::0", EXT).entries


def test_standard_texts_keep_the_standard_table():
    twenty = ",".join(["0.25"] + ["0.75"] * 19)
    assert block_table(SDXL, TextInput(twenty), None, 0.5) is SDXL
    assert block_table(SDXL, None, TextInput("IN04:attn:0.1"), 0.5) is SDXL
    assert block_table(SDXL, TextInput(""), TextInput(""), 0.5) is SDXL
    assert block_table(get_architecture("sd1"), TextInput(",".join(["0"] * 110)), None, 0.5).name == "sd1"
    key = U + "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight"
    r = resolve(SDXL, (key, CHOSEN_CLIP := "conditioner.embedders.1.model.ln_final.weight"), 0.5, 0.5, False,
                block_weights_alpha=TextInput(twenty))
    assert r.a(key) == 0.75 and r.a(CHOSEN_CLIP) == 0.25 and r.resolution_a.arch_name == "sdxl"


def test_errors_name_the_valid_counts():
    with pytest.raises(ValueError, match=r"block_weights_alpha: .*20 values .*or 19 without BASE.*26/25.*or 110 "
                                         r"for the extended table"):
        resolve(SDXL, tuple(CHOSEN), 0.5, 0.5, False, block_weights_alpha=TextInput(",".join(["0"] * 50)))
    with pytest.raises(Exception, match=r"need 110 values"):
        parse_block_weights(",".join(["0"] * 109), EXT)
    # a 110-value string and a spec only the standard table knows: read with the standard table, and refused
    with pytest.raises(ValueError, match="block_weights_alpha"):
        resolve(SDXL, tuple(CHOSEN), 0.5, 0.5, False, block_weights_alpha=TextInput(",".join(["0"] * 110)),
                elemental_alpha=TextInput("IN04::0"))

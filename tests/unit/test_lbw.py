"""LoRA Block Weight strings: the mapping onto our blocks, checked against LBW's own algorithm written here.

`lbw_ratio` below restates how LoRA Block Weight (hako-mikan/sd-webui-lora-block-weight, scripts/
lora_block_weight.py: `to26`, `ratiodealer`, `get_flux_blocks`) gives a module its ratio: a short list is
spread into the 26-slot SD layout by block name (missing slots 0), then the first-to-last scan of its
substring table decides the slot, and a module no substring matches keeps 1. Module names are A1111's
(the checkpoint name with dots as underscores, text encoders under A1111's prefixes). Every key of the stored
key lists (checkpoint and ComfyUI forms) must get the same ratio from `resolve_lbw`.
"""
from __future__ import annotations

import random
import re

import pytest

from merge_core import MergeSpecError, parse_spec
from merge_core.merge.lbw import LBW_PRESETS, lbw_assigns, lbw_errors, parse_lbw, resolve_lbw

ID26 = ["BASE"] + ["IN%02d" % i for i in range(12)] + ["M00"] + ["OUT%02d" % i for i in range(12)]
ID17 = ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00"] + ["OUT%02d" % i for i in range(3, 12)]
ID12 = ["BASE", "IN04", "IN05", "IN07", "IN08", "M00"] + ["OUT%02d" % i for i in range(6)]
ID20 = ["BASE"] + ["IN%02d" % i for i in range(9)] + ["M00"] + ["OUT%02d" % i for i in range(9)]
IDFLUX = ["CLIP", "T5", "IN"] + ["D%02d" % i for i in range(19)] + ["S%02d" % i for i in range(38)] + ["OUT"]
# LBW's substring table: slot i of the 26 layout; the last two mean BASE too.
LBW_SUBSTRINGS = (["encoder"] + ["diffusion_model_input_blocks_%d_" % i for i in range(12)]
                  + ["diffusion_model_middle_block_"] + ["diffusion_model_output_blocks_%d_" % i for i in range(12)]
                  + ["embedders", "transformer_resblocks"])
A1111_PREFIX = (("model.diffusion_model.", "diffusion_model."), ("cond_stage_model.transformer.", "transformer."),
                ("cond_stage_model.model.", "model."), ("conditioner.embedders.0.transformer.", "0_transformer."),
                ("conditioner.embedders.1.model.", "1_model."))


def a1111_name(checkpoint_key: str) -> str:
    for old, new in A1111_PREFIX:
        if checkpoint_key.startswith(old):
            return (new + checkpoint_key[len(old):]).replace(".", "_")
    return checkpoint_key.replace(".", "_")


def lbw_ratio(name: str, values: list[float], ids: list[str], flux: bool) -> float:
    if flux:
        block = ("T5" if "t5xxl" in name else "CLIP" if "clip_" in name else None)
        m = re.search(r"_(\d+)_", name)
        if block is None and "double_blocks" in name:
            block = "D%02d" % int(m.group(1))
        elif block is None and "single_blocks" in name:
            block = "S%02d" % int(m.group(1))
        elif block is None and "_in" in name:
            block = "IN"
        elif block is None and "final_layer" in name:
            block = "OUT"
        return values[IDFLUX.index(block)] if block in IDFLUX else 1.0
    slots = [0.0] * 26
    for i, b in enumerate(ids):
        slots[ID26.index(b)] = values[i]
    ratio = 1.0
    for i, sub in enumerate(LBW_SUBSTRINGS):
        if sub in name:
            ratio = slots[0 if i >= 26 else i]
    return ratio


CASES = [("sd1", ID17), ("sd1", ID26), ("sd2", ID17), ("sd2", ID26), ("sdxl", ID12), ("sdxl", ID20),
         ("flux", IDFLUX)]


@pytest.mark.parametrize("arch,ids", CASES, ids=[f"{a}-{len(i)}" for a, i in CASES])
def test_every_key_matches_lbw(arch, ids, keylists, comfy_keylists):
    rng = random.Random(len(ids) * 7 + len(arch))
    values = [rng.choice([0.0, 0.25, 0.5, 0.75, 1.5, -0.5]) for _ in ids]
    text = ",".join(str(v) for v in values)
    ckpt = [k for k in keylists[arch] if not k.startswith(("first_stage_model.", "vae."))]
    res = resolve_lbw(ckpt, arch, text)
    assert set(res.ratios) == set(ckpt)  # every non-VAE key has one of our blocks
    flux = arch == "flux"
    for k in ckpt:
        assert res.ratios[k] == lbw_ratio(a1111_name(k) if not flux else k.replace(".", "_"), values, ids, flux), k
    # ComfyUI's own key forms get the ratio of the checkpoint key they stand for.
    from merge_core import canonical_key
    comfy = [k for k in comfy_keylists[arch] if canonical_key(k, arch) in res.ratios]
    assert len(comfy) > len(ckpt) * 0.9
    res_c = resolve_lbw(comfy, arch, text)
    for k in comfy:
        assert res_c.ratios[k] == res.ratios[canonical_key(k, arch)], k


def test_keys_lbw_leaves_alone(keylists):
    free = {a: sorted(k for k in keylists[a] if not k.startswith("first_stage_model.") and not lbw_assigns(k, a))
            for a in ("sd1", "sdxl", "flux")}
    u = "model.diffusion_model."
    assert free["sd1"] == sorted([u + f"{m}.{i}.{p}" for m in ("time_embed", "out") for i in (0, 2)
                                  for p in ("weight", "bias")] + [
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
        "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
        "cond_stage_model.transformer.text_model.final_layer_norm.bias"])
    assert [k for k in free["sdxl"] if k.startswith(u)] == sorted(
        [u + f"{m}.{i}.{p}" for m in ("time_embed", "out") for i in (0, 2) for p in ("weight", "bias")]
        + [u + f"label_emb.0.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")])
    assert free["flux"] == []


def test_short_forms_fill_omitted_blocks_with_zero():
    w = parse_lbw("1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17", "sd1")
    assert [w[b] for b in ID17] == list(range(1, 18))
    assert {b for b, v in w.items() if v == 0} == {"IN00", "IN03", "IN06", "IN09", "IN10", "IN11", "OUT00",
                                                   "OUT01", "OUT02"}
    x = parse_lbw("1,2,3,4,5,6,7,8,9,10,11,12", "sdxl")
    assert [x[b] for b in ID12] == list(range(1, 13))
    assert {b for b, v in x.items() if v == 0} == {"IN00", "IN01", "IN02", "IN03", "IN06", "OUT06", "OUT07",
                                                   "OUT08"}
    f = parse_lbw(",".join(str(i) for i in range(61)), "flux")
    assert f["CLIP"] == 0 and f["T5"] == 1 and f["IN"] == 2 and f["D00"] == 3 and f["S37"] == 59 and f["OUT"] == 60


def test_presets_and_pasted_forms():
    assert LBW_PRESETS["OUTALL"] == (1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1)
    expected = parse_lbw("1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1", "sd1")
    for text in ("OUTALL", "outall", " OUTALL ", "lbw=OUTALL", "OUTALL:1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1",
                 "lbw=1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1", "1 0 0 0 0 0 0 0 1 1 1 1 1 1 1 1 1",
                 "1,0,0,0,0,0,0,0,\n1,1,1,1,1,1,1,1,1"):
        assert parse_lbw(text, "sd2") == expected, text
    assert parse_lbw("FLUXALL", "flux") == {b: 1.0 for b in IDFLUX}
    assert parse_lbw("ALL0.5", "sd1")["OUT11"] == 0.5


@pytest.mark.parametrize("text,arch,needles", [
    ("1,1,1", "sd1", ["SD1.x LoRA Block Weight lists take 17 (BASE, IN01, IN02, IN04, IN05, IN07, IN08, M00, "
                      "OUT03-OUT11) or 26 (BASE, IN00-IN11, M00, OUT00-OUT11) values; got 3"]),
    ("ALL", "sdxl", ["take 12 (BASE, IN04, IN05, IN07, IN08, M00, OUT00-OUT05) or 20", "preset ALL has 17",
                     "SD1/SD2 LoRA form"]),
    (",".join(["1"] * 20), "sd1", ["got 20", "20 is LoRA Block Weight's SDXL LyCORIS form"]),
    (",".join(["1"] * 26), "sdxl", ["got 26", "SD1/SD2 LyCORIS form"]),
    (",".join(["1"] * 17), "flux", ["Flux LoRA Block Weight lists take 61 (CLIP, T5, IN, D00-D18, S00-S37, OUT)"]),
    ("ALL", "sd3", ["no weight lists for SD3"]),
    ("1,0,R,1", "sd1", ["column 5", "'R' is LoRA Block Weight's random value", "write a number"]),
    ("1,0,X+0.5", "sd1", ["column 5", "inherited value"]),
    ("1,0,foo", "sd1", ["column 5", "'foo' is not a finite number or a LoRA Block Weight preset", "OUTALL"]),
    ("", "sd1", ["empty"]),
])
def test_errors_name_counts_and_positions(text, arch, needles):
    with pytest.raises(MergeSpecError) as err:
        parse_lbw(text, arch)
    for n in needles:
        assert n in str(err.value)
    assert lbw_errors(text, arch)


def test_spec_applies_after_lbw_and_free_keys_start_at_one(sd1_keys):
    keys = [k for k in sd1_keys if not k.startswith("first_stage_model.")]
    te = "model.diffusion_model.time_embed.0.weight"
    out = "model.diffusion_model.out.2.weight"
    q = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    spec = parse_spec("IN00:time_embed.0:0.25\nIN01:attn1:0.75", "sd1", keys)
    res = resolve_lbw(keys, "sd1", "NONE", spec)
    assert res.ratios[te] == 0.25 and res.ratios[out] == 1.0 and res.ratios[q] == 0.75
    assert res.ratios["model.diffusion_model.time_embed.2.weight"] == 1.0
    assert res.ratios["model.diffusion_model.input_blocks.1.1.proj_in.weight"] == 0.0
    before = {c.key: c.before for c in res.changes}
    assert before[te] == 1.0 and before[q] == 0.0

"""Block tables against the real key layouts (lists generated with ComfyUI's classes on the meta device)."""
from __future__ import annotations

from collections import Counter

import pytest

from merge_core import ARCHITECTURES, detect_architecture, get_architecture

from tests.helpers.expected_blocks import U, expected_block


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl", "flux", "sd3"])
def test_every_key_maps_to_expected_block(arch, keylists):
    a = get_architecture(arch)
    keys = keylists[arch]
    assert keys, "key list is empty"
    wrong = [(k, a.block_of(k), expected_block(arch, k)) for k in keys if a.block_of(k) != expected_block(arch, k)]
    assert wrong == []
    assert all(a.block_of(k) is not None for k in keys if k.startswith(U)), "UNet key without a block"
    assert all(a.block_of(k) in a.blocks for k in keys)


def test_block_tables():
    assert ARCHITECTURES["sd1"].blocks == ("BASE",) + tuple("IN%02d" % i for i in range(12)) + ("M00",) + tuple(
        "OUT%02d" % i for i in range(12))
    assert len(ARCHITECTURES["sd1"].blocks) == 26 and ARCHITECTURES["sd2"].blocks == ARCHITECTURES["sd1"].blocks
    assert ARCHITECTURES["sdxl"].blocks == ("BASE",) + tuple("IN%02d" % i for i in range(9)) + ("M00",) + tuple(
        "OUT%02d" % i for i in range(9))
    flux = ARCHITECTURES["flux"].blocks
    assert set(flux) == {"CLIP", "T5", "IN", "OUT"} | {"D%02d" % i for i in range(19)} | {"S%02d" % i for i in range(38)}
    assert set(ARCHITECTURES["sd3"].blocks) == {"CLIP", "T5", "IN", "OUT"} | {"J%02d" % i for i in range(38)}
    assert [a.label for a in ARCHITECTURES.values()] == ["SD1.x", "SD2.x", "SDXL", "SDXL (extended, 110 blocks)",
                                                         "Flux", "SD3", "Wan 2.1/2.2", "Qwen-Image", "Krea 2",
                                                         "AuraFlow", "Flux.2", "Chroma",
                                                         "Z-Image", "Cosmos Predict2", "Anima"]


def test_block_counts_are_sane(keylists):
    c = Counter(ARCHITECTURES["sd1"].block_of(k) for k in keylists["sd1"])
    assert c["BASE"] == 196  # CLIP-L: 12 layers x 16 + 2 embeddings + final norm (2)
    assert c["IN00"] == 6  # conv_in (2) + time_embed (4)
    assert c["OUT11"] == 38 + 4  # a transformer output block + out.0/out.2
    assert c["IN03"] == c["IN06"] == c["IN09"] == 2  # downsamplers
    assert all(c[b] > 0 for b in ARCHITECTURES["sd1"].blocks)
    cx = Counter(ARCHITECTURES["sdxl"].block_of(k) for k in keylists["sdxl"])
    assert cx["IN00"] == 2 + 4 + 4  # conv_in, time_embed, label_emb
    assert cx["OUT08"] == 12 + 4
    assert cx["IN07"] > 200 and cx["M00"] > 200  # 10-deep transformers
    assert all(cx[b] > 0 for b in ARCHITECTURES["sdxl"].blocks)
    cf = Counter(ARCHITECTURES["flux"].block_of(k) for k in keylists["flux"])
    assert all(cf["D%02d" % i] == cf["D00"] for i in range(19)) and all(cf["S%02d" % i] == cf["S00"] for i in range(38))
    assert cf["IN"] == 16 and cf["OUT"] == 4 and cf["CLIP"] > 190 and cf["T5"] > 200
    c3 = Counter(ARCHITECTURES["sd3"].block_of(k) for k in keylists["sd3"])
    assert sum(c3["J%02d" % i] > 0 for i in range(38)) == 24  # SD3-medium
    assert c3["IN"] > 0 and c3["OUT"] == 4 and c3["T5"] > 200


def test_vae_and_unknown_keys_have_no_block():
    for a in ARCHITECTURES.values():
        assert a.block_of("first_stage_model.decoder.conv_in.weight") is None
        assert a.block_of("vae.decoder.conv_in.weight") is None
        assert a.block_of("something.else") is None
    assert ARCHITECTURES["sdxl"].block_of(U + "input_blocks.9.0.weight") is None  # no IN09 in SDXL


def test_comfy_forms_give_same_blocks():
    sd1, sdxl = ARCHITECTURES["sd1"], ARCHITECTURES["sdxl"]
    assert sd1.block_of("diffusion_model.output_blocks.4.1.proj_in.weight") == "OUT04"
    assert sd1.block_of("clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight") == "BASE"
    assert sdxl.block_of("clip_g.transformer.text_model.encoder.layers.30.self_attn.q_proj.weight") == "BASE"
    assert sdxl.block_of("diffusion_model.out.2.weight") == "OUT08"
    assert ARCHITECTURES["flux"].block_of("t5xxl.transformer.encoder.block.3.layer.0.SelfAttention.q.weight") == "T5"
    assert ARCHITECTURES["sd3"].block_of("clip_g.transformer.text_model.final_layer_norm.weight") == "CLIP"


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl", "flux", "sd3"])
def test_detection(arch, keylists, comfy_keylists):
    assert detect_architecture(keylists[arch]).name == arch
    assert detect_architecture(comfy_keylists[arch]).name == arch
    assert detect_architecture(iter(keylists[arch])).name == arch  # any iterable
    te_only = [k for k in comfy_keylists[arch] if not k.startswith("diffusion_model.")]
    assert detect_architecture(te_only).name == arch
    unet_only = [k for k in keylists[arch] if k.startswith(U)]
    assert detect_architecture(unet_only).name == ("sd1" if arch == "sd2" else arch)  # same names as SD1


def test_detection_unknown_layout_says_what_it_saw():
    with pytest.raises(ValueError) as e:
        detect_architecture(["foo.bar.weight", "first_stage_model.encoder.conv_in.weight"])
    msg = str(e.value)
    assert "2 keys" in msg and "first_stage_model" in msg and "foo.bar.weight" in msg
    with pytest.raises(ValueError, match="0 keys"):
        detect_architecture([])


def test_get_architecture():
    assert get_architecture("SDXL").name == "sdxl"
    assert get_architecture(" sd1 ").name == "sd1"
    assert get_architecture(ARCHITECTURES["flux"]) is ARCHITECTURES["flux"]
    with pytest.raises(ValueError) as e:
        get_architecture("sd4")
    assert "sd1, sd2, sdxl, sdxl_ext, flux, sd3" in str(e.value)


def test_default_keys(keylists):
    for name, a in ARCHITECTURES.items():
        assert a.default_keys() == keylists[a.keylist or name]
        assert not any(k.startswith("first_stage_model.") for k in a.default_keys())


def test_config_classes_come_from_the_records():
    from merge_core.arch.architectures import BY_CONFIG_CLASS

    assert BY_CONFIG_CLASS == {
        "SD15": "sd1", "SD15_instructpix2pix": "sd1", "SD20": "sd2", "SD21UnclipL": "sd2", "SD21UnclipH": "sd2",
        "SDXL": "sdxl", "SDXL_instructpix2pix": "sdxl", "SD3": "sd3", "Flux": "flux", "FluxInpaint": "flux",
        "FluxSchnell": "flux", "WAN21_T2V": "wan", "WAN21_I2V": "wan", "WAN22_T2V": "wan",
        "QwenImage": "qwen_image", "Krea2": "krea2", "AuraFlow": "auraflow", "Flux2": "flux2", "Chroma": "chroma",
        "ZImage": "zimage", "CosmosT2IPredict2": "cosmos_predict2", "CosmosI2VPredict2": "cosmos_predict2",
        "Anima": "anima"}
    detected = [a for a in ARCHITECTURES.values() if a.name != "sdxl_ext"]  # a text picks sdxl_ext, never keys
    assert all(a.markers for a in detected)
    assert all(a.text_markers for a in detected if a.text_encoders)

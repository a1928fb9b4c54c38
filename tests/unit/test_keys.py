"""canonical_key: one checkpoint-style name per parameter, whatever form it comes in."""
from __future__ import annotations

import pytest

from merge_core import ARCHITECTURES, canonical_key


def test_unet_forms():
    k = "model.diffusion_model.output_blocks.5.1.transformer_blocks.0.attn2.to_k.weight"
    assert canonical_key(k) == k
    assert canonical_key(k[len("model."):]) == k
    for arch in ARCHITECTURES:
        assert canonical_key(k[len("model."):], arch) == k


def test_text_encoder_forms():
    tail = "transformer.text_model.encoder.layers.3.mlp.fc1.weight"
    assert canonical_key("clip_l." + tail, "sd1") == "cond_stage_model." + tail
    assert canonical_key("clip_l." + tail) == "cond_stage_model." + tail  # guessed: SD1
    assert canonical_key("clip_l." + tail, "sdxl") == "conditioner.embedders.0." + tail
    assert canonical_key("clip_l." + tail, ARCHITECTURES["flux"]) == "text_encoders.clip_l." + tail
    assert canonical_key("t5xxl.transformer.shared.weight", "sd3") == "text_encoders.t5xxl.transformer.shared.weight"
    assert canonical_key("clip_g." + tail, "sd3") == "text_encoders.clip_g." + tail
    g = "conditioner.embedders.1.model."
    for proj in "qkv":
        assert canonical_key(f"clip_g.transformer.text_model.encoder.layers.7.self_attn.{proj}_proj.weight",
                             "sdxl") == g + "transformer.resblocks.7.attn.in_proj_weight"
        assert canonical_key(f"clip_g.transformer.text_model.encoder.layers.7.self_attn.{proj}_proj.bias",
                             "sdxl") == g + "transformer.resblocks.7.attn.in_proj_bias"
    assert canonical_key("clip_g.transformer.text_model.encoder.layers.0.layer_norm2.bias", "sdxl") == \
        g + "transformer.resblocks.0.ln_2.bias"
    assert canonical_key("clip_g.transformer.text_model.encoder.layers.0.mlp.fc2.weight", "sdxl") == \
        g + "transformer.resblocks.0.mlp.c_proj.weight"
    assert canonical_key("clip_g.transformer.text_projection.weight", "sdxl") == g + "text_projection"
    assert canonical_key("clip_g.transformer.text_model.embeddings.position_embedding.weight") == \
        g + "positional_embedding"
    assert canonical_key("clip_h.transformer.text_model.final_layer_norm.weight", "sd2") == \
        "cond_stage_model.model.ln_final.weight"
    assert canonical_key("first_stage_model.decoder.conv_in.weight", "sd1") == "first_stage_model.decoder.conv_in.weight"


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl", "flux", "sd3"])
def test_every_comfy_key_lands_on_a_checkpoint_key(arch, keylists, comfy_keylists):
    ckpt = set(keylists[arch])
    # CLIP-L's text_projection is not stored in SD1/SDXL checkpoints (ComfyUI drops it when saving).
    missing = [k for k in comfy_keylists[arch]
               if canonical_key(k, arch) not in ckpt and k != "clip_l.transformer.text_projection.weight"]
    assert missing == []
    a = ARCHITECTURES[arch]
    assert all(a.block_of(k) is not None for k in comfy_keylists[arch])

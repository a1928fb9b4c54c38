"""The diffusion-model-only family records on their stored key lists (no ComfyUI): detection by keys, every key in
a block, and the older records' key sets still detected as themselves. The lists and blocks are checked against
ComfyUI's own classes and block-merge nodes in tests/inprocess/test_arch_families.py."""
from __future__ import annotations

import pytest

from merge_core import detect_architecture, get_architecture
from tests.unit.conftest import ARCHS, EMPTY_BLOCKS, FAMILIES

U = "model.diffusion_model."


@pytest.mark.parametrize("name", FAMILIES)
def test_family_key_list_detected_and_every_key_in_a_block(name, keylists):
    keys = keylists[name]
    assert keys and all(k.startswith(U) for k in keys)
    assert detect_architecture(keys).name == name
    assert detect_architecture(["diffusion_model." + k[len(U):] for k in keys]).name == name
    arch = get_architecture(name)
    blocks = {arch.block_of(k) for k in keys}
    assert None not in blocks and blocks == set(arch.blocks) - EMPTY_BLOCKS.get(name, set())


@pytest.mark.parametrize("name", ARCHS)
def test_older_key_sets_keep_their_record(name, keylists):
    assert detect_architecture(keylists[name]).name == name


def test_first_block_takes_what_no_native_input_names():
    """Keys of other Wan variants go with IN (patch_embedding's ratio in ComfyUI's node); Qwen-Image's norm_out
    with POS; Flux.2 and Chroma have no such rule: an unknown key there belongs to no block."""
    assert get_architecture("wan").block_of(U + "vace_blocks.0.cross_attn.q.weight") == "IN"
    assert get_architecture("wan").block_of(U + "control_adapter.conv.weight") == "IN"
    assert get_architecture("qwen_image").block_of(U + "norm_out.linear.weight") == "POS"
    assert get_architecture("auraflow").block_of(U + "register_tokens") == "REG"
    assert get_architecture("cosmos_predict2").block_of(U + "extra_pos_embedder.pos_emb_t") == "POS"
    assert get_architecture("anima").block_of(U + "llm_adapter.blocks.0.mlp.0.weight") == "LLM"
    assert get_architecture("anima").block_of(U + "blocks.27.mlp.layer1.weight") == "B27"
    assert get_architecture("flux2").block_of(U + "something_new.weight") is None
    assert get_architecture("wan").block_of("umt5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight") is None


def test_lumina2_keys_are_not_z_image():
    """Lumina 2's NextDiT without Z-Image's pad tokens shows no record's markers."""
    keys = [U + k for k in ("x_embedder.weight", "noise_refiner.0.attention.qkv.weight",
                            "context_refiner.0.attention.qkv.weight", "cap_embedder.1.weight",
                            "layers.0.attention.qkv.weight", "final_layer.linear.weight")]
    with pytest.raises(ValueError):
        detect_architecture(keys)
    assert detect_architecture(keys + [U + "cap_pad_token"]).name == "zimage"

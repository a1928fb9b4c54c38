"""Element names per block (the editor's completion lists) and the safetensors header reader behind
/elemental/detect: pure merge_core, no server."""
from __future__ import annotations

import json
import struct

import pytest

from merge_core import ARCHITECTURES, canonical_key, element_of, elements_by_block
from merge_core.files.checkpoint_header import detect_file, safetensors_keys


@pytest.mark.parametrize("canon,element", [
    ("model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight", "attn2.to_k"),
    ("model.diffusion_model.input_blocks.4.1.transformer_blocks.0.ff.net.0.proj.weight", "ff.net"),
    ("model.diffusion_model.middle_block.1.transformer_blocks.0.norm1.bias", "norm1"),
    ("model.diffusion_model.input_blocks.1.1.proj_in.weight", "proj_in"),
    ("model.diffusion_model.input_blocks.1.0.in_layers.2.weight", "in_layers"),
    ("model.diffusion_model.output_blocks.8.0.skip_connection.bias", "skip_connection"),
    ("model.diffusion_model.time_embed.0.weight", "time_embed"),
    ("model.diffusion_model.out.2.bias", "out"),
    ("cond_stage_model.transformer.text_model.encoder.layers.5.self_attn.k_proj.weight", "self_attn.k_proj"),
    ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", "embeddings.token_embedding"),
    ("text_encoders.t5xxl.transformer.encoder.block.3.layer.1.DenseReluDense.wo.weight", "DenseReluDense.wo"),
    ("model.diffusion_model.double_blocks.3.img_attn.qkv.weight", "img_attn.qkv"),
])
def test_element_names(canon, element):
    assert element_of(canon) == element


def test_every_element_is_a_substring_of_a_key_of_its_block():
    for arch in ARCHITECTURES.values():
        canon = {}
        for key in arch.default_keys():
            block = arch.block_of(key)
            if block:
                canon.setdefault(block, []).append(canonical_key(key, arch))
        for block, names in elements_by_block(arch).items():
            joined = "\n".join(canon.get(block, []))
            assert all(n in joined for n in names), (arch.name, block)


def test_safetensors_header_reader(tmp_path):
    header = json.dumps({"__metadata__": {"a": "b"},
                         "model.diffusion_model.input_blocks.0.0.weight": {"dtype": "F16", "shape": [1],
                                                                           "data_offsets": [0, 2]},
                         "model.diffusion_model.double_blocks.0.img_attn.qkv.weight": {
                             "dtype": "F16", "shape": [1], "data_offsets": [2, 4]}}).encode()
    good = tmp_path / "m.safetensors"
    good.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    assert safetensors_keys(str(good)) == ["model.diffusion_model.input_blocks.0.0.weight",
                                                       "model.diffusion_model.double_blocks.0.img_attn.qkv.weight"]
    assert detect_file(str(good)) == {"arch": "flux", "label": "Flux", "reason": "2 keys"}
    bad = tmp_path / "b.safetensors"
    bad.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    assert detect_file(str(bad)) == {"arch": None, "label": None,
                                                 "reason": f"implausible safetensors header length {1 << 40}"}
    assert detect_file(str(tmp_path / "x.ckpt"))["arch"] is None

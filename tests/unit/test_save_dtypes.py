"""Per-key save dtypes: the fp8 rule (what stays fp16) checked against hand-picked SD1.5 / SDXL / SD3 keys."""
from __future__ import annotations

import pytest
import torch

from merge_core.files.save_dtypes import PRECISIONS, cast_for_save, keeps_wide, stored_dtype

F32, F16, BF16, E4, E5 = torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2

CASES = [  # key, shape, expected dtype for fp8_e4m3fn
    ("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight", (320, 320), E4),
    ("model.diffusion_model.input_blocks.0.0.weight", (320, 4, 3, 3), E4),
    ("model.diffusion_model.input_blocks.0.0.bias", (320,), F16),
    ("model.diffusion_model.out.0.weight", (320,), F16),
    ("model.diffusion_model.time_embed.0.weight", (1280, 320), E4),    # a Linear, not an embedding table
    ("model.diffusion_model.label_emb.0.0.weight", (1280, 2816), E4),
    ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", (49408, 768), F16),
    ("cond_stage_model.transformer.text_model.embeddings.position_embedding.weight", (77, 768), F16),
    ("cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight", (3072, 768), E4),
    ("conditioner.embedders.1.model.positional_embedding", (77, 1280), F16),
    ("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight", (3840, 1280), E4),
    ("text_encoders.t5xxl.transformer.shared.weight", (32128, 4096), F16),
    ("model.diffusion_model.pos_embed", (1, 36864, 1536), F16),
    ("first_stage_model.decoder.conv_in.weight", (512, 4, 3, 3), F16),
    ("vae.decoder.conv_in.weight", (512, 4, 3, 3), F16),
]


@pytest.mark.parametrize("key, shape, expected", CASES)
def test_fp8_rule(key, shape, expected):
    assert stored_dtype(key, F32, shape, "fp8_e4m3fn") == expected
    assert stored_dtype(key, F16, shape, "fp8_e5m2") == (E5 if expected == E4 else F16)
    assert keeps_wide(key, shape) == (expected == F16)


@pytest.mark.parametrize("precision, dtype", [("fp16", F16), ("bf16", BF16), ("fp32", F32)])
def test_plain_precisions_cast_every_float(precision, dtype):
    for key, shape, _ in CASES:
        assert stored_dtype(key, F32, shape, precision) == dtype


def test_markers_and_integers_unchanged():
    for precision in PRECISIONS:
        assert stored_dtype("v_pred", F32, (0,), precision) == F32
        assert stored_dtype("cond_stage_model.transformer.text_model.embeddings.position_ids", torch.int64,
                            (1, 77), precision) == torch.int64
        assert stored_dtype("edm_vpred.sigma_max", F32, (), precision) == (F16 if "fp8" in precision else
                                                                           PRECISIONS[precision])


def test_unknown_precision():
    with pytest.raises(ValueError, match=r"unknown precision 'fp4' \(valid: fp16, bf16, fp32, fp8_e4m3fn, fp8_e5m2\)"):
        stored_dtype("k", F32, (2, 2), "fp4")


def test_cast_is_round_to_nearest():
    x = torch.tensor([1.0 + 2 ** -11, 1.0 + 3 * 2 ** -11, 300.0, 0.0155])
    assert cast_for_save(x, F16).tolist() == [1.0, 1.0 + 2 ** -9, 300.0, torch.tensor(0.0155).half().item()]
    assert cast_for_save(x, E4).float().tolist() == [1.0, 1.0, 288.0, 0.015625]

"""merge_core/merge/merge_ratios.py and text/written.py: one merge's per-key alpha and beta, with the texts
checked against the models' architecture (no ComfyUI)."""
from __future__ import annotations

import pytest

from merge_core import get_architecture
from merge_core.merge.merge_ratios import resolve
from merge_core.text.written import TextInput, check_written_for, parse_text

SD1 = get_architecture("sd1")
KEYS = ("model.diffusion_model.input_blocks.1.1.proj_in.weight",
        "model.diffusion_model.output_blocks.5.1.transformer_blocks.0.attn2.to_k.weight",
        "first_stage_model.decoder.conv_in.weight")  # the VAE: outside every block


def test_block_weights_then_spec_and_the_plain_ratio_outside_every_block():
    weights = TextInput(",".join(["0.5"] * 26), "sd1")
    r = resolve(SD1, KEYS, 0.25, 0.75, True, block_weights_alpha=weights,
                elemental_alpha=TextInput("OUT05:attn2:0.125"))
    assert [r.a(k) for k in KEYS] == [0.5, 0.125, 0.25]
    assert [r.b(k) for k in KEYS] == [0.75, 0.75, 0.75]
    assert r.resolution_b is not None and r.resolution_b.ratios[KEYS[0]] == 0.75


def test_beta_is_not_resolved_when_unused():
    r = resolve(SD1, KEYS, 0.25, 0.5, False, elemental_beta=TextInput("OUT05::nope"))  # never parsed
    assert r.resolution_b is None and r.b(KEYS[1]) == 0.5


def test_texts_for_another_architecture_and_spec_errors_name_the_input():
    with pytest.raises(ValueError, match="^elemental_alpha was written for SDXL but the models are SD1.x$"):
        resolve(SD1, KEYS, 0.25, 0.5, False, elemental_alpha=TextInput("IN01::0", "sdxl"))
    with pytest.raises(ValueError, match="^block_weights_beta: "):
        resolve(SD1, KEYS, 0.25, 0.5, True, block_weights_beta=TextInput("1,2,3"))
    check_written_for("x", TextInput("IN01::0", "auto"), SD1)  # auto: fine for any architecture
    check_written_for("x", None, SD1)
    assert parse_text("x", lambda v: v * 2, 21) == 42


def test_auto_text_for_another_family_names_both():
    """An `auto` spec or weight string that fails for the models' family but fits other records names them and
    the models' family; a text that fits no record keeps the plain message."""
    from merge_core import get_architecture
    qwen = get_architecture("qwen_image")
    keys = qwen.default_keys()
    with pytest.raises(ValueError, match=r"^elemental_alpha was written for Anima but the models are Qwen-Image: "
                                         r"line 1, column 1: unknown block 'LLM'"):
        resolve(qwen, keys, 0.25, 0.5, False, elemental_alpha=TextInput("LLM::0.5"))
    with pytest.raises(ValueError, match=r"^block_weights_alpha was written for Wan 2\.1/2\.2 but the models are "
                                         r"Qwen-Image: .*need 66 values"):
        resolve(qwen, keys, 0.25, 0.5, False, block_weights_alpha=TextInput(",".join(["0.5"] * 46)))
    with pytest.raises(ValueError, match=r"^elemental_alpha was written for another architecture \(it fits Wan "
                                         r"2\.1/2\.2, Krea 2, .*\) but the models are Qwen-Image"):
        resolve(qwen, keys, 0.25, 0.5, False, elemental_alpha=TextInput("B05:attn:0.3"))
    with pytest.raises(ValueError, match=r"^elemental_alpha: line 1, column 1: unknown block 'T77'"):
        resolve(qwen, keys, 0.25, 0.5, False, elemental_alpha=TextInput("T77::1"))

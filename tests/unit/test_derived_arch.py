"""Blocks derived from a model's own keys (merge_core.arch.derived), on key lists written here in the layouts
of model families that have no record (Mochi, HunyuanVideo, Lumina 2 style), and the weight-string message
that names the architectures whose lengths are closest."""
from __future__ import annotations

import pytest

from merge_core import (AUTO, ARCHITECTURES, get_architecture, parse_block_weights, parse_spec, resolve_ratios,
                        text_problem, validate_block_weights, validate_spec)
from merge_core.arch.architectures import DERIVED
from merge_core.arch.derived import derive_architecture, derive_and_register, is_derived_name, uncovered
from merge_core.diagnostics import MergeSpecError
from merge_core.editor import route_logic
from merge_core.recipes import recipe as recipes
from merge_core.text.block_weights import closest_counts

U = "diffusion_model."


def keys_of(*parts: str) -> list[str]:
    return [U + p for p in parts]


def mochi_like(depth: int = 30) -> list[str]:
    return keys_of("pos_frequencies", "t5_y_embedder.to_kv.weight", "t5_yproj.weight", "x_embedder.proj.weight",
                   "t_embedder.mlp.0.weight", "t_embedder.mlp.2.weight",
                   *(f"blocks.{i}.attn.qkv_x.weight" for i in range(depth)),
                   *(f"blocks.{i}.mlp_x.w1.weight" for i in range(depth)),
                   "final_layer.linear.weight", "final_layer.mod.weight")


def hunyuan_like() -> list[str]:
    return keys_of("img_in.proj.weight", "time_in.in_layer.weight", "vector_in.in_layer.weight",
                   "txt_in.individual_token_refiner.blocks.0.mlp.fc1.weight",  # nested: not a container
                   *(f"double_blocks.{i}.img_attn.qkv.weight" for i in range(20)),
                   *(f"single_blocks.{i}.linear1.weight" for i in range(40)),
                   "final_layer.linear.weight")


def lumina_like() -> list[str]:
    return keys_of("x_embedder.weight",
                   *(f"noise_refiner.{i}.attention.qkv.weight" for i in range(2)),
                   *(f"context_refiner.{i}.attention.qkv.weight" for i in range(2)),
                   "t_embedder.mlp.0.weight", "cap_embedder.0.weight", "cap_embedder.1.weight",
                   *(f"layers.{i}.attention.qkv.weight" for i in range(26)),
                   "norm_final.weight", "final_layer.linear.weight")


def test_one_container_gives_numbered_blocks_between_in_and_out():
    a = derive_architecture(mochi_like(), "Mochi")
    assert a.blocks == ("IN",) + tuple(f"B{i:02d}" for i in range(30)) + ("OUT",)
    assert a.label == "Mochi (derived)" and is_derived_name(a.name)
    assert a.summary() == "derived from its keys: 30 blocks B00-B29 (blocks.N), IN, OUT"
    want = {"blocks.7.attn.qkv_x.weight": "B07", "blocks.29.mlp_x.w1.weight": "B29", "pos_frequencies": "IN",
            "t_embedder.mlp.2.weight": "IN", "t5_yproj.weight": "IN", "final_layer.mod.weight": "OUT"}
    for part, block in want.items():
        assert a.block_of(U + part) == block and a.block_of("model." + U + part) == block, part
    assert not uncovered(a, mochi_like())
    assert a.block_of("model_sampling.sigmas") is None and a.block_of("clip_l.transformer.x.weight") is None


def test_two_containers_and_nested_numbering():
    a = derive_architecture(hunyuan_like(), "HunyuanVideo")
    assert a.blocks == ("IN",) + tuple(f"D{i:02d}" for i in range(20)) + tuple(f"S{i:02d}" for i in range(40)) + \
        ("OUT",)
    assert a.block_of(U + "txt_in.individual_token_refiner.blocks.0.mlp.fc1.weight") == "IN"
    assert a.summary() == ("derived from its keys: 20 blocks D00-D19 (double_blocks.N), "
                           "40 blocks S00-S39 (single_blocks.N), IN, OUT")
    # a record found by keys alone (Flux's markers) leaves these keys out: the derived blocks are used instead
    assert uncovered(ARCHITECTURES["flux"], hunyuan_like()) == [U + "double_blocks.19.img_attn.qkv.weight",
                                                               U + "single_blocks.38.linear1.weight",
                                                               U + "single_blocks.39.linear1.weight"]


def test_modules_between_containers_go_to_in_and_after_the_last_to_out():
    a = derive_architecture(lumina_like())
    assert a.blocks[:5] == ("IN", "N00", "N01", "C00", "C01") and a.blocks[-1] == "OUT"
    assert a.block_of(U + "cap_embedder.1.weight") == "IN" and a.block_of(U + "t_embedder.mlp.0.weight") == "IN"
    assert a.block_of(U + "norm_final.weight") == "OUT" and a.block_of(U + "layers.25.attention.qkv.weight") == "L25"
    assert a.label == "unknown model (derived)"


def test_prefixes_of_containers_sharing_an_initial_and_reserved_names():
    a = derive_architecture(keys_of("double_blocks.0.a.weight", "down_blocks.0.a.weight", "down_blocks.1.a.weight",
                                    "inputs.0.a.weight", "image_blocks.0.a.weight", "outputs.0.a.weight",
                                    "head.weight"))
    # "IN" is taken by the input modules' block: inputs.N gets one letter more
    assert a.blocks == ("DOU00", "DOW00", "DOW01", "INP00", "IM00", "O00", "OUT")
    assert [p for _, p in a.containers] == ["DOU", "DOW", "INP", "IM", "O"]
    b = derive_architecture(keys_of("blocks.0.a.weight", "blocks2.0.a.weight", "blocks_2.0.a.weight"))
    assert len(set(p for _, p in b.containers)) == 3 and len(b.blocks) == 3  # every key still has its own block


def test_sequential_lists_are_modules_not_containers_and_indices_past_99_get_three_digits():
    a = derive_architecture(keys_of("time_embedding.0.weight", "time_embedding.2.weight",
                                    *(f"blocks.{i}.ff.weight" for i in (0, 5, 100)), "head.0.weight"))
    assert a.blocks == ("IN", "B000", "B005", "B100", "OUT")
    assert a.block_of(U + "time_embedding.2.weight") == "IN" and a.block_of(U + "head.0.weight") == "OUT"
    assert a.group_of("B100") == "B"
    spec = parse_spec("B000-B100:ff:0.5", a)
    assert spec.entries[0].blocks == {"B000", "B005", "B100"}


def test_no_container_puts_everything_in_in_and_no_diffusion_key_is_an_error():
    a = derive_architecture(keys_of("proj.weight", "norm.weight"))
    assert a.blocks == ("IN",)
    with pytest.raises(ValueError, match="no diffusion-model key"):
        derive_architecture(["clip_l.transformer.a.weight", "model_sampling.sigmas"])


def test_name_follows_the_layout_only():
    comfy = derive_architecture(mochi_like(), "Mochi")
    checkpoint = derive_architecture(["model." + k for k in mochi_like()], "Other label")
    assert comfy.name == checkpoint.name
    assert derive_architecture(mochi_like(29)).name != comfy.name
    assert not is_derived_name("sd1") and not is_derived_name("derived-xyz")


def test_registered_architecture_works_by_name_for_specs_weights_and_resolution():
    keys = mochi_like()
    a = derive_and_register(keys, "Mochi")
    assert get_architecture(a.name) is a and DERIVED[a.name] is a
    assert derive_and_register(keys, "Mochi") is a
    weights = parse_block_weights(",".join(str(i / 100) for i in range(32)), a.name)
    assert weights["IN"] == 0.0 and weights["B00"] == 0.01 and weights["OUT"] == 0.31
    spec = parse_spec("B02-B04:attn:0.75\nNOT B00-B29::0.5", a.name, keys)
    res = resolve_ratios(keys, a.name, 0.2, weights, spec)
    assert res.ratios[U + "blocks.3.attn.qkv_x.weight"] == 0.75
    assert res.ratios[U + "blocks.3.mlp_x.w1.weight"] == 0.04
    assert res.ratios[U + "final_layer.linear.weight"] == 0.5 and res.ratios[U + "t5_yproj.weight"] == 0.5
    assert len(res.ratios) == len(keys)
    with pytest.raises(MergeSpecError, match="Mochi \\(derived\\) block weights need 32 values"):
        parse_block_weights("1,2,3", a)
    # the editor's /elemental/architectures/<name> answers for it, elements from the keys it was derived from
    info = route_logic.architecture_info(a.name)
    assert info["blocks"] == list(a.blocks) and info["elements"]["B03"] == ["attn.qkv_x", "mlp_x.w1"]
    # a recipe naming it is valid (another session derives the same name from the same model)
    node = recipes.merge_node("Weight sum", 0.5, None, a.name, {"A": recipes.unknown_node("a"),
                                                               "B": recipes.unknown_node("b")}, False)
    recipes.parse_recipe(recipes.document(node, "1.0.0", "0.33.0"))


def test_auto_accepts_text_for_derived_blocks_and_still_refuses_nonsense():
    assert text_problem("elemental spec", "B00-B29:attn:0.5\nIN OUT::0.25", AUTO, validate_spec) is None
    assert text_problem("block weights", ",".join(["0.5"] * 32), AUTO, validate_block_weights) is None
    assert "OUT99" in text_problem("elemental spec", "OUT99::0.5", AUTO, validate_spec)
    assert text_problem("elemental spec", "B00-T29::0.5", AUTO, validate_spec) is not None  # across families
    assert "'x' is not" in text_problem("block weights", "1,x", AUTO, validate_block_weights)
    assert text_problem("elemental spec", "B00:attn", AUTO, validate_spec) is not None  # 2 fields


def test_wrong_length_names_the_closest_architectures_with_their_lengths():
    with pytest.raises(MergeSpecError) as e:
        parse_block_weights(",".join(["1"] * 61), "sd1")
    msg = str(e.value)
    assert "SD1.x block weights need 26 values (BASE, IN00..IN11, M00, OUT00..OUT11) or 25 without BASE " \
           "(LoRA Block Weight's lists: 17), got 61; closest: Flux 61" in msg
    near = closest_counts(61, exclude="sd1")
    assert near[0] == (ARCHITECTURES["flux"], 61)
    # the lengths come from the records: every record's is its block count (one fewer without BASE)
    for arch, n in closest_counts(1000, limit=len(ARCHITECTURES) + len(DERIVED)):
        assert n == (26 if arch.name == "sdxl" else len(arch.blocks))  # SDXL also takes SD1's 26
    assert closest_counts(20, exclude="sd1")[0] == (ARCHITECTURES["sdxl"], 20)

"""A model file's blocks for the editor (`merge_core.editor.model_blocks`), decided as the merge decides them:
records by config class or keys, otherwise blocks derived from the keys in the model's own order, never in
the header's sorted order. No ComfyUI: the model's key order is written here from LTXV's module order
(scale_shift_table, patchify_proj, adaln_single, caption_projection, transformer_blocks, proj_out)."""
from __future__ import annotations

from merge_core.arch import derived
from merge_core.arch.architectures import get_architecture
from merge_core.editor.model_blocks import comfy_form, file_architecture, record_of_keys

LAYERS = 28
BLOCK = ("attn1.to_q.weight", "attn1.to_out.0.bias", "attn2.to_k.weight", "ff.net.0.proj.weight", "ff.net.2.bias")
IN_KEYS = ("scale_shift_table", "patchify_proj.weight", "patchify_proj.bias", "adaln_single.linear.weight",
           "caption_projection.linear_1.weight")


def ltxv_model_order() -> list[str]:
    """Bare LTXV-like keys in the order ComfyUI's LTXVModel lists them."""
    return [*IN_KEYS, *(f"transformer_blocks.{i}.{p}" for i in range(LAYERS) for p in BLOCK),
            "proj_out.weight", "proj_out.bias"]


def header_order(keys) -> list[str]:
    """What a safetensors header lists: sorted (one dtype here)."""
    return sorted(keys)


def model_keys(bare) -> list[str]:
    return ["diffusion_model." + k for k in bare] + ["model_sampling.sigmas"]


def test_derived_blocks_come_from_the_models_order_and_match_the_merges_architecture():
    bare = ltxv_model_order()
    answer = file_architecture(header_order(bare), model_keys(bare), "LTXV")
    expected = ["IN", *(f"T{i:02d}" for i in range(LAYERS)), "OUT"]
    assert answer["blocks"] == expected and answer["derived"] is True
    assert answer["label"] == "LTXV (derived)"
    assert answer["reason"] == "derived from its keys: 28 blocks T00-T27 (transformer_blocks.N), IN, OUT"
    # The very architecture the merge derives from the loaded model (`architecture_of`): same name, registered.
    merge_time = derived.derive_architecture(model_keys(bare), "LTXV")
    assert answer["arch"] == merge_time.name
    assert get_architecture(answer["arch"]).blocks == tuple(expected)


def test_a_checkpoint_file_gives_the_same_blocks():
    bare = ltxv_model_order()
    file_keys = header_order(["model.diffusion_model." + k for k in bare] + ["first_stage_model.decoder.conv.weight"])
    answer = file_architecture(file_keys, model_keys(bare), "LTXV")
    assert answer["arch"] == derived.derive_architecture(model_keys(bare), "LTXV").name


def test_the_header_order_alone_would_give_other_blocks_so_it_is_not_used():
    bare = ltxv_model_order()
    from_header = derived.derive_architecture(comfy_form(header_order(bare)))
    assert "OUT" not in from_header.blocks  # proj_out sorts before transformer_blocks: it would land in IN
    answer = file_architecture(header_order(bare))
    assert answer["arch"] is None and answer["blocks"] == []
    assert "a safetensors header lists its keys sorted" in answer["reason"]


def test_records_by_config_class_and_by_keys():
    assert file_architecture(["x.weight"], None, "SDXL")["arch"] == "sdxl"
    sd1 = get_architecture("sd1").default_keys()
    answer = file_architecture(header_order(sd1))
    assert (answer["arch"], answer["derived"], answer["blocks"][:2]) == ("sd1", False, ["BASE", "IN00"])
    assert record_of_keys(sd1).name == "sd1"
    # A diffusion-model file (bare keys) of a record: Flux.
    assert record_of_keys(header_order(flux_unet())).name == "flux"


def flux_unet() -> list[str]:
    """Flux's diffusion-model keys, bare (a Load Diffusion Model file)."""
    u = "model.diffusion_model."
    return [k[len(u):] for k in get_architecture("flux").default_keys() if k.startswith(u)]


def test_a_record_that_leaves_keys_outside_every_block_gives_derived_blocks():
    # HunyuanVideo-like: Flux's markers, but 20 double and 40 single blocks (Flux has D00-D18, S00-S37).
    flux = flux_unet()
    extra = [k.replace("double_blocks.18.", "double_blocks.19.") for k in flux if k.startswith("double_blocks.18.")]
    extra += [k.replace("single_blocks.37.", f"single_blocks.{i}.") for i in (38, 39)
              for k in flux if k.startswith("single_blocks.37.")]
    order = [k for k in flux if k.startswith(("img_in", "time_in", "vector_in", "guidance_in", "txt_in"))]
    order += [k for k in flux + extra if k.startswith("double_blocks.")]
    order += [k for k in flux + extra if k.startswith("single_blocks.")]
    order += [k for k in flux if k.startswith("final_layer")]
    assert record_of_keys(header_order(order)) is None
    answer = file_architecture(header_order(order), model_keys(order), "HunyuanVideo")
    assert answer["derived"] and answer["label"] == "HunyuanVideo (derived)"
    assert answer["blocks"][:2] == ["IN", "D00"] and "D19" in answer["blocks"] and "S39" in answer["blocks"]
    assert answer["blocks"][-1] == "OUT"

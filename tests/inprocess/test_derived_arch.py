"""A model family with no record (LTXV) merged on blocks derived from its own keys, on real ComfyUI objects.

Models: ComfyUI's own LTXVModel built on the meta device with 3 transformer blocks and 128 wide (32 heads of
4; ComfyUI's detection reads depth and width from the keys), filled from seeded generators, written as
diffusion-model files (~3 MiB in float16) and loaded by `comfy.sd.load_diffusion_model` as UNETLoader does.
ComfyUI detects them as its LTXV config, which has no record: the blocks are derived. The block each key must
land in is stated here by hand from LTXV's module names, and every merged weight is checked against
A(1-r)+Br computed from the files' tensors, r from the rule written here.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers.arch_checks import assert_rounded_formula
from tests.helpers.pack import pack_module
from tests.helpers.sd1_sources import merged_weight

UNET = "diffusion_model."
IN_MODULES = ("scale_shift_table", "patchify_proj", "adaln_single", "caption_projection")
WEIGHTS = {"IN": 0.1, "T00": 0.2, "T01": 0.3, "T02": 0.4, "OUT": 0.9}
SPEC = "T01:attn2:0.75\nIN OUT:bias:0"


def block_of(file_key: str) -> str:
    top = file_key.split(".")[0]
    if top == "transformer_blocks":
        return f"T{int(file_key.split('.')[1]):02d}"
    if top == "proj_out":
        return "OUT"
    assert top in IN_MODULES, file_key
    return "IN"


def ratio_of(file_key: str) -> float:
    block = block_of(file_key)
    if block == "T01" and "attn2" in file_key:
        return 0.75
    if block in ("IN", "OUT") and "bias" in file_key:
        return 0.0
    return WEIGHTS[block]


def write_ltxv(path: str, layers: int, seed: int) -> None:
    import comfy.ops
    from comfy.ldm.lightricks.model import LTXVModel

    meta = LTXVModel(attention_head_dim=4, cross_attention_dim=128, num_layers=layers, device="meta",
                     operations=comfy.ops.disable_weight_init).state_dict()
    g = torch.Generator().manual_seed(seed)
    save_file({k: (torch.randn(v.shape, generator=g) * 0.05).half() for k, v in meta.items()}, path)


@pytest.fixture(scope="module")
def ltxv(tmp_path_factory):
    merge_nodes = pack_module("nodes.merge_nodes")
    import comfy.sd

    folder = tmp_path_factory.mktemp("ltxv")
    paths = {n: str(folder / f"ltxv_{n}.safetensors") for n in ("A", "B", "short")}
    for (n, path), seed in zip(paths.items(), (1, 2, 3)):
        write_ltxv(path, 2 if n == "short" else 3, seed)
    models = {n: comfy.sd.load_diffusion_model(p, model_options={"dtype": torch.float16}) for n, p in paths.items()}
    files = {n: load_file(paths[n]) for n in "AB"}
    yield merge_nodes, models, files, paths
    models.clear()


def test_ltxv_has_no_record_and_gets_derived_blocks_holding_every_key(ltxv):
    model_info = pack_module("nodes.engine.model_info")
    _, models, files, _ = ltxv
    assert type(models["A"].model.model_config).__name__ == "LTXV"
    arch = model_info.architecture_of(models["A"])
    assert arch.name.startswith("derived-") and arch.label == "LTXV (derived)"
    assert arch.blocks == ("IN", "T00", "T01", "T02", "OUT")
    assert arch.summary() == "derived from its keys: 3 blocks T00-T02 (transformer_blocks.N), IN, OUT"
    keys = list(models["A"].model_state_dict(filter_prefix=UNET))
    assert sorted(k[len(UNET):] for k in keys) == sorted(files["A"])
    assert {k: arch.block_of(k) for k in keys} == {k: block_of(k[len(UNET):]) for k in keys}
    assert model_info.architecture_of(models["B"]) is arch  # one registered architecture for the layout
    assert model_info.architecture_of(models["short"]).name != arch.name


@pytest.fixture(scope="module")
def merged(ltxv):
    merge_nodes, models, _, _ = ltxv
    T = merge_nodes.TextInput
    weights = ",".join(str(v) for v in WEIGHTS.values())
    out = merge_nodes.ElementalMerge.execute(
        model_a=models["A"], model_b=models["B"], mode="Weight sum", alpha=0.5, beta=0.0, print_change=False,
        block_weights_alpha=T(weights, "auto"), elemental_alpha=T(SPEC, "auto"))
    return out.args[0], out.args[2]


def test_block_weights_and_spec_merge_gives_the_formula_on_every_key(ltxv, merged):
    _, models, files, _ = ltxv
    model, report = merged
    assert "architecture LTXV (derived): derived from its keys: 3 blocks T00-T02 (transformer_blocks.N), IN, " \
           "OUT" in report
    for fk in sorted(files["A"]):
        got = merged_weight(model, UNET + fk)
        assert got.dtype == torch.float16
        assert_rounded_formula(got, files["A"][fk], files["B"][fk], ratio_of(fk), fk)
    assert model.model_options["elemental_merge_recipe"]["architecture"].startswith("derived-")


def test_saved_merge_holds_the_formula_weights(ltxv, merged, tmp_path):
    writer = pack_module("nodes.engine.checkpoint_writer")
    _, _, files, _ = ltxv
    path = str(tmp_path / "ltxv_merge.safetensors")
    writer.save_checkpoint_streaming(path, merged[0], None, None, "fp16", {"format": "pt"})
    saved = load_file(path)
    prefix = "model.diffusion_model."
    assert {k for k in saved if k.startswith(prefix)} == {prefix + k for k in files["A"]}
    for fk in files["A"]:
        assert_rounded_formula(saved[prefix + fk], files["A"][fk], files["B"][fk], ratio_of(fk), fk)
    os.remove(path)


def test_diffusion_model_loader_names_the_sources_in_reports_and_errors(ltxv):
    merge_nodes, models, _, paths = ltxv
    names = {n: os.path.basename(p) for n, p in paths.items()}
    prompt = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": names["A"], "weight_dtype": "default"}},
              "2": {"class_type": "UNETLoader", "inputs": {"unet_name": names["short"], "weight_dtype": "default"}},
              "3": {"class_type": "ElementalMerge", "inputs": {"model_a": ["1", 0], "model_b": ["2", 0]}}}
    node = type("ElementalMergeInGraph", (merge_nodes.ElementalMerge,),
                {"hidden": SimpleNamespace(prompt=prompt, unique_id="3")})
    with pytest.raises(ValueError) as e:  # 3 blocks against 2: the architectures differ
        node.execute(model_a=models["A"], model_b=models["short"], mode="Weight sum", alpha=0.5, beta=0.0,
                     print_change=False)
    assert f"model_a ({names['A']}, LTXV (derived))" in str(e.value)
    assert f"model_b ({names['short']}, LTXV (derived))" in str(e.value)
    prompt["2"]["inputs"]["unet_name"] = names["B"]
    out = node.execute(model_a=models["A"], model_b=models["B"], mode="Weight sum", alpha=0.5, beta=0.0,
                       print_change=False)
    assert f"A={names['A']}, B={names['B']}" in out.args[2]
    sources = out.args[0].model_options["elemental_merge_recipe"]["sources"]
    assert sources["A"] == {"kind": "unknown", "label": names["A"], "apply": []}


def test_xy_plot_names_diffusion_model_sources_in_its_errors(ltxv):
    plot_job = pack_module("nodes.plot.plot_job")
    _, models, _, paths = ltxv
    labels = {"model_a": os.path.basename(paths["A"]), "model_b": os.path.basename(paths["short"])}
    with pytest.raises(ValueError) as e:
        plot_job.MergeJob({"mode": "Weight sum", "model_a": models["A"], "model_b": models["short"]}, {}, labels)
    assert f"model_a ({labels['model_a']}, LTXV (derived))" in str(e.value)
    assert f"model_b ({labels['model_b']}, LTXV (derived))" in str(e.value)

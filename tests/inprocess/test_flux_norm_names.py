"""Flux's q/k RMSNorms on the ComfyUI under test (0.33 renames them ``.scale`` -> ``.weight`` on load, 0.3.75
does not): a calc-mode merge leaves them at A's weight as SuperMerger does, and a saved diffusion model
carries the file names (``.scale``) and loads back with the stock loader, nothing missing or unexpected.

Models: devkit.fixtures_arch's flux_dev A and B (1 double, 1 single block, hidden 3072) loaded like
UNETLoader with fp16 weights; C is A merged with B half and half as a ComfyUI patch (its live weight is
``A * 0.5 + 0.5 * B`` in float32). The calc mode is trainDifference (three models, no model-wide statistic).
The renamed keys are named here by ComfyUI 0.33's own rule, applied to the fixture file's names.
"""
from __future__ import annotations

import logging
import os

import pytest
import torch
from safetensors import safe_open

from tests.helpers.arch_checks import dtype_ulp
from tests.helpers.calc_oracles import oracle_train_difference
from tests.helpers.pack import pack_module
from tests.helpers.sd1_sources import merged_weight

UNET = "diffusion_model."
ALPHA = 0.75
SPEC = "S00::0.25\nD00:query_norm.scale:0.5"  # selects two renamed norms: the calc rule still keeps them at A
# The fixture's q/k norms (file names), as ComfyUI 0.33's Flux config would rename them.
NORMS = {f"double_blocks.0.{s}_attn.norm.{n}_norm.scale" for s in ("img", "txt") for n in ("query", "key")} | \
        {f"single_blocks.0.norm.{n}_norm.scale" for n in ("query", "key")}


def ratio_of(file_key: str) -> float:
    if file_key.startswith("single_blocks.0."):
        return 0.25
    if file_key.startswith("double_blocks.0.") and "query_norm." in file_key:
        return 0.5
    return ALPHA


@pytest.fixture(scope="module")
def flux():
    merge_nodes = pack_module("nodes.merge_nodes")
    import comfy.sd
    from devkit.fixtures_arch import checkpoints_dir, ensure_fixture

    paths = {n: ensure_fixture(checkpoints_dir(), "flux_dev", n) for n in "AB"}
    models = {}
    for n in "AB":
        models[n] = comfy.sd.load_diffusion_model(paths[n], model_options={"dtype": torch.float16})
        pack_module("nodes.engine.model_info").set_source_name(models[n], os.path.basename(paths[n]))
    c = models["A"].clone()
    c.add_patches(models["B"].get_key_patches(UNET), 0.5, 0.5)
    models["C"] = c
    files = {n: safe_open(paths[n], "pt") for n in "AB"}
    yield merge_nodes, models, files, paths
    models.clear()


def live_name(model, file_key: str) -> str:
    """The model patcher's name of a file key, by this ComfyUI's own load-time rename."""
    (name,) = model.model.model_config.process_unet_state_dict({file_key: None})
    return UNET + name


def test_fixture_has_file_names_and_loader_renames_the_norms(flux):
    _, models, files, _ = flux
    keys = set(files["A"].keys())
    assert NORMS <= keys and len(keys) == 52
    loaded = set(models["A"].model_state_dict(filter_prefix=UNET))
    assert loaded == {live_name(models["A"], k) for k in keys}
    renamed = {k for k in keys if live_name(models["A"], k) != UNET + k}
    from comfyui_version import __version__ as version
    renames = tuple(int(p) for p in version.split(".")[:2]) >= (0, 33)
    assert renamed == (NORMS if renames else set()), version  # 0.3.75: none; 0.33: exactly the q/k norms


@pytest.fixture(scope="module")
def merged(flux):
    merge_nodes, models, _, _ = flux
    T = merge_nodes.TextInput
    out = merge_nodes.ElementalMerge.execute(
        model_a=models["A"], model_b=models["B"], model_c=models["C"], mode="Add difference", alpha=ALPHA,
        beta=0.0, print_change=False, calc_mode="trainDifference", elemental_alpha=T(SPEC, "flux"))
    return out.args[0]


def test_train_difference_keeps_norms_at_a_and_merges_the_rest(flux, merged):
    _, models, files, _ = flux
    kept = computed = 0
    for fk in sorted(files["A"].keys()):
        key = live_name(models["A"], fk)
        A, B = files["A"].get_tensor(fk), files["B"].get_tensor(fk)
        got = merged_weight(merged, key)
        if fk in NORMS:  # '.scale': not a weight or bias to SuperMerger, whatever ComfyUI calls it
            assert key not in merged.patches, f"{key} is patched"
            assert torch.equal(got, A), key
            kept += 1
            continue
        C = A.float() * 0.5 + 0.5 * B.float()
        want = oracle_train_difference(A, B, C, ratio_of(fk))
        err = (got.float() - want).abs()
        assert (err <= dtype_ulp(want, torch.float16)).all(), f"{key}: max error {err.max().item()}"
        assert not torch.equal(got, A), f"{key} kept A"
        computed += 1
    assert (kept, computed) == (6, 46)


def test_saved_diffusion_model_has_file_names_and_loads_back(flux, merged, tmp_path, caplog):
    import comfy.sd

    writer = pack_module("nodes.engine.checkpoint_writer")
    _, models, files, _ = flux
    path = str(tmp_path / "flux_merge.safetensors")
    try:
        writer.save_checkpoint_streaming(path, merged, None, None, "fp16", {"format": "pt"})
        with safe_open(path, "pt") as f:
            saved = set(f.keys())
        assert saved == {"model.diffusion_model." + k for k in files["A"].keys()}  # '.scale', as in Flux files
        caplog.set_level(logging.WARNING)
        caplog.clear()
        reloaded = comfy.sd.load_diffusion_model(path, model_options={"dtype": torch.float16})
        problems = [r.getMessage() for r in caplog.records if "missing" in r.getMessage()
                    or "unexpected" in r.getMessage()]
        assert not problems, problems
        assert type(reloaded.model.model_config).__name__ == "Flux"
        state = reloaded.model_state_dict(filter_prefix=UNET)
        assert set(state) == set(models["A"].model_state_dict(filter_prefix=UNET))
        for key, weight in state.items():
            assert torch.equal(weight, merged_weight(merged, key)), key
        del reloaded, state
    finally:
        if os.path.exists(path):
            os.remove(path)

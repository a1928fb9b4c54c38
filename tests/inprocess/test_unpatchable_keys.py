"""Keys ComfyUI's load path never patches (a buffer, or a parameter of a module whose sub-modules hold
parameters) are merged in the live model by an object patch, equal to what the streaming save writes.

Models: the seeded tiny Wan 2.1 and AuraFlow of devkit/fixtures_families (ComfyUI's own classes, fp16 on the
CPU). Which keys are unreachable is asked of ComfyUI's own `ModelPatcher._load_list` (comfy_internals); the
first test names the keys it must find, so a ComfyUI upgrade that changes that function fails there by name.
The live model is loaded as sampling loads it (`patch_model` on the CPU, which runs `load`).
"""
from __future__ import annotations

import re

import pytest
import torch

from devkit.fixtures_families import tiny_model
from tests.helpers.arch_checks import assert_rounded_formula
from tests.helpers.pack import pack_module

UNET = "diffusion_model."
EXPECTED = {
    "wan": re.compile(r"diffusion_model\.(blocks\.\d+|head)\.modulation$"),
    "auraflow": re.compile(r"diffusion_model\.(positional_encoding|register_tokens)$"),
}
RATIO = 0.25


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def models(request):
    pack_module("nodes.merge_nodes")  # imports ComfyUI first
    return request.param, tiny_model(request.param, "A"), tiny_model(request.param, "B")


def _unet_keys(patcher) -> list[str]:
    return [k for k in patcher.model_state_dict() if k.startswith(UNET)]


def _merge(a, b, ratio=RATIO):
    merge_nodes = pack_module("nodes.merge_nodes")
    out = merge_nodes.ElementalMerge.execute(model_a=a, model_b=b, mode="Weight sum", alpha=ratio, beta=0.0,
                                             print_change=False)
    return out.result[0]


def _live(patcher) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in patcher.model.state_dict().items() if k.startswith(UNET)}


def test_load_path_names_the_unpatchable_keys(models):
    """ComfyUI's `_load_list` leaves out exactly the family's known unpatchable keys (every other weight is
    patched on load): if an upgrade changes that function, this names what changed."""
    internals = pack_module("nodes.engine.comfy_internals")
    name, a, _ = models
    assert not internals.missing_internals(a)
    keys = _unet_keys(a)
    unreached = set(internals.unpatchable_keys(a, keys))
    expected = {k for k in keys if EXPECTED[name].match(k)}
    assert expected, f"{name}: the fixture has none of its known unpatchable keys"
    assert unreached == expected, (f"{name}: ComfyUI's load path no longer skips exactly the known keys; "
                                   f"newly skipped {sorted(unreached - expected)[:5]}, "
                                   f"now patched {sorted(expected - unreached)[:5]}")


def test_live_model_and_save_hold_the_merged_value(models):
    """After a merge, loaded as sampling loads it, every key (the unpatchable ones too) is A(1-r)+Br, and the
    streaming save computes the very same tensors, with the model loaded and not."""
    writer = pack_module("nodes.engine.checkpoint_writer")
    name, a, b = models
    merged = _merge(a, b)
    wa, wb = a.model.state_dict(), b.model.state_dict()
    unreached = [k for k in _unet_keys(a) if EXPECTED[name].match(k)]
    (part,) = writer.checkpoint_parts(merged)
    saved_unloaded = {k: part.compute(k[len(UNET):]) for k in _unet_keys(a)}
    merged.patch_model(device_to=torch.device("cpu"))
    try:
        live = _live(merged)
        (part,) = writer.checkpoint_parts(merged)
        saved_loaded = {k: part.compute(k[len(UNET):]) for k in _unet_keys(a)}
    finally:
        merged.unpatch_model(device_to=torch.device("cpu"))
    for k in _unet_keys(a):
        assert_rounded_formula(live[k], wa[k], wb[k], RATIO, k)
        assert torch.equal(saved_unloaded[k], live[k]), f"{k}: the save differs from the live model"
        assert torch.equal(saved_loaded[k], live[k]), f"{k}: the save of the loaded model differs"
    for k in unreached:
        assert not torch.equal(live[k], wa[k]), f"{k}: still A's in the live model"
    after = _live(a)
    assert all(torch.equal(after[k], wa[k]) for k in _unet_keys(a)), "model A changed"
    assert all(torch.equal(_live(merged)[k], wa[k]) for k in unreached), "unpatch left the merged value"


def test_xy_remerge_recomputes_the_object_patch(models):
    """The XY plot's incremental re-merge: a new ratio recomputes the unpatchable keys' object patches, on the
    loaded model at once and on a fresh load."""
    remerge = pack_module("nodes.engine.remerge")
    import comfy.model_management
    name, a, b = models
    wa, wb = a.model.state_dict(), b.model.state_dict()
    unreached = [k for k in _unet_keys(a) if EXPECTED[name].match(k)]
    merge = remerge.IncrementalMerge(a, b)
    try:
        for i, ratio in enumerate((0.25, 0.75, 0.0)):
            merge.apply(lambda k: ratio)
            live_now = _live(merge.model)  # the model as loaded for the previous ratio, after this apply
            merge.load()
            live = _live(merge.model)
            for k in unreached:
                assert_rounded_formula(live[k], wa[k], wb[k], ratio, k)
                if i:
                    assert torch.equal(live_now[k], live[k]), f"{k}: not recomputed in the loaded model"
            if i:
                assert merge.last.in_place, "the re-merge did not recompute in place"
    finally:
        comfy.model_management.unload_all_models()

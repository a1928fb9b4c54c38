"""The pack's nodes on real SD1.5 objects, read back through every ComfyUI load path (load_paths.py): what
ElementalMerge (and so Load Merge Recipe, which runs the same node), an XY plot's re-merged cell,
ElementalLoRA and ElementalAdjust leave in the model must be the formula whichever way ComfyUI computes it.

All three checkpoints are loaded in fp16 (UNet and text encoder), as a GPU user's models are: then the fp16
compute paths hand A over exactly, and every path must be within one fp16 ulp of the float64 formula. A
seeded sample of keys is checked (40 of the UNet and text encoder, every kind of layer among them); the
engine merges every key either way, and tests/inprocess/test_merge_engine.py checks them all on the classic
path.
"""
from __future__ import annotations

import random

import pytest
import torch
from safetensors import safe_open

from tests.helpers.arch_checks import dtype_ulp
from tests.helpers.pack import pack_module
from tests.helpers.load_paths import DYNAMIC, DYNAMIC_FP16, FP16_COMPUTE, LOAD_PATHS, has_dynamic_path, weight_via
from tests.helpers.sd1_sources import (ALPHA, BETA, BLOCK_WEIGHTS_ALPHA, UNDEFINED_IN_SD1, file_key, keys_of,
                                         load_models, reference_ratios)

SPEC = "OUT03-OUT05:attn2:0.75\nIN04:NOT norm:0.125\nBASE:mlp:0.625"
SAMPLE = 40
LARGEST = 2_000_000  # elements: the random part of the sample leaves out the few huge keys (embeddings)


@pytest.fixture(scope="module")
def sd1(checkpoint_paths):
    merge_nodes = pack_module("nodes.merge_nodes")
    models = load_models(checkpoint_paths, "AB", lambda n: {"dtype": torch.float16})
    files = {n: safe_open(checkpoint_paths[n], "pt") for n in "AB"}
    unet, clip = keys_of(models)
    rng = random.Random(20)
    sizes = {k: v.numel() for p in (models["A"][0], models["A"][1].patcher) for k, v in p.model_state_dict().items()}
    usable = [k for k in unet + clip if k not in UNDEFINED_IN_SD1 and sizes[k] <= LARGEST
              and not k.endswith((".position_ids", ".logit_scale"))]
    sample = rng.sample(usable, SAMPLE - 4) + ["diffusion_model.out.0.weight", "diffusion_model.out.2.weight",
                                               "diffusion_model.input_blocks.0.0.weight",
                                               "clip_l.transformer.text_model.final_layer_norm.weight"]
    yield merge_nodes, models, files, sample, unet + clip
    models.clear()


def _available_paths():
    """The load paths this ComfyUI has (0.3.75: the classic one only)."""
    import comfy.model_management as mm

    out = []
    for path in LOAD_PATHS:
        if path in (DYNAMIC, DYNAMIC_FP16) and not has_dynamic_path():
            continue
        if path == FP16_COMPUTE and not hasattr(mm, "LORA_COMPUTE_DTYPES"):
            continue
        out.append(path)
    return out


def _patcher_of(model, clip, key):
    return clip.patcher if key.startswith("clip_l.") else model


def _check(model, clip, sample, expected_of, label):
    """Every sampled key through every load path this ComfyUI has, against the float64 formula."""
    checked = {}
    for key in sample:
        want = expected_of(key)
        ulp = dtype_ulp(want.float(), torch.float16).double()
        for path in _available_paths():
            got = weight_via(_patcher_of(model, clip, key), key, path)
            assert got.dtype == torch.float16, f"{label} {key} via {path}: {got.dtype}"
            err = (got.double() - want).abs()
            assert (err <= ulp).all(), f"{label} {key} via {path}: {err.max().item():.3g} off the formula"
            checked[path] = checked.get(path, 0) + 1
    assert checked == {path: SAMPLE for path in _available_paths()}


def test_elemental_merge(sd1):
    merge_nodes, models, files, sample, keys = sd1
    T = merge_nodes.TextInput
    (ma, ca), (mb, cb) = models["A"], models["B"]
    model, clip, _ = merge_nodes.ElementalMerge.execute(
        model_a=ma, model_b=mb, clip_a=ca, clip_b=cb, mode="Weight sum", alpha=ALPHA, beta=BETA,
        print_change=False, block_weights_alpha=T(BLOCK_WEIGHTS_ALPHA), elemental_alpha=T(SPEC)).args
    ratio = reference_ratios(keys, SPEC, BLOCK_WEIGHTS_ALPHA, ALPHA)

    def expected(key):
        A, B = (files[n].get_tensor(file_key(key)).double() for n in "AB")
        return A * (1 - ratio[key]) + B * ratio[key]

    _check(model, clip, sample, expected, "ElementalMerge")


def test_xy_cell_after_re_merge(sd1):
    """The XY plot's engine after two cells: the second cell's ratios, whichever path ComfyUI loads with."""
    _, models, files, sample, keys = sd1
    (ma, ca), (mb, cb) = models["A"], models["B"]
    merge = pack_module("nodes.engine.remerge").IncrementalMerge(ma, mb, None, "Weight sum", ca, cb)
    merge.apply(lambda k: 0.25)
    moved = {k: (0.875 if ".attn2." in k else 0.25) for k in keys}
    merge.apply(moved)

    def expected(key):
        A, B = (files[n].get_tensor(file_key(key)).double() for n in "AB")
        return A * (1 - moved[key]) + B * moved[key]

    _check(merge.model, merge.clip, sample, expected, "XY cell")


def test_adjust_after_merge(sd1):
    """ElementalAdjust's scale of the output conv on top of a merge: (A(1-a) + Ba) * factor."""
    merge_nodes, models, files, _, _ = sd1
    adjust_node = pack_module("nodes.adjust_nodes")
    (ma, ca), (mb, cb) = models["A"], models["B"]
    merged = merge_nodes.ElementalMerge.execute(model_a=ma, model_b=mb, clip_a=ca, clip_b=cb, mode="Weight sum",
                                                alpha=0.5, beta=0.0, print_change=False).args[0]
    values = dict(IN=0.0, OUT=0.0, OUT2=0.5, CONT=0.0, BRI=0.0, COL1=0.0, COL2=0.0, COL3=0.0)
    adjusted = adjust_node.ElementalAdjust.execute(model=merged, **values).args[0]
    scaled = [k for k, p in adjusted.patches.items() if len(p) > len(merged.patches.get(k, []))]
    assert scaled, "Adjust added no patch"
    for key in scaled:
        strength, _, factor = adjusted.patches[key][-1][:3]
        assert strength == 0.0 and factor not in (0.0, 1.0), f"{key}: not a scale"
        A, B = (files[n].get_tensor(file_key(key)).double() for n in "AB")
        want = (A * 0.5 + B * 0.5) * factor
        for path in _available_paths():
            got = weight_via(adjusted, key, path).double()
            # the fp16 paths round the merge to fp16 before Adjust scales it: up to 2 fp16 ulps in all
            assert ((got - want).abs() <= 2 * dtype_ulp(want.float(), torch.float16).double()).all(), (key, path)

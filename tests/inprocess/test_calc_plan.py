"""nodes/engine/merge_patches.py's per-key decisions for calc modes, on recorded patch calls (SD2 key names, tiny tensors:
no checkpoint, fast): which keys are patched, which keep A and why, bounds, fused q/k/v units, the diff
checker's per-calc-mode change test, and the queue-time checks of the merge widgets."""
from __future__ import annotations

import pytest
import torch

from tests.helpers.pack import pack_module

U = "diffusion_model."
H = "clip_h.transformer.text_model.encoder.layers.0."
KEYS = {
    U + "input_blocks.1.1.proj_in.weight": (4, 4),
    U + "input_blocks.1.1.proj_out.weight": (4, 4),
    U + "output_blocks.5.1.norm.bias": (4,),
    U + "input_blocks.0.0.weight": (4, 9, 3, 3),
    H + "self_attn.q_proj.weight": (4, 4),
    H + "self_attn.k_proj.weight": (4, 4),
    H + "self_attn.v_proj.weight": (4, 4),
    H + "layer_norm1.weight": (4,),
    "clip_h.transformer.text_model.embeddings.position_embedding.weight": (3, 4),
    "clip_h.transformer.text_projection.weight": (4, 4),
}


def entries(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: [(torch.randn(s, generator=g), lambda a, **kw: a)] for k, s in shapes.items()}


@pytest.fixture(scope="module")
def mods():
    import merge_core as mc

    return pack_module("nodes.engine.merge_patches"), mc


def run(mods, calc, a=0.5, b=0.25, shapes_b=None, method="Weight sum"):
    p, mc = mods
    shapes_b = shapes_b or {k: (4, 4, 3, 3) if "input_blocks.0.0" in k else s for k, s in KEYS.items()}
    sources = {"a": entries(KEYS, 0), "b": entries(shapes_b, 1), "c": entries(shapes_b, 2)}
    from merge_core.merge.calc_modes import CosineStat

    settings = p.CalcSettings(calc, 0.3, CosineStat(-0.5, 0.9, 10), mc.get_architecture("sd2"))
    plan = p.plan_merge(dict(KEYS), sources, mc.get_merge_method(method), lambda k: a, lambda k: b, settings)
    patches = plan.patches
    return plan.notes, {(k if isinstance(k, str) else k[0]): v for k, v in patches.items()}, patches


def test_tensor_patches_and_keeps(mods):
    notes, patches, raw = run(mods, "tensor")
    # position_embedding and text_projection are not weight/bias in checkpoint names: A kept
    assert set(patches) == set(KEYS) - {"clip_h.transformer.text_model.embeddings.position_embedding.weight",
                                        "clip_h.transformer.text_projection.weight"}
    assert notes.unchanged == 2 and notes.kept == []
    q = patches[H + "self_attn.q_proj.weight"]
    assert q.params.unit.kind == "fused" and q.params.unit.keys == tuple(H + f"self_attn.{x}_proj.weight" for x in "qkv")
    assert (U + "input_blocks.0.0.weight", (1, 0, 4)) in raw  # inpainting A: common channels
    assert notes.narrowed == [(U + "input_blocks.0.0.weight", "dim 1: 4 of 9")]
    assert raw[(U + "input_blocks.0.0.weight", (1, 0, 4))].params.sources["b"][0][0][0].shape == (4, 4, 3, 3)


def test_ratio_zero_rules_per_calc_mode(mods):
    for calc, patched in (("cosineA", 8), ("cosineB", 8), ("extract", 8), ("trainDifference", 0),
                          ("smoothAdd", 0), ("self", 0), ("tensor", 0)):
        method = "Add difference" if calc in ("extract", "trainDifference", "smoothAdd") else "Weight sum"
        notes, patches, _ = run(mods, calc, a=0.0, b=0.5, method=method)
        assert notes.patched == patched, calc


def test_self_keeps_to_out_proj_out_norm_but_not_ln_1(mods):
    notes, patches, _ = run(mods, "self", a=0.5)
    assert U + "input_blocks.1.1.proj_in.weight" in patches
    assert U + "input_blocks.1.1.proj_out.weight" not in patches
    assert U + "output_blocks.5.1.norm.bias" not in patches
    assert H + "layer_norm1.weight" in patches  # OpenCLIP's ln_1: no "norm" in the checkpoint name


def test_bounds_name_the_block(mods):
    with pytest.raises(ValueError, match=r"'tensor2'.*\[0, 1\].*block IN01"):
        run(mods, "tensor2", a=1.25)


def test_fused_unit_with_a_mismatched_part_keeps_a(mods):
    shapes_b = {**{k: (4, 4, 3, 3) if "input_blocks.0.0" in k else s for k, s in KEYS.items()},
                H + "self_attn.v_proj.weight": (5, 4)}
    notes, patches, _ = run(mods, "cosineB", shapes_b=shapes_b)
    kept = dict(notes.kept)
    assert set(kept) == {H + f"self_attn.{x}_proj.weight" for x in "qkv"}
    assert "not a narrowing" in kept[H + "self_attn.q_proj.weight"]


def test_key_effect_per_calc_mode(mods):
    p, mc = mods
    arch = mc.get_architecture("sd2")
    ws = mc.get_merge_method("Weight sum")
    key = U + "input_blocks.1.1.proj_in.weight"
    normal, tensor, cosine = (p.CalcSettings(c, 0.3, None, arch) for c in ("normal", "tensor", "cosineA"))
    assert p.key_effect(ws, normal, key, 0.0, 0.3) is None
    assert p.key_effect(ws, tensor, key, 0.0, 0.3) is None          # a = 0 with a + b <= 1 keeps A
    assert p.key_effect(ws, tensor, key, 0.0, 0.3) != p.key_effect(ws, tensor, key, 0.5, 0.3)
    assert p.key_effect(ws, cosine, key, 0.0, 0.3) is not None      # cosine changes keys at a = 0

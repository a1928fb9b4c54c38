"""The fused merge patch (nodes/engine/merge_adapter.py) inside ComfyUI's own patch path, on small real ModelPatchers:
linear steps and calc modes against formulas written here, sources that carry patches, offsets, fused q/k/v,
interning. The full-size SD1.5 checks are in test_calc_modes_engine.py."""
from __future__ import annotations

import pytest
import torch

from tests.helpers.pack import pack_module

KEY = "lin.weight"


def _patchers(seed=0, dtype=torch.float32):
    import comfy.model_patcher

    out = []
    g = torch.Generator().manual_seed(seed)
    for _ in range(3):
        m = torch.nn.Module()
        m.lin = torch.nn.Linear(6, 5)
        m.conv = torch.nn.Conv2d(9, 4, 3)
        m.q_proj = torch.nn.Linear(4, 4)
        m.k_proj = torch.nn.Linear(4, 4)
        m.v_proj = torch.nn.Linear(4, 4)
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        m.to(dtype)
        cpu = torch.device("cpu")
        out.append(comfy.model_patcher.ModelPatcher(m, load_device=cpu, offload_device=cpu))
    return out


def _merged(patcher, key):
    import comfy.utils

    cpu = torch.device("cpu")
    patcher.patch_weight_to_device(key, device_to=cpu)
    got = comfy.utils.get_attr(patcher.model, key).detach().clone()
    backup = patcher.backup.pop(key)
    comfy.utils.set_attr_param(patcher.model, key, backup.weight)
    return got


def _w(patcher, key):
    return patcher.model_state_dict()[key].detach().clone()


@pytest.mark.parametrize("mode", ["Weight sum", "Add difference", "Triple sum", "Sum twice"])
def test_linear_steps(mode):
    import merge_core as mc

    mp = pack_module("nodes.engine.merge_adapter")
    pa, pb, pc = _patchers()
    a, b = 0.375, 0.25
    method = mc.get_merge_method(mode)
    target = pa.clone()
    sources = {"b": (pb.get_key_patches()[KEY],), "c": (pc.get_key_patches()[KEY],)}
    target.add_patches({KEY: mp.make_patch(KEY, method.steps(a, b), sources=sources)}, 1.0, 1.0)
    A, B, C = (_w(p, KEY).double() for p in (pa, pb, pc))
    expected = {"Weight sum": A * (1 - a) + B * a, "Add difference": A + (B - C) * a,
                "Triple sum": A * (1 - a - b) + B * a + C * b,
                "Sum twice": (A * (1 - a) + B * a) * (1 - b) + C * b}[mode]
    torch.testing.assert_close(_merged(target, KEY).double(), expected, rtol=0, atol=4e-7 * 8)
    assert torch.equal(_w(pa, KEY), A.float()) and torch.equal(_w(pb, KEY), B.float())


def test_source_with_its_own_patches():
    """B carries a diff patch (as a LoRA or a merge would): the merge uses B's patched weight."""
    mp = pack_module("nodes.engine.merge_adapter")
    import merge_core as mc

    pa, pb, _ = _patchers(1)
    delta = torch.full((5, 6), 0.5)
    pb2 = pb.clone()
    pb2.add_patches({KEY: (delta,)}, 1.0, 1.0)
    target = pa.clone()
    target.add_patches({KEY: mp.make_patch(KEY, mc.get_merge_method("Weight sum").steps(0.5, 0),
                                           sources={"b": (pb2.get_key_patches()[KEY],)})}, 1.0, 1.0)
    expected = (_w(pa, KEY) + _w(pb, KEY) + delta) / 2
    torch.testing.assert_close(_merged(target, KEY), expected, rtol=0, atol=1e-6)


def test_offset_merges_common_channels_in_place():
    """A 9-channel conv against a 4-channel source: the patch gets a narrowed view and writes through."""
    import merge_core as mc

    mp = pack_module("nodes.engine.merge_adapter")
    pa, pb, _ = _patchers(2)
    small = pb.model.conv.weight.detach()[:, :4].clone()
    pb.model.conv.weight = torch.nn.Parameter(small)
    target = pa.clone()
    patch = mp.make_patch("conv.weight", mc.get_merge_method("Weight sum").steps(0.5, 0),
                          sources={"b": (pb.get_key_patches()["conv.weight"],)})
    target.add_patches({("conv.weight", (1, 0, 4)): patch}, 1.0, 1.0)
    A = _w(pa, "conv.weight")
    got = _merged(target, "conv.weight")
    torch.testing.assert_close(got[:, :4], (A[:, :4] + small) / 2, rtol=0, atol=1e-6)
    assert torch.equal(got[:, 4:], A[:, 4:])


@pytest.mark.parametrize("calc", ["trainDifference", "smoothAdd", "extract", "tensor", "tensor2", "self"])
def test_calc_mode_on_plain_key(calc):
    from merge_core.merge import calc_modes as cm

    mp = pack_module("nodes.engine.merge_adapter")
    pa, pb, pc = _patchers(3, torch.float16)
    sources = {"b": (pb.get_key_patches()[KEY],), "c": (pc.get_key_patches()[KEY],)}
    args = cm.CalcArgs(key="x.lin.weight", gamma=0.5)
    target = pa.clone()
    target.add_patches({KEY: mp.make_patch(KEY, (), calc, 0.4, 0.3, sources, None, args)}, 1.0, 1.0)
    A, B, C = (_w(p, KEY) for p in (pa, pb, pc))
    expected = cm.calc_merge(calc, A, B, C, 0.4, 0.3, args).half()
    assert torch.equal(_merged(target, KEY), expected)


def test_fused_qkv_computes_on_checkpoint_layout():
    from merge_core.merge import calc_layout as cl

    mp = pack_module("nodes.engine.merge_adapter")
    pa, pb, _ = _patchers(4)
    keys = ("q_proj.weight", "k_proj.weight", "v_proj.weight")
    unit = cl.LayoutUnit("m.attn.in_proj_weight", keys, cl.FUSED)
    ea, eb = pa.get_key_patches(), pb.get_key_patches()
    sources = {"a": tuple(ea[k] for k in keys), "b": tuple(eb[k] for k in keys)}
    target = pa.clone()
    target.add_patches({k: mp.make_patch(k, (), "tensor", 0.5, 0.25, sources, unit) for k in keys}, 1.0, 1.0)
    A = torch.cat([_w(pa, k) for k in keys])
    B = torch.cat([_w(pb, k) for k in keys])
    expected = A.clone()
    expected[3:9] = B[3:9]  # n = 12 rows: int(12 * 0.25) .. int(12 * 0.75)
    got = torch.cat([_merged(target, k) for k in keys])
    assert torch.equal(got, expected)


def test_interning():
    import merge_core as mc

    mp = pack_module("nodes.engine.merge_adapter")
    pa, pb, _ = _patchers(5)
    sources = {"b": (pb.get_key_patches()[KEY],)}
    steps = mc.get_merge_method("Weight sum").steps(0.5, 0)
    p1 = mp.make_patch(KEY, steps, sources=sources)
    assert mp.make_patch(KEY, steps, sources=sources) is p1
    assert mp.make_patch(KEY, mc.get_merge_method("Weight sum").steps(0.25, 0), sources=sources) is not p1
    assert mp.make_patch(KEY, (), "self", 0.5, 0, sources) is not p1

"""Every patch the pack makes, through every way ComfyUI computes a patched weight (tests/helpers/load_paths.py):
the classic path, fp16 patch compute and the dynamic-VRAM loader's patch preparation. Each must give the
formula, computed here in float64 from the unpatched weights.

On ComfyUI 0.33 with an NVIDIA GPU the dynamic loader rebuilds every weight adapter as
``type(value)(value.loaded_keys, prepared(value.weights))`` and hands patches A's weight in float16; an adapter
that kept its parameters elsewhere came back empty and returned A unchanged, and one that mixed float32
sources into an fp16 weight crashed. These tests are what would have shown it on a CPU.

Bounds: a float32 weight computed in float32 must be the formula within a few fp32 round-offs; a weight the
path hands over or stores in float16 within one fp16 ulp of the formula on the weight as the path hands it
over (an fp32 A cast to fp16 compute has already lost its low bits before any patch runs; the pack then
computes in float32 and rounds once). ComfyUI's own LoRA adapter computes in the path's dtype: there the
patch must be ComfyUI's stock LoRA on the same path, bit for bit, and the formula where it computes in fp32.
"""
from __future__ import annotations

import pytest
import torch

from tests.helpers.arch_checks import dtype_ulp
from tests.helpers.pack import pack_module
from tests.helpers.load_paths import (CLASSIC, DYNAMIC, DYNAMIC_FP16, FP16_COMPUTE, LOAD_PATHS,
                                        compute_dtype_of, has_dynamic_path, weight_via)

KEY = "lin.weight"
A_, B_ = 0.375, 0.25


def _skip_unavailable(path):
    pack_module("nodes.engine.merge_adapter")  # imports ComfyUI
    if path in (DYNAMIC, DYNAMIC_FP16) and not has_dynamic_path():
        pytest.skip("this ComfyUI has no dynamic-VRAM loader (comfy.lora.prefetch_prepared_value)")
    if path == FP16_COMPUTE:
        import comfy.model_management as mm

        if not hasattr(mm, "LORA_COMPUTE_DTYPES"):
            pytest.skip("this ComfyUI always computes patches in float32")


def _patchers(seed, dtype):
    import comfy.model_patcher

    out = []
    g = torch.Generator().manual_seed(seed)
    for _ in range(3):
        m = torch.nn.Module()
        m.lin = torch.nn.Linear(48, 40)  # 7.5 KiB in fp32: ComfyUI's dynamic loader has modules of any size
        m.norm = torch.nn.LayerNorm(40)
        m.conv = torch.nn.Conv2d(9, 4, 3)
        m.conv_out = torch.nn.Conv2d(4, 4, 3)
        m.q_proj, m.k_proj, m.v_proj = (torch.nn.Linear(8, 8) for _ in range(3))
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        m.to(dtype)
        out.append(comfy.model_patcher.ModelPatcher(m, load_device=torch.device("cpu"),
                                                    offload_device=torch.device("cpu")))
    return out


def _w(patcher, key):
    return patcher.model_state_dict()[key].detach().clone()


def _handed_over(A, path):
    """A's weight as `path` hands it to the patches (float64 for the formula)."""
    return A.to(compute_dtype_of(path, A.dtype)).double()


def _assert_formula(got, expected, stored, path, label):
    """`got` (the path's weight, in the stored dtype) against the float64 `expected`."""
    assert got.dtype == stored, f"{label}: {path} returned {got.dtype}, the model stores {stored}"
    rounded_at = torch.float16 if torch.float16 in (stored, compute_dtype_of(path, stored)) else torch.float32
    if rounded_at == torch.float32:
        bound = 8 * 2.0 ** -24 * expected.abs().clamp_min(1.0)
    else:
        bound = dtype_ulp(expected.float(), torch.float16).double()
    err = (got.double() - expected).abs()
    assert (err <= bound).all(), f"{label} via {path}: off the formula by {err.max().item():.3g} " \
                                 f"(bound {bound.max().item():.3g})"


DTYPES = [torch.float32, torch.float16]
FORMULA = {
    "Weight sum": lambda A, B, C, a, b: A * (1 - a) + B * a,
    "Add difference": lambda A, B, C, a, b: A + (B - C) * a,
    "Triple sum": lambda A, B, C, a, b: A * (1 - a - b) + B * a + C * b,
    "Sum twice": lambda A, B, C, a, b: (A * (1 - a) + B * a) * (1 - b) + C * b,
}


@pytest.mark.parametrize("path", LOAD_PATHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("mode", list(FORMULA))
def test_merge_modes(mode, dtype, path):
    import merge_core as mc

    _skip_unavailable(path)
    mp = pack_module("nodes.engine.merge_adapter")
    pa, pb, pc = _patchers(1, dtype)
    target = pa.clone()
    sources = {"b": (pb.get_key_patches()[KEY],), "c": (pc.get_key_patches()[KEY],)}
    target.add_patches({KEY: mp.make_patch(KEY, mc.get_merge_method(mode).steps(A_, B_), sources=sources)})
    A, B, C = (_w(p, KEY) for p in (pa, pb, pc))
    expected = FORMULA[mode](_handed_over(A, path), B.double(), C.double(), A_, B_)
    _assert_formula(weight_via(target, KEY, path), expected, dtype, path, mode)
    assert torch.equal(_w(pa, KEY), A), "the merge wrote into model A"


@pytest.mark.parametrize("path", LOAD_PATHS)
@pytest.mark.parametrize("calc", ["trainDifference", "smoothAdd", "extract", "tensor2", "self"])
def test_calc_modes(calc, path):
    """Each calc mode on an fp16 model against merge_core's calc formula (tested on its own against
    SuperMerger's) in float64 on the same fp16 tensors."""
    from merge_core.merge import calc_modes as cm

    _skip_unavailable(path)
    mp = pack_module("nodes.engine.merge_adapter")
    pa, pb, pc = _patchers(2, torch.float16)
    sources = {"b": (pb.get_key_patches()[KEY],), "c": (pc.get_key_patches()[KEY],)}
    args = cm.CalcArgs(key="x.lin.weight", gamma=0.5)
    target = pa.clone()
    target.add_patches({KEY: mp.make_patch(KEY, (), calc, 0.4, 0.3, sources, None, args)})
    A, B, C = (_w(p, KEY) for p in (pa, pb, pc))
    args = cm.CalcArgs(args.key, args.gamma, None, torch.float16)  # what the patch passes: B's storage dtype
    expected = cm.calc_merge(calc, A.float(), B.float(), C.float(), 0.4, 0.3, args).double()
    _assert_formula(weight_via(target, KEY, path), expected, torch.float16, path, calc)


@pytest.mark.parametrize("path", LOAD_PATHS)
@pytest.mark.parametrize("method", ["TIES", "DARE-TIES", "DELLA", "Model Stock"])
def test_task_methods(method, path):
    """A task-vector method on an fp16 model against the float64 formula of tests/helpers/task_oracles.py on
    A as the path hands it over (the masks drawn from the seed and the key, whatever the path)."""
    from merge_core.merge.task_params import TaskArgs
    from tests.helpers import task_oracles as oracle

    _skip_unavailable(path)
    mp = pack_module("nodes.engine.merge_adapter")
    pa, pb, pc = _patchers(4, torch.float16)
    sources = {"b": (pb.get_key_patches()[KEY],), "c": (pc.get_key_patches()[KEY],)}
    values = {"alpha": 0.75, "density": 0.4, "drop_rate": 0.5, "epsilon": 0.2}
    task = TaskArgs(method, tuple(sorted(values.items())), 9, "model.x.lin.weight", (), ("b", "c"))
    target = pa.clone()
    target.add_patches({KEY: mp.make_patch(KEY, sources=sources, task=task)})
    A, B, C = (_w(p, KEY) for p in (pa, pb, pc))
    handed = A.to(compute_dtype_of(path, A.dtype))
    expected = oracle.merge(method, handed.float().numpy(), [B.float().numpy(), C.float().numpy()], values, 9,
                            "model.x.lin.weight")
    _assert_formula(weight_via(target, KEY, path), torch.from_numpy(expected), torch.float16, path, method)


@pytest.mark.parametrize("path", LOAD_PATHS)
def test_fused_qkv_calc_mode(path):
    """A layout-dependent calc mode on a fused q/k/v unit: each part through its own patch, A's other parts
    read from A's entries."""
    from merge_core.merge import calc_layout as cl

    _skip_unavailable(path)
    mp = pack_module("nodes.engine.merge_adapter")
    pa, pb, _ = _patchers(3, torch.float32)
    keys = ("q_proj.weight", "k_proj.weight", "v_proj.weight")
    unit = cl.LayoutUnit("m.attn.in_proj_weight", keys, cl.FUSED)
    ea, eb = pa.get_key_patches(), pb.get_key_patches()
    sources = {"a": tuple(ea[k] for k in keys), "b": tuple(eb[k] for k in keys)}
    target = pa.clone()
    target.add_patches({k: mp.make_patch(k, (), "tensor", 0.5, 0.25, sources, unit) for k in keys})
    A = torch.cat([_w(pa, k) for k in keys])
    expected = A.clone()
    expected[6:18] = torch.cat([_w(pb, k) for k in keys])[6:18]  # 24 rows: int(24 * 0.25) .. int(24 * 0.75)
    got = torch.cat([weight_via(target, k, path) for k in keys])
    _assert_formula(got, expected.double(), torch.float32, path, "tensor on fused q/k/v")


@pytest.mark.parametrize("path", LOAD_PATHS)
def test_narrowed_key_and_patched_source(path):
    """A 9-channel conv against a 4-channel B that itself carries a diff patch (a LoRA, a merge): the common
    channels merge with B's patched weight, A's extra channels stay."""
    import comfy.utils
    import merge_core as mc

    _skip_unavailable(path)
    mp = pack_module("nodes.engine.merge_adapter")
    pa, pb, _ = _patchers(4, torch.float32)
    small = pb.model.conv.weight.detach()[:, :4].clone()
    comfy.utils.set_attr_param(pb.model, "conv.weight", small)
    delta = torch.full(small.shape, 0.5)
    pb2 = pb.clone()
    pb2.add_patches({"conv.weight": (delta,)}, 1.0, 1.0)
    target = pa.clone()
    patch = mp.make_patch("conv.weight", mc.get_merge_method("Weight sum").steps(0.5, 0),
                          sources={"b": (pb2.get_key_patches()["conv.weight"],)})
    target.add_patches({("conv.weight", (1, 0, 4)): patch})
    A = _handed_over(_w(pa, "conv.weight"), path)
    expected = A.clone()
    expected[:, :4] = (A[:, :4] + small.double() + 0.5) / 2
    _assert_formula(weight_via(target, "conv.weight", path), expected, torch.float32, path, "narrowed")


@pytest.mark.parametrize("path", LOAD_PATHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
def test_lora_patch(dtype, path):
    """ElementalLoRA's patches (ComfyUI's own LoRA adapter at a per-key strength) on every path: what the stock
    `add_patches` at that strength gives on the same path, bit for bit; the formula where it computes in fp32."""
    from comfy.weight_adapter.lora import LoRAAdapter

    _skip_unavailable(path)
    engine = pack_module("nodes.engine.lora_patches")
    (pa, *_) = _patchers(5, dtype)
    g = torch.Generator().manual_seed(50)
    up, down = torch.randn(40, 4, generator=g), torch.randn(4, 48, generator=g)
    adapter = LoRAAdapter({"lora.lin"}, (up.to(dtype), down.to(dtype), 2.0, None, None, None))
    target = pa.clone()
    applied = engine.add_scaled_patches(target, {KEY: adapter}, 0.75, lambda k: 0.5)
    assert applied == {KEY: 0.375}
    stock = pa.clone()
    stock.add_patches({KEY: adapter}, 0.375)
    got = weight_via(target, KEY, path)
    assert torch.equal(got, weight_via(stock, KEY, path)), f"LoRA via {path} differs from the stock LoRA patch"
    if compute_dtype_of(path, dtype) == torch.float32:
        expected = _w(pa, KEY).double() + 0.375 * (2.0 / 4) * (up.to(dtype).double() @ down.to(dtype).double())
        _assert_formula(got, expected, dtype, path, "LoRA")


@pytest.mark.parametrize("path", LOAD_PATHS)
def test_adjust_patches(path):
    """ElementalAdjust's patch tuples (a scale, and a per-channel shift of a bias) on every path."""
    from merge_core.merge.adjust import KeyChange

    _skip_unavailable(path)
    adjust = pack_module("nodes.engine.adjust_patches")
    (pa, *_) = _patchers(6, torch.float16)
    target = pa.clone()
    changes = [("conv_out.weight", KeyChange("x.conv_out.weight", "scale", 0.875)),
               ("conv_out.bias", KeyChange("x.conv_out.bias", "shift", (0.25, -0.5, 0.125, 0.0)))]
    adjust.add_adjust_patches(target, changes)
    W, bias = _w(pa, "conv_out.weight").double(), _w(pa, "conv_out.bias").double()
    _assert_formula(weight_via(target, "conv_out.weight", path), W * 0.875, torch.float16, path, "scale")
    shift = torch.tensor([0.25, -0.5, 0.125, 0.0], dtype=torch.float64)
    _assert_formula(weight_via(target, "conv_out.bias", path), bias + shift, torch.float16, path, "shift")


def test_adapter_survives_reconstruction():
    """What the dynamic loader does to an adapter, stated directly: rebuilt from (loaded_keys, weights) it
    still holds the same parameters (the very objects), so it computes the same merge."""
    import merge_core as mc

    mp = pack_module("nodes.engine.merge_adapter")
    if not has_dynamic_path():
        pytest.skip("this ComfyUI has no comfy.lora.prefetch_prepared_value")
    import comfy.lora

    pa, pb, _ = _patchers(7, torch.float32)
    patch = mp.make_patch(KEY, mc.get_merge_method("Weight sum").steps(0.5, 0),
                          sources={"b": (pb.get_key_patches()[KEY],)})
    rebuilt = comfy.lora.prefetch_prepared_value(patch, [0], None, None, False)
    assert type(rebuilt) is type(patch) and rebuilt is not patch
    assert rebuilt.params is patch.params and rebuilt.params.steps == patch.params.steps != ()


def test_load_contract_passes_on_this_comfyui():
    """The engine's own start-up check (nodes/engine/load_contract.py) finds every patch path of this ComfyUI sound."""
    contract = pack_module("nodes.engine.load_contract")
    internals = pack_module("nodes.engine.comfy_internals")
    assert contract.load_path_problems() == [], (
        f"ComfyUI changed how it computes patches (engine written against {internals.COMFYUI_VERSION_READ})")


def test_load_contract_names_a_broken_path(monkeypatch):
    """A ComfyUI whose patch preparation rebuilt adapters without their `weights` (what it did to the engine's
    adapter before the parameters moved into `weights`) is named by the check, on that path only."""
    contract = pack_module("nodes.engine.load_contract")
    if not has_dynamic_path():
        pytest.skip("this ComfyUI has no comfy.lora.prefetch_prepared_value")
    import comfy.lora
    from comfy.weight_adapter import WeightAdapterBase

    real = comfy.lora.prefetch_prepared_value

    def drops_weights(value, *args):
        if isinstance(value, WeightAdapterBase):
            return type(value)(value.loaded_keys, [])
        return real(value, *args)

    monkeypatch.setattr(comfy.lora, "prefetch_prepared_value", drops_weights)
    problems = contract.load_path_problems()
    assert len(problems) == 1 and problems[0].startswith("dynamic-VRAM patch preparation: IndexError"), problems


def test_dynamic_patcher_never_takes_the_in_place_path():
    """ComfyUI's dynamic patcher (`is_dynamic()` True) holds no patched weights: the XY re-merge must leave
    its keys to ComfyUI's next load (which re-prepares the changed patch lists) instead of recomputing in
    place. ModelPatcherDynamic itself cannot be built on a CPU (its host buffers need comfy_aimdo's CUDA
    library), so a ModelPatcher that answers `is_dynamic()` as it does stands in."""
    import comfy.model_patcher

    internals = pack_module("nodes.engine.comfy_internals")
    (pa, *_) = _patchers(8, torch.float32)
    pa.model.current_weight_patches_uuid = pa.patches_uuid
    pa.model.model_loaded_weight_memory = 1
    pa.model.model_lowvram = False
    assert internals.is_loaded_with_own_patches(pa)

    class AnswersDynamic(comfy.model_patcher.ModelPatcher):
        def is_dynamic(self):
            return True

    pa.__class__ = AnswersDynamic
    assert not internals.is_loaded_with_own_patches(pa)

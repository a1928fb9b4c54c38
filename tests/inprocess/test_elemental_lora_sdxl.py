"""ElementalLoRA on full-size SDXL (marker ``heavy``): a kohya SDXL LoRA with LoRA Block Weight's 12-value list
and an elemental spec, every patched weight against the LoRA formula, key by key.

The model is devkit.fixtures_arch's seeded full-size SDXL ``A``, loaded by comfy.sd.load_checkpoint_guess_config
with an fp16 UNet (the CLIP as ComfyUI loads it: fp16 on the CPU). The LoRA is devkit.loras' ``sdxl`` layout
(kohya names, rank 4, alpha 2): attention projections and proj_in/proj_out in every attention block (IN04,
IN05, IN07, IN08, M00, OUT00-OUT05), conv_in (IN00), conv_out (``out.2``) and two layers of each text encoder
(``lora_te1_`` CLIP-L, ``lora_te2_`` CLIP-G).

Ratios are written out here by hand, not taken from merge_core: LBW's 12-value SDXL form is BASE, IN04, IN05,
IN07, IN08, M00, OUT00..OUT05; blocks it leaves out (here IN00: conv_in) get 0, ``out.`` (conv_out) is in no
LBW block and keeps 1; the text encoders (CLIP-L and CLIP-G alike) are BASE, at ``strength_clip`` x BASE; the
spec then sets OUT01's attn2 and M00's proj_in. For every key the LoRA names, the test checks:
* a key at strength 0 has no patch and the sampler gets the checkpoint file's weight, bit for bit;
* otherwise the patch's strength is strength x ratio, ComfyUI's fp32 patched weight equals the fp32 formula
  ``W + s * alpha/rank * (up @ down)`` computed here bit for bit (and the float64 formula within fp32 rounding,
  on the first rows), and the weight the sampler gets (ComfyUI's patch path: fp32, then cast to fp16, which
  ComfyUI rounds to nearest for fp16) is within one fp16 ulp of it, every element.
A second test does the same strengths with a 20-value SuperMerger ``block_weights`` string (there ``out.``
is OUT08 and IN00..IN03, IN06 and OUT06..OUT08 have values of their own).

Measured (2-core x86_64 CPU, 23.5 GiB, no GPU, ComfyUI 0.3.75, 2026-11-25, other jobs sharing the machine):
136 LoRA modules (112 UNet, 12 CLIP-L, 12 CLIP-G): 114 keys patched and checked (fp32 weight bit for bit;
the sampler's fp16 weight at most 0.5 fp16 ulp from the fp32 formula, i.e. ComfyUI's round to nearest), 22 at
strength 0 equal to the file. Runtime 22.7 s (pytest's total; 16.4 s from loading the 6.9 GB checkpoint to
the end of both tests, PeakProbe's span; a first run 28.4 / 21.7 s; lock wait not counted). Peak RSS (VmHWM, devkit PeakProbe) 13.40 GiB, of it 7.1 GiB
anonymous: the rest is the checkpoint's mapped file pages while ComfyUI loads it. Hence ``heavy``.

    flock /tmp/elemental-heavy.lock $PYTHON -m pytest -q -m heavy tests/inprocess/test_elemental_lora_sdxl.py
"""
from __future__ import annotations

import os

import pytest
import torch

from tests.helpers.arch_checks import TensorFile, dtype_ulp
from devkit.proc_memory import PeakProbe
from tests.helpers.pack import CACHE_DIR, pack_module
from tests.helpers.lora_oracles import assert_float64_close, formula32, lora_modules
from tests.helpers.sd1_sources import merged_weight

pytestmark = pytest.mark.heavy

STRENGTH_MODEL, STRENGTH_CLIP = 0.75, 0.5
# LBW's SDXL LoRA form, in its order; every value dyadic, so strength x ratio is exact.
LBW_BLOCKS = ("BASE", "IN04", "IN05", "IN07", "IN08", "M00", "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05")
LBW = (0.5, 0, 0.5, 1.25, 0.75, 0.25, 1, 0.625, 0.5, 0, 1.5, 0.375)
SPEC = "OUT01:attn2:0.25\nM00:proj_in:0"
SPEC_ENTRIES = (("OUT01", ".attn2.", 0.25), ("M00", ".proj_in.", 0.0))
# SuperMerger's 20 SDXL blocks: BASE, IN00..IN08, M00, OUT00..OUT08.
BW_BLOCKS = ("BASE",) + tuple("IN%02d" % i for i in range(9)) + ("M00",) + tuple("OUT%02d" % i for i in range(9))
BW = (0.25, 0.5, 1, 1, 1, 0.75, 0, 1, 1.5, 0.125, 0.375, 1, 0.625, 0.5, 1, 1.25, 0, 1, 1, 0.875)
NOTES: list[str] = []  # printed with the peak when the module's fixture ends


def block_of(key: str) -> str | None:
    """Our block of a ComfyUI key, written out for SDXL; None for ``out.`` (LBW: no block)."""
    if key.startswith(("clip_l.", "clip_g.")):
        return "BASE"
    parts = key[len("diffusion_model."):].split(".")
    if parts[0] == "input_blocks":
        return "IN%02d" % int(parts[1])
    if parts[0] == "output_blocks":
        return "OUT%02d" % int(parts[1])
    if parts[0] == "middle_block":
        return "M00"
    assert parts[0] == "out", key
    return None


def with_spec(key: str, block: str | None, ratio: float) -> float:
    for spec_block, word, value in SPEC_ENTRIES:
        if block == spec_block and word in key:
            ratio = value
    return ratio


def lbw_ratio(key: str) -> float:
    block = block_of(key)
    ratio = 1.0 if block is None else dict(zip(LBW_BLOCKS, LBW)).get(block, 0.0)  # left out: 0
    return float(with_spec(key, block, ratio))


def bw_ratio(key: str) -> float:
    block = block_of(key) or "OUT08"  # block_weights: out. is OUT08
    return float(with_spec(key, block, dict(zip(BW_BLOCKS, BW))[block]))


def strength_of(key: str, ratio) -> float:
    return (STRENGTH_CLIP if key.startswith("clip_") else STRENGTH_MODEL) * ratio(key)


@pytest.fixture(scope="module")
def sdxl(request, pytestconfig):
    if "heavy" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("full-size SDXL (~9 GiB): run with -m heavy")
    lora_node = pack_module("nodes.lora_nodes")
    import comfy.lora
    import comfy.sd
    import folder_paths
    from devkit.fixtures_arch import checkpoints_dir, ensure_fixture
    from devkit.loras import ensure_sdxl_lora

    folder = os.path.join(CACHE_DIR, "loras")
    path = ensure_sdxl_lora(folder)
    folder_paths.add_model_folder_path("loras", folder)
    ckpt = ensure_fixture(checkpoints_dir(), "sdxl", "A")
    probe = PeakProbe([os.getpid()]).__enter__()
    model, clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(
        ckpt, output_vae=False, output_clip=True, model_options={"dtype": torch.float16})
    key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model,
                                              comfy.lora.model_lora_keys_unet(model.model, {}))
    file = TensorFile(ckpt)
    yield lora_node, model, clip, lora_modules(path, key_map), file
    file.close()
    probe.__exit__(None, None, None)
    with pytestconfig.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print("\n[peak] " + probe.line("test_elemental_lora_sdxl") + "".join("\n" + n for n in NOTES))


def run(lora_node, model, clip, **kw):
    T = lora_node.TextInput
    args = dict(model=model, clip=clip, lora_name="test_lora_sdxl.safetensors", strength_model=STRENGTH_MODEL,
                strength_clip=STRENGTH_CLIP, lbw_weights=",".join(str(v) for v in LBW),
                elemental=T(SPEC, "sdxl"))
    args.update(kw)
    return lora_node.ElementalLoRA.execute(**args).args


def patcher_of(model, clip, key):
    return clip.patcher if key.startswith("clip_") else model


def check_zero_key(new_model, model, file, key):
    """A key at strength 0: no patch, and the sampler's weight is the checkpoint file's, bit for bit."""
    assert key not in new_model.patches, key
    got = merged_weight(new_model, key)
    assert torch.equal(got, file.get_tensor("model." + key).to(got.dtype)), key
    assert torch.equal(got, model.model_state_dict()[key]), key


def check_patched_key(new_model, new_clip, model, clip, key, module, s) -> float:
    """Strength, fp32 weight and the sampler's weight of one patched key; returns its largest error in ulps."""
    import comfy.lora

    kind, t, alpha = module
    target = patcher_of(new_model, new_clip, key)
    base = patcher_of(model, clip, key).model_state_dict()[key]
    (strength, _adapter, strength_model, offset, function), = target.patches[key]
    assert (strength, strength_model, offset, function) == (s, 1.0, None, None), key
    want32 = formula32(base, kind, t, alpha, s)
    assert torch.equal(comfy.lora.calculate_weight(target.patches[key], base.float().clone(), key), want32), key
    assert_float64_close(base, kind, t, alpha, s, want32, key)
    got = merged_weight(target, key)
    assert got.dtype == base.dtype == torch.float16, key
    err = ((got.double() - want32.double()).abs() / dtype_ulp(want32, got.dtype)).max().item()
    assert err <= 1.0, f"{key}: {err} ulp off"
    return err


def test_lbw_every_patched_weight_equals_formula(sdxl):
    lora_node, model, clip, modules, file = sdxl
    new_model, new_clip, report = run(lora_node, model, clip)
    assert len(modules) == 136  # 112 UNet modules (11 attention blocks x 10, conv_in, conv_out), 24 text
    zero, worst, encoders = [], 0.0, set()
    for key, module in modules.items():
        s = strength_of(key, lbw_ratio)
        if s == 0:
            check_zero_key(new_model, model, file, key)
            zero.append(key)
            continue
        worst = max(worst, check_patched_key(new_model, new_clip, model, clip, key, module, s))
        if block_of(key) == "BASE":
            assert s == STRENGTH_CLIP * 0.5, key
            encoders.add(key.split(".")[0])
    assert encoders == {"clip_l", "clip_g"}
    assert len(zero) == 10 + 10 + 1 + 1  # IN04, OUT03, conv_in (IN00, left out of the 12), M00 proj_in
    assert any(k.endswith("out.2.weight") and strength_of(k, lbw_ratio) == STRENGTH_MODEL for k in modules)
    NOTES.append(f"{len(modules) - len(zero)} keys patched, {len(zero)} at 0; max error {worst:.3f} fp16 ulp")
    assert "OUT01     10  0.1875..0.46875 (2 values)" in report, report
    assert "BASE      24  0.25" in report, report


def test_block_weights_strengths(sdxl):
    lora_node, model, clip, modules, file = sdxl
    T = lora_node.TextInput
    new_model, new_clip, _ = run(lora_node, model, clip, lbw_weights="",
                                 block_weights=T(",".join(str(v) for v in BW), "sdxl"))
    zero = 0
    for key in modules:
        s = strength_of(key, bw_ratio)
        patches = patcher_of(new_model, new_clip, key).patches
        assert (patches[key][0][0] if key in patches else 0.0) == s, key
        zero += s == 0
    assert zero == 10 + 10 + 1  # IN05 and OUT05 (weight 0), M00 proj_in (spec)
    conv_out = "diffusion_model.out.2.weight"
    assert strength_of(conv_out, bw_ratio) == STRENGTH_MODEL * 0.875 and conv_out in new_model.patches
    check_patched_key(new_model, new_clip, model, clip, conv_out, modules[conv_out], STRENGTH_MODEL * 0.875)

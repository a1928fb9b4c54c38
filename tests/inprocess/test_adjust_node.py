"""ElementalAdjust on real ComfyUI models: every changed weight, as ComfyUI's own patch path computes it, equals
the Adjust formula written out here; nothing else changes.

SD1.5: the test checkpoint A, loaded by ComfyUI's loader with an fp16 UNet (the file's values exactly, half
the RAM). SDXL, Flux and SD3: ComfyUI's own model classes built on the meta device (a full SDXL would need
~5 GB), with real tensors put in for the six keys Adjust touches; the architecture comes from ComfyUI's model
config exactly as for a loaded checkpoint.
"""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from tests.helpers.pack import pack_module
from tests.helpers.sd1_sources import merged_weight

P = "diffusion_model."
IN_W, IN_B = P + "input_blocks.0.0.weight", P + "input_blocks.0.0.bias"
OUT0_W, OUT0_B = P + "out.0.weight", P + "out.0.bias"
OUT2_W, OUT2_B = P + "out.2.weight", P + "out.2.bias"
SIX = (IN_W, IN_B, OUT0_W, OUT0_B, OUT2_W, OUT2_B)
# Rows BRI, COL1, COL2, COL3 of the colour matrices (SuperMerger's, as docs/xyz-adjust-random.md gives them).
M_SD1 = [[-1, 1 / 3, 2 / 3], [1, 1, 0], [0, -1, -1], [1, 0, 1]]
M_SDXL = [[0, 0, 1], [1, 0, 0], [-1, -1, 0], [-1, 1, 0]]

VALUES = dict(IN=2.5, OUT=-1.5, OUT2=3.0, CONT=1.0, BRI=-2.0, COL1=0.5, COL2=1.5, COL3=-1.0)


def expected(weights: dict, v: dict, matrix) -> dict:
    """key -> adjusted weight: the documented formulas in fp32, cast back to the weight's dtype."""
    cols = [v["BRI"], v["COL1"], v["COL2"], v["COL3"]]
    c = [sum(cols[i] * 0.02 * matrix[i][j] for i in range(4)) for j in range(3)]
    f = {k: w.to(torch.float32) for k, w in weights.items()}
    out = {IN_W: f[IN_W] * (1 - v["IN"] * 0.01), IN_B: f[IN_B] * (1 + v["IN"] * 0.02),
           OUT0_W: f[OUT0_W] * (1 - v["OUT"] * 0.01), OUT0_B: f[OUT0_B] * (1 + v["OUT"] * 0.02),
           OUT2_W: f[OUT2_W] * (1 - v["OUT2"] * 0.01),
           OUT2_B: f[OUT2_B] + torch.tensor([v["CONT"] * 0.02] + c, dtype=torch.float32)}
    return {k: t.to(weights[k].dtype) for k, t in out.items()}


def run(model, **values):
    node = pack_module("nodes.adjust_nodes").ElementalAdjust
    return node.execute(model, **values).args


@pytest.fixture(scope="module")
def sd1_model(checkpoint_paths):
    pack_module("nodes.adjust_nodes")
    import comfy.sd

    model, _clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(
        checkpoint_paths["A"], output_vae=False, output_clip=False, model_options={"dtype": torch.float16})
    with safe_open(checkpoint_paths["A"], "pt") as f:
        originals = {k: f.get_tensor("model." + k) for k in SIX}
    yield model, originals


def test_sd1_changed_keys_equal_the_formulas(sd1_model):
    model, originals = sd1_model
    adjusted, report = run(model, **VALUES)
    assert adjusted is not model and not model.patches  # the input model is untouched
    assert set(adjusted.patches) == set(SIX)
    want = expected(originals, VALUES, M_SD1)
    for key in SIX:
        got = merged_weight(adjusted, key)
        assert got.dtype == torch.float16
        assert torch.equal(got, want[key]), key
        assert not torch.equal(got, originals[key]), f"{key} did not change"
    assert "6 keys changed" in report and "SD1.x" in report
    assert f"{OUT2_W}: x 0.97 (-3%)" in report
    assert f"{IN_B}: x 1.05 (+5%)" in report


def test_sd1_only_some_values_and_stacking(sd1_model):
    model, originals = sd1_model
    once, report = run(model, IN=0.0, OUT=0.0, OUT2=4.0, CONT=0.0, BRI=0.0, COL1=0.0, COL2=0.0, COL3=0.0)
    assert set(once.patches) == {OUT2_W}
    assert report.splitlines()[1] == "1 keys changed:"
    # Adjust on an adjusted model: applied on top, in fp32, like any stacked patch
    twice, _ = run(once, OUT2=-2.0)
    got = merged_weight(twice, OUT2_W)
    want = ((originals[OUT2_W].float() * (1 - 4 * 0.01)) * (1 + 2 * 0.01)).half()
    assert torch.equal(got, want)


def test_all_zero_returns_the_model_unchanged(sd1_model):
    model, _ = sd1_model
    out, report = run(model)
    assert out is model
    assert "no key changed" in report


def _meta_model(config_cls_name: str, unet_config: dict):
    """A ComfyUI model of `config_cls_name` on the meta device, wrapped in a ModelPatcher."""
    import comfy.model_patcher
    import comfy.supported_models as sm

    config = getattr(sm, config_cls_name)(unet_config)
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({}, device=torch.device("meta"))
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)


def test_sdxl_uses_the_sdxl_colour_matrix():
    pack_module("nodes.adjust_nodes")
    import comfy.utils
    from devkit.fixtures_arch import SDXL_UNET

    patcher = _meta_model("SDXL", SDXL_UNET)
    g = torch.Generator().manual_seed(3)
    originals = {}
    for key in SIX:
        shape = comfy.utils.get_attr(patcher.model, key).shape
        originals[key] = torch.randn(shape, generator=g)
        comfy.utils.set_attr_param(patcher.model, key, originals[key].clone())
    adjusted, report = run(patcher, **VALUES)
    assert "SDXL" in report
    want = expected(originals, VALUES, M_SDXL)
    for key in SIX:
        assert torch.equal(merged_weight(adjusted, key), want[key]), key
    # and the SD1 matrix would have given another bias (the matrices really differ on these values)
    assert not torch.equal(want[OUT2_B], expected(originals, VALUES, M_SD1)[OUT2_B])


@pytest.mark.parametrize("name", ["flux", "sd3"])
def test_flux_and_sd3_get_a_clear_error(name):
    pack_module("nodes.adjust_nodes")
    from devkit.fixtures_arch import flux_config, flux_runtime_config, sd3_config

    patcher = _meta_model("Flux", flux_runtime_config(flux_config(1, 1, True))) if name == "flux" else _meta_model("SD3", sd3_config(2))
    with pytest.raises(ValueError, match="Elemental Adjust: Adjust works on SD1, SD2 and SDXL UNets"):
        run(patcher, IN=1.0)

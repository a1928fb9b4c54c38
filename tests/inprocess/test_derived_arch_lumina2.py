"""A second family with no record, Lumina 2 (ComfyUI's `Lumina2` config: NextDiT without Z-Image's pad tokens and
modulation), merged on blocks derived from its own keys: two refiner containers and the main layers, the
embedders before the last container in IN, the final norm and layer in OUT.

The models are ComfyUI's own NextDiT built by the `Lumina2` model-config class at small widths (detection fixes
Lumina 2's width at 2304), seeded fp16, wrapped in ComfyUI's ModelPatcher. The block of each key is stated here
by hand from the module names; every merged weight is checked against A(1-r)+Br.
"""
from __future__ import annotations

import re

import pytest
import torch

from devkit.checkpoints import SEEDS
from devkit.fixtures_families import meta_state_dict, seeded_state_dict
from tests.helpers.arch_checks import assert_rounded_formula
from tests.helpers.pack import pack_module
from tests.helpers.sd1_sources import merged_weight

UNET = "diffusion_model."
LAYOUT = dict(image_model="lumina2", patch_size=2, in_channels=16, qk_norm=True, axes_dims=[8, 12, 12],
              axes_lens=[300, 512, 512], rope_theta=10000.0, ffn_dim_multiplier=4.0, dim=64, n_heads=2,
              n_kv_heads=1, cap_feat_dim=32, n_layers=3)
IN_MODULES = ("x_embedder", "t_embedder", "cap_embedder")
OUT_MODULES = ("norm_final", "final_layer")


def block_of(key: str) -> str:
    m = re.match(r"(noise_refiner|context_refiner|layers)\.(\d+)\.", key)
    if m:
        return {"noise_refiner": "N", "context_refiner": "C", "layers": "L"}[m.group(1)] + f"{int(m.group(2)):02d}"
    top = key.split(".")[0]
    assert top in IN_MODULES + OUT_MODULES, key
    return "IN" if top in IN_MODULES else "OUT"


def lumina2(who: str):
    import comfy.model_patcher
    import comfy.supported_models
    sd = seeded_state_dict(meta_state_dict("Lumina2", LAYOUT), SEEDS[who])
    config = comfy.supported_models.Lumina2(dict(LAYOUT))
    config.set_inference_dtype(torch.float16, None)
    model = config.get_model(dict(sd), "", device=torch.device("cpu"))
    model.load_model_weights(dict(sd), "")  # ComfyUI pops what it loads
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu), sd


@pytest.fixture(scope="module")
def models():
    merge_nodes = pack_module("nodes.merge_nodes")
    (a, sa), (b, sb) = lumina2("A"), lumina2("B")
    yield merge_nodes, a, b, sa, sb


def test_lumina2_blocks_derived_and_every_key_merged_by_its_block(models):
    merge_nodes, a, b, sa, sb = models
    arch = pack_module("nodes.engine.model_info").architecture_of(a)
    assert arch.name.startswith("derived-") and arch.label == "Lumina2 (derived)"
    assert arch.blocks == ("IN", "N00", "N01", "C00", "C01", "L00", "L01", "L02", "OUT")
    values = {blk: (1 + 3 * i) / 32 for i, blk in enumerate(arch.blocks)}
    T = merge_nodes.TextInput
    out = merge_nodes.ElementalMerge.execute(
        model_a=a, model_b=b, mode="Weight sum", alpha=0.5, beta=0.0, print_change=False,
        block_weights_alpha=T(",".join(str(v) for v in values.values())), elemental_alpha=T("L01:attention:1"))
    model, report = out.args[0], out.args[2]
    assert "architecture Lumina2 (derived): derived from its keys" in report
    assert {block_of(k) for k in sa} == set(arch.blocks)
    for k in sorted(sa):
        r = 1.0 if block_of(k) == "L01" and "attention" in k else values[block_of(k)]
        assert_rounded_formula(merged_weight(model, UNET + k), sa[k], sb[k], r, k)

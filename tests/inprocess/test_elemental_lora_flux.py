"""ElementalLoRA on a Flux model: a diffusers-format Flux LoRA with LoRA Block Weight's 61-value list.

The model is devkit.fixtures_arch's flux_dev (1 double, 1 single block, hidden 3072) loaded like UNETLoader
with fp16 weights; the LoRA (devkit.loras.write_flux_lora) has every 2-D weight ComfyUI's Flux key map names,
so the fused q/k/v and proj_mlp slices (patches with an offset into one weight) and ``norm_out.linear`` (a
patch with ComfyUI's scale/shift swap) are covered. Each key's strength and its fp32 patched weight are checked
against the formula written here; with FLUXALL the patches are exactly those of the stock LoraLoaderModelOnly.
"""
from __future__ import annotations

import os

import pytest
import torch

from tests.helpers.pack import CACHE_DIR, pack_module

STRENGTH = 0.75
# LBW's Flux order: CLIP, T5, IN, D00..D18, S00..S37, OUT.
LBW = [0.5, 0.5, 0.25, 0.625] + [1.0] * 18 + [1.5] + [1.0] * 37 + [0.0]
SPEC = "D00:txt_attn:0.125"


def block_of(key: str) -> str:
    part = key[len("diffusion_model."):]
    if part.startswith("double_blocks.0."):
        return "D00"
    if part.startswith("single_blocks.0."):
        return "S00"
    if part.startswith("final_layer."):
        return "OUT"
    assert part.split(".")[0] in ("img_in", "txt_in", "time_in", "vector_in", "guidance_in"), key
    return "IN"


def expected_strength(key: str) -> float:
    if block_of(key) == "D00" and "txt_attn" in key:
        return STRENGTH * 0.125
    return STRENGTH * {"IN": 0.25, "D00": 0.625, "S00": 1.5, "OUT": 0.0}[block_of(key)]


def swap_scale_shift(w: torch.Tensor) -> torch.Tensor:
    """ComfyUI's Flux norm_out conversion, written out: the two halves of dim 0 exchanged."""
    half = w.shape[0] // 2
    return torch.cat([w[half:], w[:half]], dim=0)


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    lora_node = pack_module("nodes.lora_nodes")
    import comfy.sd
    import folder_paths
    from devkit.fixtures_arch import checkpoints_dir, ensure_fixture
    from devkit.loras import ensure_flux_lora, flux_targets

    folder = os.path.join(CACHE_DIR, "loras")
    path = ensure_flux_lora(folder)
    folder_paths.add_model_folder_path("loras", folder)
    model = comfy.sd.load_diffusion_model(ensure_fixture(checkpoints_dir(), "flux_dev", "A"),
                                          model_options={"dtype": torch.float16})
    yield lora_node, model, path, flux_targets()


def run(lora_node, model, **kw):
    args = dict(model=model, clip=None, lora_name="test_lora_flux.safetensors", strength_model=STRENGTH,
                strength_clip=1.0, lbw_weights=",".join(str(v) for v in LBW),
                elemental=lora_node.TextInput(SPEC, "flux"))
    args.update(kw)
    return lora_node.ElementalLoRA.execute(**args).args


def test_every_flux_weight_equals_formula(flux):
    import comfy.lora
    from safetensors.torch import load_file

    lora_node, model, path, targets = flux
    new_model, _, report = run(lora_node, model)
    lora = load_file(path)
    terms: dict[str, list] = {}  # key -> [(LoRA name, offset or None, strength * B @ A, swapped?)]
    base = model.model_state_dict()
    for name, _shape, target in targets:
        key = target if isinstance(target, str) else target[0]
        s = expected_strength(key)
        if s == 0:
            assert key not in new_model.patches, key
            continue
        diff = (s * 1.0) * torch.mm(lora[f"{name}.lora_B.weight"].float(), lora[f"{name}.lora_A.weight"].float())
        offset = target[1] if isinstance(target, tuple) else None
        terms.setdefault(key, []).append((name, offset, diff, isinstance(target, tuple) and offset is None))
    assert len(terms) == 21  # 30 LoRA modules on 23 weights; final_layer's 2 (OUT) are at strength 0
    for key, entries in terms.items():
        patches = new_model.patches[key]
        assert {p[0] for p in patches} == {expected_strength(key)}, key
        # ComfyUI 0.33's key map sends two module names of this file to single_blocks.*.linear2 (attn.to_out and
        # proj_out); its load_lora keeps one patch per (weight, slice), and so does ElementalLoRA
        assert sorted(str(p[3]) for p in patches) == sorted({str(e[1]) for e in entries}), key
        # Some weights take several LoRA modules (single_blocks.*.linear1: a whole-weight one and the q, k, v
        # and mlp slices over it): float addition follows the key's patch order, as calculate_weight does.
        # Each patch is matched to its LoRA module by its up tensor.
        want = base[key].float().clone()
        for p in patches:
            up = p[1].weights[0]
            (name, offset, diff, swapped), = [e for e in entries if e[1] == p[3]
                                              and torch.equal(lora[f"{e[0]}.lora_B.weight"], up)]
            if offset is not None:
                want.narrow(offset[0], offset[1], offset[2]).add_(diff)
            else:
                want.add_(swap_scale_shift(diff) if swapped else diff)
        got = comfy.lora.calculate_weight(patches, base[key].float().clone(), key)
        assert torch.equal(got, want), key
    assert "D00       10  0.09375..0.46875 (2 values)" in report and "OUT        2  0" in report, report


def test_fluxall_is_lora_loader(flux):
    import nodes as comfy_nodes

    lora_node, model, _, _ = flux
    (ref,) = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(model, "test_lora_flux.safetensors", STRENGTH)
    mine, _, _ = run(lora_node, model, lbw_weights="FLUXALL", elemental=None)
    assert mine.patches.keys() == ref.patches.keys() and len(ref.patches) == 23
    for key in ref.patches:
        assert len(mine.patches[key]) == len(ref.patches[key])
        for a, b in zip(mine.patches[key], ref.patches[key]):
            assert (a[0], a[2], a[3], a[4]) == (b[0], b[2], b[3], b[4]), key
            assert all(torch.equal(x, y) for x, y in zip(a[1].weights[:2], b[1].weights[:2])), key

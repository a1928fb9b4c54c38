"""The streaming checkpoint save on real ComfyUI objects, against ComfyUI's own patch path and key names.

Only test_A is loaded (fp16 UNet to halve the RAM). The patches are ComfyUI "diff" patches with strength
pairs like the merge's, on chosen UNet and text-encoder keys. The oracle for each weight is ComfyUI's own
`patch_weight_to_device` (what sampling runs), one key at a time; the oracle for names and shapes is
`BaseModel.state_dict_for_saving`, what the stock save writes. (Every precision against the fp32 file is
tests/e2e/test_save_recipe.py's.)
"""
from __future__ import annotations

import os

import pytest
import torch
from safetensors import safe_open

from tests.helpers.pack import pack_module

UNET_KEYS = ["diffusion_model.input_blocks.0.0.weight", "diffusion_model.input_blocks.0.0.bias",
             "diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
             "diffusion_model.output_blocks.5.1.norm.weight", "diffusion_model.out.2.weight",
             "diffusion_model.time_embed.0.weight"]
CLIP_KEYS = ["clip_l.transformer.text_model.encoder.layers.3.mlp.fc1.weight",
             "clip_l.transformer.text_model.final_layer_norm.bias",
             "clip_l.transformer.text_model.embeddings.token_embedding.weight"]


def _diff_patches(patcher, keys, seed):
    g = torch.Generator().manual_seed(seed)
    sd = patcher.model_state_dict()
    return {k: (torch.randn(sd[k].shape, generator=g, dtype=torch.float32).to(sd[k].dtype),) for k in keys}


@pytest.fixture(scope="module")
def objects(checkpoint_paths):
    writer = pack_module("nodes.engine.checkpoint_writer")
    import comfy.sd

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
        checkpoint_paths["A"], output_vae=True, output_clip=True, model_options={"dtype": torch.float16})
    merged = model.clone()
    merged.add_patches(_diff_patches(model, UNET_KEYS[:3], 1), 0.375, 0.625)  # w*0.625 + 0.375*d
    merged.add_patches(_diff_patches(model, UNET_KEYS[3:], 2), -0.25)          # w - 0.25*d
    clip_m = clip.clone()
    clip_m.add_patches(_diff_patches(clip.patcher, CLIP_KEYS, 3), 0.5, 0.5)
    yield writer, model, merged, clip_m, vae


def _oracle(patcher, key):
    """The weight sampling would use: ComfyUI's patch path for this key, then the original put back."""
    import comfy.utils

    if key not in patcher.patches:
        return comfy.utils.get_attr(patcher.model, key).detach().clone()
    patcher.patch_weight_to_device(key, device_to=torch.device("cpu"))
    got = comfy.utils.get_attr(patcher.model, key).detach().clone()
    comfy.utils.set_attr_param(patcher.model, key, patcher.backup.pop(key).weight)
    return got


def _stock_names(model, clip, vae):
    """Names and dtypes of ComfyUI's own save: the patcher's state_dict_for_saving on 0.33 (the base model's
    now takes the UNet's dict first), the base model's on 0.3.75."""
    owner = model if hasattr(model, "state_dict_for_saving") else model.model
    sd = owner.state_dict_for_saving(clip.get_sd(), vae.get_sd(), None)
    return {k: (v.dtype, tuple(v.shape)) for k, v in sd.items()}


def test_fp32_save_holds_live_weights_and_stock_names(objects, tmp_path):
    writer, base, merged, clip_m, vae = objects
    path = str(tmp_path / "m.safetensors")
    targets = writer.save_checkpoint_streaming(path, merged, clip_m, vae, "fp32", {"k": "v"})
    stock = _stock_names(merged, clip_m, vae)
    with safe_open(path, "pt") as f:
        assert sorted(f.keys()) == sorted(stock) and f.metadata() == {"k": "v"}
        for k, (dtype, shape) in stock.items():
            t = f.get_tensor(k)
            assert tuple(t.shape) == shape, k
            assert t.dtype == (torch.float32 if dtype.is_floating_point else dtype), k
        for key in UNET_KEYS:
            assert torch.equal(f.get_tensor("model." + key), _oracle(merged, key).float()), key
        for key in CLIP_KEYS:
            file_key = key.replace("clip_l.", "cond_stage_model.")
            assert torch.equal(f.get_tensor(file_key), _oracle(clip_m.patcher, key).float()), key
        # unpatched keys are the source's, and the patched ones really changed
        k0 = "diffusion_model.output_blocks.0.0.in_layers.2.weight"
        assert torch.equal(f.get_tensor("model." + k0), _oracle(base, k0).float())
        assert not torch.equal(f.get_tensor("model." + UNET_KEYS[0]), _oracle(base, UNET_KEYS[0]).float())
    assert set(targets.values()) <= {torch.float32, torch.int64}


def test_same_file_when_a_clone_is_loaded_with_its_patches(objects, tmp_path):
    """Sampling patches the shared model in place; the save must still start from the unpatched weights."""
    import comfy.model_management as mm

    writer, base, merged, clip_m, vae = objects
    first, again, other_loaded = (str(tmp_path / n) for n in ("1.safetensors", "2.safetensors", "3.safetensors"))
    writer.save_checkpoint_streaming(first, merged, clip_m, vae, "fp16", {})
    mm.load_models_gpu([merged, clip_m.patcher])     # what a sampler does before running the merge
    writer.save_checkpoint_streaming(again, merged, clip_m, vae, "fp16", {})
    other = base.clone()
    other.add_patches(_diff_patches(base, UNET_KEYS, 9), 1.0)
    mm.load_models_gpu([other])                       # a different clone holds the shared model now
    writer.save_checkpoint_streaming(other_loaded, merged, clip_m, vae, "fp16", {})
    mm.unload_all_models()
    data = open(first, "rb").read()
    assert open(again, "rb").read() == data and open(other_loaded, "rb").read() == data


def test_failed_save_leaves_no_file(objects, tmp_path):
    writer, _, merged, clip_m, vae = objects
    with pytest.raises(ValueError, match="unknown precision 'fp4'"):
        writer.save_checkpoint_streaming(str(tmp_path / "x.safetensors"), merged, clip_m, vae, "fp4", {})
    assert os.listdir(tmp_path) == []


def test_fused_text_encoder_keys_are_rebuilt_from_patched_inputs():
    """SD2/SDXL save OpenCLIP with q/k/v fused into in_proj and text_projection transposed: derived keys."""
    writer = pack_module("nodes.engine.checkpoint_writer")
    import comfy.supported_models as sm

    config = sm.SD20({"context_dim": 1024, "use_linear_in_transformer": True})
    g = torch.Generator().manual_seed(0)
    pre = "clip_h.transformer.text_model."
    base = {pre + f"encoder.layers.0.self_attn.{p}_proj.{w}": torch.randn((8, 8) if w == "weight" else (8,),
                                                                           generator=g)
            for p in "qkv" for w in ("weight", "bias")}
    base[pre + "final_layer_norm.weight"] = torch.randn(8, generator=g)
    base["clip_h.transformer.text_projection.weight"] = torch.randn(8, 6, generator=g)
    patched = {k: v * 2 + 1 for k, v in base.items()}
    calls = []

    def compute(k):
        calls.append(k)
        return patched[k]

    part = writer.Part("text encoder", config.process_clip_state_dict_for_saving, compute, dict(base))
    layout = part.plan()
    expected = config.process_clip_state_dict_for_saving(dict(patched))  # ComfyUI on the patched weights
    assert {k: (v.dtype, tuple(v.shape)) for k, v in expected.items()} == layout
    assert part.renamed == {"cond_stage_model.model.ln_final.weight": pre + "final_layer_norm.weight"}
    assert sorted(part.derived) == ["cond_stage_model.model.text_projection",
                                    "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_bias",
                                    "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"]
    derived = part.rebuild_derived()
    for k in part.derived:
        assert torch.equal(derived[k], expected[k]), k
    assert sorted(calls) == sorted(k for k in base if "final_layer_norm" not in k)

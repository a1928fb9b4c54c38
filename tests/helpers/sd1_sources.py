"""What the in-process engine tests share about their checkpoints (SD1.5; the SD2 calc-mode test reuses the
merge settings): ComfyUI key -> file key, the weights no formula defines, the reference ratios, the half-merge
C, and how a merged weight is read back through ComfyUI's own patch path."""
from __future__ import annotations

import torch

from tests.helpers.pack import pack_module

# The settings both engine tests merge with: alpha and beta differ block by block (all dyadic, within [0, 1],
# so every product is exact and the bounded calc modes accept them).
ALPHA, BETA = 0.5, 0.25
BLOCK_WEIGHTS_ALPHA = ("0.25, 0.5,0.5,0.75,0.75,0.125,0.125,0.875,0.875,1,1,0,0, 0.5, "
                       "0.25,0.25,0.375,0.375,0.625,0.625,0.75,0.75,0.875,0.875,0.5,0.5")
BLOCK_WEIGHTS_BETA = "FLAT_25"

FILE_PREFIX = {"diffusion_model.": "model.diffusion_model.", "clip_l.": "cond_stage_model."}

# SD1 checkpoints have no CLIP-L text projection: ComfyUI builds the layer without initialising it (its
# values are whatever memory held, NaN included), never uses it for SD1 and drops it on save
# (supported_models.SD15 pop_keys). No formula defines its merge, so no test compares it.
UNDEFINED_IN_SD1 = frozenset({"clip_l.transformer.text_projection.weight"})


def file_key(key: str) -> str:
    """The checkpoint file's name for a key of ComfyUI's model or text-encoder state dict."""
    for comfy_prefix, file_prefix in FILE_PREFIX.items():
        if key.startswith(comfy_prefix):
            return file_prefix + key[len(comfy_prefix):]
    raise KeyError(key)


def load_models(checkpoint_paths, names, model_options):
    """{name: (ModelPatcher, CLIP)} loaded by ComfyUI's own checkpoint loader, named as the node would."""
    pack_module("nodes.merge_nodes")  # imports ComfyUI first
    import comfy.sd

    out = {}
    for name in names:
        model, clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(
            checkpoint_paths[name], output_vae=False, output_clip=True, model_options=model_options(name))
        pack_module("nodes.engine.model_info").set_source_name(model, f"test_{name}.safetensors")
        out[name] = (model, clip)
    return out


def run_calc_merge(merge_nodes, models, calc, spec_alpha, spec_beta, arch, **kw):
    """ElementalMerge with calc mode `calc` (and its merge mode) on `models` {"A"/"B"/"C": (model, clip)},
    the shared ratios and the given specs; `kw` overrides any input."""
    from tests.helpers.calc_oracles import CALC_MODE_OF, GAMMA

    T = merge_nodes.TextInput
    (ma, ca), (mb, cb), (mc, cc) = models["A"], models["B"], models["C"]
    args = dict(model_a=ma, model_b=mb, model_c=mc, clip_a=ca, clip_b=cb, clip_c=cc, mode=CALC_MODE_OF[calc],
                alpha=ALPHA, beta=BETA, print_change=False, calc_mode=calc, calc_option=GAMMA,
                block_weights_alpha=T(BLOCK_WEIGHTS_ALPHA), block_weights_beta=T(BLOCK_WEIGHTS_BETA),
                elemental_alpha=T(spec_alpha), elemental_beta=T(spec_beta, arch))
    args.update(kw)
    return merge_nodes.ElementalMerge.execute(**args)


def with_half_merge_c(models):
    """Adds C = A merged with B half and half *as a ComfyUI patch* (a clone of A with B's patches at 0.5/0.5):
    no third checkpoint in RAM, and the three-model calc modes read a source that is itself a merge."""
    (ma, ca), (mb, cb) = models["A"], models["B"]
    mc, cc = ma.clone(), ca.clone()
    mc.add_patches(mb.get_key_patches("diffusion_model."), 0.5, 0.5)
    cc.add_patches(cb.get_key_patches(), 0.5, 0.5)
    models["C"] = (mc, cc)
    return models


def reference_ratios(keys, spec_text, weights_text, ratio, arch_name: str = "sd1"):
    """Per-key ratios from merge_core (tested on its own), every key present."""
    import merge_core as mc

    arch = mc.get_architecture(arch_name)
    res = mc.resolve_ratios(keys, arch, ratio, mc.parse_block_weights(weights_text, arch, alpha=ratio),
                            mc.parse_spec(spec_text, arch, keys=keys))
    return {k: res.ratios.get(k, ratio) for k in keys}


def both_ratios(keys, spec_alpha, spec_beta, arch_name: str = "sd1"):
    """(alpha, beta) per key for the shared block weights and the given specs."""
    return (reference_ratios(keys, spec_alpha, BLOCK_WEIGHTS_ALPHA, ALPHA, arch_name),
            reference_ratios(keys, spec_beta, BLOCK_WEIGHTS_BETA, BETA, arch_name))


def keys_of(models):
    """(UNet keys, text-encoder keys) of model A as ComfyUI names them."""
    unet = list(models["A"][0].model_state_dict(filter_prefix="diffusion_model.").keys())
    clip = list(models["A"][1].patcher.model_state_dict().keys())
    return unet, clip


def merged_weight(patcher, key):
    """A key's weight as the sampler sees it, computed by ComfyUI's patch path and put back right away."""
    import comfy.utils

    if key not in patcher.patches:
        return comfy.utils.get_attr(patcher.model, key).detach()
    patcher.patch_weight_to_device(key, device_to=torch.device("cpu"))
    weight = comfy.utils.get_attr(patcher.model, key).detach()
    backup = patcher.backup.pop(key)
    comfy.utils.set_attr_param(patcher.model, key, backup.weight)
    return weight


def assert_sources_unchanged(models, files, names):
    """Each named source holds no patches and every weight its file stores, to the bit."""
    for name in names:
        model, clip = models[name]
        assert not model.patches and not clip.patcher.patches, f"{name} got patches"
        for patcher, prefix in ((model, "diffusion_model."), (clip.patcher, "clip_l.")):
            for key, weight in patcher.model_state_dict(filter_prefix=prefix).items():
                if file_key(key) in files[name].keys():
                    want = files[name].get_tensor(file_key(key)).to(weight.dtype)
                    assert torch.equal(weight, want), f"{name} {key} changed"

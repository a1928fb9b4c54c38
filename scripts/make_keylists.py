"""Writes merge_core/arch/keylists/<arch>.txt.gz: the real parameter names of each architecture, checkpoint form.

Run once (needs a ComfyUI tree: COMFYUI_DIR), from the repo root:
    COMFYUI_DIR=... python scripts/make_keylists.py [--out merge_core/arch/keylists]

Every model is built with ComfyUI's own classes on the meta device, so no weights are allocated and the
names are exactly what ComfyUI produces and reads. Text-encoder names are turned into checkpoint form the
way ComfyUI saves them (its `process_clip_state_dict_for_saving`), so SD2's CLIP-H and SDXL's CLIP-G are in
OpenCLIP naming as in real checkpoint files. The VAE is left out: merge_core never merges it.
The lists are committed; merge_core reads them at run time without ComfyUI.
"""
from __future__ import annotations

import argparse
import gzip
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Published configurations (as ComfyUI's model_detection / supported_models describe them): one table, shared
# with the test fixtures (devkit/fixtures_arch.py), which the key-list tests load through ComfyUI's detection.
from devkit.fixtures_arch import FLUX_DEV, SD3_MEDIUM, SD21_UNET, SDXL_UNET, meta_flux  # noqa: E402


def _unet(config) -> list[str]:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    m = UNetModel(**config, device="meta", operations=comfy.ops.disable_weight_init)
    return ["model.diffusion_model." + k for k in m.state_dict()]


def _meta_sd(module) -> dict[str, torch.Tensor]:
    _COMFY_TE[:] = list(module.state_dict())  # the CLIP patcher's own names, for the ComfyUI-form list
    return dict(module.state_dict())


# Text-encoder keys in ComfyUI's internal (CLIP patcher) form, set by the builder that ran last.
_COMFY_TE: list[str] = []


def sd1() -> list[str]:
    from devkit.checkpoints import sd15_meta_state_dict
    import comfy.sd1_clip
    _meta_sd(comfy.sd1_clip.SD1ClipModel(device="meta"))
    return [k for k in sd15_meta_state_dict() if not k.startswith("first_stage_model.")]


def sd2() -> list[str]:
    import comfy.text_encoders.sd2_clip as sd2c
    import comfy.supported_models as sm
    clip = sd2c.SD2ClipModel(device="meta")
    sd = _meta_sd(clip)
    ckpt = sm.SD20({}).process_clip_state_dict_for_saving(sd)
    return _unet(SD21_UNET) + sorted(ckpt)


def sdxl() -> list[str]:
    import comfy.sdxl_clip
    import comfy.supported_models as sm
    clip = comfy.sdxl_clip.SDXLClipModel(device="meta")
    ckpt = sm.SDXL({}).process_clip_state_dict_for_saving(_meta_sd(clip))
    return _unet(SDXL_UNET) + sorted(ckpt)


def flux() -> list[str]:
    import comfy.text_encoders.flux as tf
    te = tf.flux_clip()(device="meta")
    _meta_sd(te)
    unet = list(meta_flux(FLUX_DEV, "model.diffusion_model."))  # file names (q/k norms .scale) on any ComfyUI
    return unet + ["text_encoders." + k for k in te.state_dict()]


def sd3() -> list[str]:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT
    import comfy.text_encoders.sd3_clip as t3
    m = MMDiT(**SD3_MEDIUM, device="meta", operations=comfy.ops.disable_weight_init)
    te = t3.sd3_clip()(device="meta")
    _meta_sd(te)
    return ["model.diffusion_model." + k for k in m.state_dict()] + ["text_encoders." + k for k in te.state_dict()]


BUILDERS = {"sd1": sd1, "sd2": sd2, "sdxl": sdxl, "flux": flux, "sd3": sd3}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join("merge_core", "arch", "keylists"))
    p.add_argument("archs", nargs="*", default=list(BUILDERS))
    a = p.parse_args(argv)
    from devkit.comfy_env import import_comfy
    import_comfy(cpu=True)
    os.makedirs(a.out, exist_ok=True)
    for name in a.archs:
        keys = BUILDERS[name]()
        # ComfyUI bookkeeping buffers that are not weights of a checkpoint file.
        keys = [k for k in keys if not k.endswith(("logit_scale",)) and "spiece_model" not in k]
        path = os.path.join(a.out, f"{name}.txt.gz")
        with gzip.GzipFile(path, "wb", mtime=0) as f:
            f.write(("\n".join(keys) + "\n").encode())
        print(f"{name}: {len(keys)} keys -> {path}")
        # The same model as ComfyUI names it inside: model patcher keys and CLIP patcher keys (test data for
        # merge_core.arch.keys.canonical_key).
        comfy_keys = [k[len("model."):] for k in keys if k.startswith("model.diffusion_model.")]
        comfy_keys += [k for k in _COMFY_TE if not k.endswith("logit_scale") and "spiece_model" not in k]
        cpath = os.path.join(a.out, f"{name}.comfy.txt.gz")
        with gzip.GzipFile(cpath, "wb", mtime=0) as f:
            f.write(("\n".join(comfy_keys) + "\n").encode())
        print(f"{name}: {len(comfy_keys)} ComfyUI-form keys -> {cpath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The merges being timed, stated once so that ours and native do the same amount of work.

Full merge (figure 1): ElementalMerge in "Weight sum" with a 10-entry elemental spec over UNet and text
encoder, against native ModelMergeBlocks (UNet) + CLIPMergeSimple (text encoder) at the same average
ratio. Every entry's ratio is strictly between 0 and 1, so both sides patch every key (ours drops keys
whose ratio makes the patch a no-op, which would flatter it).

XY re-merge (figure 2): a "pinpoint element" plot, one element of one block (IN04 attn2: 5 keys) at
8 ratios on top of the full merge. Native's equivalent is re-queueing ModelMergeBlocks with one ratio
changed; ComfyUI then re-patches the whole UNet. (The text encoder is untouched by such a cell on both
sides: ComfyUI caches the CLIP merge and its encoding.)

Ratios: ours' alpha is model B's share; native's `ratio` is model1's (A's) share, hence 1 - alpha.
"""
from __future__ import annotations

MODE = "Weight sum"
ALPHA = 0.5

FULL_SPEC = """\
IN00-IN03::0.3
IN04-IN08:attn1 attn2:0.6
IN09-IN11:NOT attn:0.45
M00::0.55
OUT00-OUT03:ff:0.35
OUT04-OUT07:norm:0.7
OUT08-OUT11::0.4
BASE:mlp:0.25
BASE:self_attn:0.65
IN01 OUT10:proj_in proj_out:0.2
"""

XY_BLOCK, XY_ELEMENT = "IN04", "attn2"
XY_RATIOS = (0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.0)
SMOKE_XY_RATIOS = XY_RATIOS[:2]  # the first cell (a full merge) and one re-merge: CI's bench smoke


def xy_spec(r: float) -> str:
    return FULL_SPEC + f"{XY_BLOCK}:{XY_ELEMENT}:{r}\n"


def spec_entries(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def resolved_alpha(keys, spec_text: str) -> dict:
    """key -> ours' alpha for `keys` (ComfyUI key forms), through merge_core as the node resolves it."""
    from .env import pack_module

    core = pack_module("merge_core")
    arch = core.get_architecture("sd1")
    spec = core.parse_spec(spec_text, arch, keys=list(keys))
    return core.resolve_ratios(tuple(keys), arch, ALPHA, spec=spec).ratios


def native_ratios(unet_keys, clip_keys) -> dict:
    """ModelMergeBlocks input/middle/out and CLIPMergeSimple ratio giving ours' average alpha per part."""
    ours = resolved_alpha(tuple(unet_keys) + tuple(clip_keys), FULL_SPEC)

    def mean(keys):
        vals = [ours.get(k, ALPHA) for k in keys]
        return sum(vals) / len(vals)

    part = {p: [k for k in unet_keys if k.startswith("diffusion_model." + p)]
            for p in ("input_blocks", "middle_block", "output_blocks")}
    return {"input": 1 - mean(part["input_blocks"] or unet_keys),
            "middle": 1 - mean(part["middle_block"] or unet_keys),
            "out": 1 - mean(part["output_blocks"] or unet_keys),
            "clip": 1 - mean(clip_keys), "unet_mean_alpha": mean(unet_keys)}

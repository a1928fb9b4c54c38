"""Which block every parameter belongs to, one data table per architecture.

Block names follow SuperMerger where it has them:

* **SD1 / SD2** (26 blocks): ``BASE, IN00..IN11, M00, OUT00..OUT11``. ``input_blocks.N`` -> ``INnn``,
  ``middle_block`` -> ``M00``, ``output_blocks.N`` -> ``OUTnn``; ``time_embed`` -> ``IN00``; the final
  ``out.`` layers -> ``OUT11``; the text encoder (CLIP-L for SD1, OpenCLIP-H for SD2) -> ``BASE``.
* **SDXL** (20 blocks): ``BASE, IN00..IN08, M00, OUT00..OUT08``; ``time_embed`` and ``label_emb`` -> ``IN00``,
  ``out.`` -> ``OUT08``; both text encoders (``conditioner.embedders.0`` CLIP-L, ``.1`` CLIP-G) -> ``BASE``.
* **SDXL, extended** (``sdxl_ext``, 110 blocks): SuperMerger's extended XL list, ``CLIPL, CLIPG``, one block per
  module of each UNet block and per transformer depth, ``OUT9``, ``TIME``, ``LABEL``; never detected from keys,
  picked by a text (`ALTERNATE_TABLES`; docs/architectures.md).
* **Flux** (61 blocks): ``CLIP, T5, IN, D00..D18, S00..S37, OUT``. ``double_blocks.N`` -> ``Dnn``,
  ``single_blocks.N`` -> ``Snn``; ``IN`` = img_in, txt_in, time_in, vector_in, guidance_in; ``OUT`` =
  final_layer; ``CLIP`` = ``text_encoders.clip_l``; ``T5`` = ``text_encoders.t5xxl``.
* **SD3** (not in SuperMerger; named in the Flux style) (42 blocks): ``CLIP, T5, IN, J00..J37, OUT``.
  ``joint_blocks.N`` -> ``Jnn`` (SD3/3.5 medium use J00..J23, SD3.5 large J00..J37); ``IN`` = x_embedder,
  pos_embed, t_embedder, y_embedder, context_embedder; ``OUT`` = final_layer; ``CLIP`` = both
  ``text_encoders.clip_l`` and ``text_encoders.clip_g``; ``T5`` = ``text_encoders.t5xxl``.
* **Wan 2.1/2.2, Qwen-Image, Krea 2, AuraFlow, Cosmos Predict2** (and **Anima**, its 2B layout plus ``LLM``, the
  LLM adapter): one block per input of ComfyUI's block-merge node for the
  family, in the node's order (``_native``); **Flux.2** and **Chroma**: Flux's layout plus ``MOD`` (their shared
  modulation layers); **Z-Image**: its refiners and layers. Diffusion model only; see `_FAMILIES` and
  docs/architectures.md.

VAE keys (``first_stage_model.``, ``vae.``) belong to no block (`block_of` returns None): in ComfyUI the VAE
is a separate object the user picks, so it is never part of a merge. Keys are matched in canonical form
(see `merge_core.keys`), so every accepted key form gets the same block.
"""
from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass, field
from typing import Iterable

from ..cache import cached
from .keys import OPENCLIP, TextEncoder, canonical_key

_KEYLIST_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keylists")
_U = r"^model\.diffusion_model\."


def _numbered(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i:02d}" for i in range(count))


@dataclass(frozen=True)
class Architecture:
    name: str
    label: str
    blocks: tuple[str, ...]
    # (regex on the canonical name, block template): the first rule that matches decides; a template with
    # "{}" is formatted with the regex's groups as ints ("IN{:02d}" + "4" -> "IN04", "IN{}{}" + "4", "1" -> "IN41").
    rules: tuple[tuple[str, str], ...] = field(repr=False)
    keylist: str = field(default="", repr=False)
    has_base: bool = field(default=False, repr=False)
    # ComfyUI's model-config classes (comfy.supported_models) whose models are this architecture.
    config_classes: tuple[str, ...] = field(default=(), repr=False)
    # Detection (`detect_architecture`): the key set is this architecture when it shows every marker of any
    # one group. `markers` are read on UNet/diffusion-model or whole-checkpoint keys, `text_markers` on a
    # text encoder's keys alone. "input_blocks<=8" stands for "input_blocks indices stop at 8" (SDXL's UNet).
    markers: tuple[tuple[str, ...], ...] = field(default=(), repr=False)
    text_markers: tuple[tuple[str, ...], ...] = field(default=(), repr=False)
    # Its text encoders: ComfyUI's key prefix and the checkpoint's (merge_core.arch.keys converts).
    text_encoders: tuple[TextEncoder, ...] = field(default=(), repr=False)
    # LoRA Block Weight's weight lists for it (value count -> the blocks its values go to, in order), and the
    # canonical-name patterns of the keys LBW gives a block (every other key keeps strength 1 under LBW).
    lbw_forms: dict = field(default_factory=dict, repr=False)
    lbw_keys: tuple[str, ...] = field(default=(), repr=False)
    # SuperMerger's Adjust colour matrix (rows BRI, COL1, COL2, COL3 over latent channels 1..3), where
    # Adjust is defined for it.
    adjust_colours: tuple | None = field(default=None, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "_compiled", tuple((re.compile(p), t) for p, t in self.rules))
        object.__setattr__(self, "_block_set", frozenset(self.blocks))

    def __hash__(self) -> int:  # names are unique; hashing the rule table on every cache lookup would cost
        return hash(self.name)

    def block_of(self, key: str) -> str | None:
        """The block of ``key`` (any accepted form), or None (VAE, unknown keys)."""
        return _block_of(self, key)

    def match_block(self, key: str) -> str | None:
        """`block_of` without the cache: the first rule that matches the canonical name decides."""
        canon = canonical_key(key, self.name)
        block = None
        for pattern, template in self._compiled:
            m = pattern.match(canon)
            if m:
                block = template.format(*(int(g) for g in m.groups() if g is not None)) if "{" in template \
                    else template
                if block not in self._block_set:
                    block = None  # e.g. input_blocks.12 in a layout that has no IN12
                break
        return block

    def default_keys(self) -> list[str]:
        """The built-in checkpoint-form key list (UNet + text encoders, no VAE)."""
        return list(_load_keylist(self.keylist or self.name))

    def group_of(self, block: str) -> str:
        """The family a block belongs to for ranges: "IN" for IN04, "OUT" for OUT11, "D" for D03, ..."""
        m = re.match(r"^([A-Z]+?)(\d\d)$", block)
        return m.group(1) if m else block


@cached(maxsize=1 << 18)
def _block_of(arch: Architecture, key: str) -> str | None:
    return arch.match_block(key)


@cached(maxsize=None)
def _load_keylist(name: str) -> tuple[str, ...]:
    with gzip.open(os.path.join(_KEYLIST_DIR, f"{name}.txt.gz"), "rt", encoding="utf-8") as f:
        return tuple(line.strip() for line in f if line.strip())


_SD_UNET_RULES = lambda last_out: (  # noqa: E731 - shared by SD1/SD2/SDXL, differing in the last OUT block
    (_U + r"input_blocks\.(\d+)\.", "IN{:02d}"),
    (_U + r"time_embed\.", "IN00"),
    (_U + r"label_emb\.", "IN00"),
    (_U + r"middle_block\.", "M00"),
    (_U + r"output_blocks\.(\d+)\.", "OUT{:02d}"),
    (_U + r"out\.", last_out),
)

def _picked(prefix: str, numbers) -> tuple[str, ...]:
    return tuple(f"{prefix}{i:02d}" for i in numbers)


# LoRA Block Weight's lists: 17/26 values for SD1/SD2 (LoRA / LyCORIS), 12/20 for SDXL, 61 for Flux.
_LBW_SD = {17: ("BASE",) + _picked("IN", (1, 2, 4, 5, 7, 8)) + ("M00",) + _picked("OUT", range(3, 12)),
           26: ("BASE",) + _numbered("IN", 12) + ("M00",) + _numbered("OUT", 12)}
_LBW_XL = {12: ("BASE",) + _picked("IN", (4, 5, 7, 8)) + ("M00",) + _numbered("OUT", 6),
           20: ("BASE",) + _numbered("IN", 9) + ("M00",) + _numbered("OUT", 9)}
_LBW_FLUX = {61: ("CLIP", "T5", "IN") + _numbered("D", 19) + _numbered("S", 38) + ("OUT",)}
_LBW_UNET = _U + r"(?:input_blocks|middle_block|output_blocks)\."
# Adjust's colour matrices (SuperMerger's), SD1/SD2 and SDXL latents.
_COLOURS_SD = ((-1.0, 1.0 / 3.0, 2.0 / 3.0), (1.0, 1.0, 0.0), (0.0, -1.0, -1.0), (1.0, 0.0, 1.0))
_COLOURS_XL = ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (-1.0, -1.0, 0.0), (-1.0, 1.0, 0.0))
_CLIP_L = TextEncoder("clip_l.", "text_encoders.clip_l.")
_T5 = TextEncoder("t5xxl.", "text_encoders.t5xxl.")

_SD1_BLOCKS = ("BASE",) + _numbered("IN", 12) + ("M00",) + _numbered("OUT", 12)
_SDXL_BLOCKS = ("BASE",) + _numbered("IN", 9) + ("M00",) + _numbered("OUT", 9)
# SuperMerger's extended XL list ("use extended XL", or a 110-value weight string): CLIP-L and CLIP-G apart, one
# block per ResBlock/transformer/sampler module of every UNet block (INij = input_blocks.i.j, MIDi0 =
# middle_block.i, OUTij = output_blocks.i.j), one per transformer depth t (INijt, MID10t, OUTijt), the final
# out. layers (OUT9), TIME and LABEL; IN0 and VAE keep their places in the list and hold no key here.
_SDXL_EXT_BLOCKS = (
    ("CLIPL", "CLIPG", "IN0", "IN00", "IN10", "IN20", "IN30", "IN40", "IN41", "IN410", "IN411",
     "IN50", "IN51", "IN510", "IN511", "IN60", "IN70", "IN71") + tuple(f"IN71{t}" for t in range(10))
    + ("IN80", "IN81") + tuple(f"IN81{t}" for t in range(10))
    + ("MID00", "MID10") + tuple(f"MID10{t}" for t in range(10)) + ("MID20",)
    + ("OUT00", "OUT01") + tuple(f"OUT01{t}" for t in range(10))
    + ("OUT10", "OUT11") + tuple(f"OUT11{t}" for t in range(10))
    + ("OUT20", "OUT21") + tuple(f"OUT21{t}" for t in range(10)) + ("OUT22",)
    + ("OUT30", "OUT31", "OUT310", "OUT311", "OUT40", "OUT41", "OUT410", "OUT411",
       "OUT50", "OUT51", "OUT510", "OUT511", "OUT52", "OUT60", "OUT70", "OUT80", "OUT9", "TIME", "LABEL", "VAE"))
_SDXL_EXT_RULES = (
    (r"^conditioner\.embedders\.0\.", "CLIPL"),
    (r"^conditioner\.embedders\.1\.", "CLIPG"),
    (_U + r"time_embed\.", "TIME"),
    (_U + r"label_emb\.", "LABEL"),
    (_U + r"input_blocks\.(\d)\.(\d)\.transformer_blocks\.(\d)\.", "IN{}{}{}"),
    (_U + r"input_blocks\.(\d)\.(\d)\.", "IN{}{}"),
    (_U + r"middle_block\.1\.transformer_blocks\.(\d)\.", "MID10{}"),
    (_U + r"middle_block\.(\d)\.", "MID{}0"),
    (_U + r"output_blocks\.(\d)\.(\d)\.transformer_blocks\.(\d)\.", "OUT{}{}{}"),
    (_U + r"output_blocks\.(\d)\.(\d)\.", "OUT{}{}"),
    (_U + r"out\.", "OUT9"),
)
_FLUX_BLOCKS = ("CLIP", "T5", "IN") + _numbered("D", 19) + _numbered("S", 38) + ("OUT",)
_SD3_BLOCKS = ("CLIP", "T5", "IN") + _numbered("J", 38) + ("OUT",)


# ---- Diffusion-model-only families (no text-encoder blocks: ComfyUI loads their text encoders separately) ----
# Where ComfyUI has a block-merge node for the family (comfy_extras/nodes_model_merging_model_specific.py), the
# blocks are that node's inputs, one for one and in the same order, and each rule reproduces the node's
# longest-prefix match, so that Block Weights with the node's values in its order set every key to the ratio
# the node gives it. The node gives a key that none of its inputs names its *first* input's ratio; the last
# rule of such a record (`_U` alone) does the same, so those keys merge with the first block. `None` in a
# table row is the "first block" catch-all.

def _native(first: str, named: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Rules mirroring a native block-merge node: (regex after the UNet prefix, block) in the node's order,
    then every other diffusion-model key to `first`, the block of the node's first input."""
    return tuple((_U + p, b) for p, b in named) + ((_U, first),)


_WAN_BLOCKS = ("IN", "TIME", "TPROJ", "TEXT", "IMG") + _numbered("B", 40) + ("OUT",)
_QWEN_BLOCKS = ("POS", "IN", "TXTNORM", "TXT", "TIME") + _numbered("T", 60) + ("OUT",)
_KREA2_BLOCKS = (("IN", "TMLP", "TXTMLP", "TPROJ") + _numbered("L", 2) + ("PROJ",) + _numbered("R", 2)
                 + _numbered("B", 28) + ("OUT",))
_AURA_BLOCKS = ("IN", "POS", "COND", "REG", "TIME") + _numbered("D", 4) + _numbered("S", 32) + ("MOD", "OUT")
_FLUX2_BLOCKS = ("IN", "MOD") + _numbered("D", 8) + _numbered("S", 48) + ("OUT",)
_CHROMA_BLOCKS = ("IN", "MOD") + _numbered("D", 19) + _numbered("S", 38) + ("OUT",)
_COSMOS2_BLOCKS = ("POS", "IN", "TIME", "TNORM") + _numbered("B", 36) + ("OUT",)
_ANIMA_BLOCKS = ("POS", "IN", "TIME", "TNORM") + _numbered("B", 28) + ("OUT", "LLM")
_ZIMAGE_BLOCKS = ("IN",) + _numbered("N", 2) + _numbered("C", 2) + _numbered("S", 2) + _numbered("L", 30) + ("OUT",)

_COSMOS2_NAMED = ((r"pos_embedder\.", "POS"), (r"x_embedder\.", "IN"), (r"t_embedder\.", "TIME"),
                  (r"t_embedding_norm\.", "TNORM"), (r"blocks\.(\d+)\.", "B{:02d}"), (r"final_layer\.", "OUT"))

_FAMILIES = (
    # ModelMergeWAN2_1: patch_embedding, time_embedding, time_projection, text_embedding, img_emb, blocks.0-39,
    # head. Wan 2.1 1.3B has 30 blocks (B30-B39 stay empty), 14B and Wan 2.2 have 40; only I2V has img_emb.
    Architecture("wan", "Wan 2.1/2.2", _WAN_BLOCKS,
                 config_classes=("WAN21_T2V", "WAN21_I2V", "WAN22_T2V"),
                 markers=(("head.modulation", "patch_embedding."),),
                 rules=_native("IN", ((r"patch_embedding\.", "IN"), (r"time_embedding\.", "TIME"),
                                      (r"time_projection\.", "TPROJ"), (r"text_embedding\.", "TEXT"),
                                      (r"img_emb\.", "IMG"), (r"blocks\.(\d+)\.", "B{:02d}"), (r"head\.", "OUT")))),
    # ModelMergeQwenImage: pos_embeds, img_in, txt_norm, txt_in, time_text_embed, transformer_blocks.0-59,
    # proj_out. No parameter is called pos_embeds (the rotary embedding has none): POS holds what no input
    # names, norm_out.
    Architecture("qwen_image", "Qwen-Image", _QWEN_BLOCKS, config_classes=("QwenImage",),
                 markers=(("time_text_embed.", "txt_norm."),),
                 rules=_native("POS", ((r"pos_embeds\.", "POS"), (r"img_in\.", "IN"), (r"txt_norm\.", "TXTNORM"),
                                       (r"txt_in\.", "TXT"), (r"time_text_embed\.", "TIME"),
                                       (r"transformer_blocks\.(\d+)\.", "T{:02d}"), (r"proj_out\.", "OUT")))),
    # ModelMergeKrea2: first, tmlp, txtmlp, tproj, txtfusion.layerwise_blocks.0-1, txtfusion.projector,
    # txtfusion.refiner_blocks.0-1, blocks.0-27, last.
    Architecture("krea2", "Krea 2", _KREA2_BLOCKS, config_classes=("Krea2",), markers=(("txtfusion.",),),
                 rules=_native("IN", ((r"first\.", "IN"), (r"tmlp\.", "TMLP"), (r"txtmlp\.", "TXTMLP"),
                                      (r"tproj\.", "TPROJ"), (r"txtfusion\.layerwise_blocks\.(\d+)\.", "L{:02d}"),
                                      (r"txtfusion\.projector\.", "PROJ"),
                                      (r"txtfusion\.refiner_blocks\.(\d+)\.", "R{:02d}"),
                                      (r"blocks\.(\d+)\.", "B{:02d}"), (r"last\.", "OUT")))),
    # ModelMergeAuraflow: init_x_linear, positional_encoding, cond_seq_linear, register_tokens, t_embedder,
    # double_layers.0-3, single_layers.0-31, modF, final_linear (positional_encoding and register_tokens are
    # names without a dot in the node: prefixes of the bare parameters).
    Architecture("auraflow", "AuraFlow", _AURA_BLOCKS, config_classes=("AuraFlow",),
                 markers=(("double_layers.",), ("single_layers.", "register_tokens")),
                 rules=_native("IN", ((r"init_x_linear\.", "IN"), (r"positional_encoding", "POS"),
                                      (r"cond_seq_linear\.", "COND"), (r"register_tokens", "REG"),
                                      (r"t_embedder\.", "TIME"), (r"double_layers\.(\d+)\.", "D{:02d}"),
                                      (r"single_layers\.(\d+)\.", "S{:02d}"), (r"modF\.", "MOD"),
                                      (r"final_linear\.", "OUT")))),
    # Flux.2 (dev: 8 double + 48 single blocks; Klein 4B 5 + 20, Klein 9B 8 + 24): Flux.1's names plus three
    # global modulation layers shared by every block (MOD). No native node in ComfyUI.
    Architecture("flux2", "Flux.2", _FLUX2_BLOCKS, config_classes=("Flux2",),
                 markers=(("double_stream_modulation_img.",), ("single_stream_modulation.",)), rules=(
        (_U + r"double_blocks\.(\d+)\.", "D{:02d}"),
        (_U + r"single_blocks\.(\d+)\.", "S{:02d}"),
        (_U + r"(?:img_in|txt_in|time_in|guidance_in)\.", "IN"),
        (_U + r"(?:double_stream_modulation_img|double_stream_modulation_txt|single_stream_modulation)\.", "MOD"),
        (_U + r"final_layer\.", "OUT"),
    )),
    # Chroma: Flux.1 schnell's 19 double + 38 single blocks without per-block modulation weights; the
    # distilled_guidance_layer (an MLP that computes every block's modulation) is MOD. No native node.
    Architecture("chroma", "Chroma", _CHROMA_BLOCKS, config_classes=("Chroma",),
                 markers=(("distilled_guidance_layer.", "double_blocks."),), rules=(
        (_U + r"double_blocks\.(\d+)\.", "D{:02d}"),
        (_U + r"single_blocks\.(\d+)\.", "S{:02d}"),
        (_U + r"(?:img_in|txt_in)\.", "IN"),
        (_U + r"distilled_guidance_layer\.", "MOD"),
        (_U + r"final_layer\.", "OUT"),
    )),
    # Z-Image (Lumina 2's NextDiT at width 3840, 30 layers): two noise and two context refiner blocks (N, C), the
    # SigLIP refiner blocks of its image-conditioned variant (S), the main layers (L). No native node. Its pad
    # tokens are what tells it from Lumina 2 by keys (ComfyUI's detection reads the same key).
    Architecture("zimage", "Z-Image", _ZIMAGE_BLOCKS, config_classes=("ZImage",),
                 markers=(("cap_pad_token", "noise_refiner."),), rules=(
        (_U + r"noise_refiner\.(\d+)\.", "N{:02d}"),
        (_U + r"context_refiner\.(\d+)\.", "C{:02d}"),
        (_U + r"siglip_refiner\.(\d+)\.", "S{:02d}"),
        (_U + r"layers\.(\d+)\.", "L{:02d}"),
        (_U + r"(?:x_embedder|t_embedder|cap_embedder|siglip_embedder|x_pad_token|cap_pad_token|siglip_pad_token)"
              r"(?:\.|$)", "IN"),
        (_U + r"final_layer\.", "OUT"),
    )),
    # ModelMergeCosmosPredict2_14B: pos_embedder, x_embedder, t_embedder, t_embedding_norm, blocks.0-35,
    # final_layer (the 2B node stops at blocks.27: B28-B35 stay empty on 2B models). The rotary position
    # embedding has no parameter: POS holds what no input names.
    Architecture("cosmos_predict2", "Cosmos Predict2", _COSMOS2_BLOCKS,
                 config_classes=("CosmosT2IPredict2", "CosmosI2VPredict2"),
                 markers=(("t_embedding_norm.", "x_embedder.proj."),),
                 rules=_native("POS", _COSMOS2_NAMED)),
    # Anima: Cosmos Predict2 2B plus an LLM adapter (llm_adapter: 6 transformer blocks that turn the Qwen3 text
    # encoder's output into cross-attention context). No node of its own: ModelMergeCosmosPredict2_2B's blocks
    # and, after them, LLM for the adapter (that node gives the adapter its first input's ratio; Block Weights
    # with the node's values and POS's value again for LLM give the node's weights).
    Architecture("anima", "Anima", _ANIMA_BLOCKS, config_classes=("Anima",),
                 markers=(("llm_adapter.", "t_embedding_norm."),),
                 rules=_native("POS", ((r"llm_adapter\.", "LLM"),) + _COSMOS2_NAMED)),
)

ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("sd1", "SD1.x", _SD1_BLOCKS, has_base=True,
                 rules=_SD_UNET_RULES("OUT11") + ((r"^cond_stage_model\.", "BASE"),),
                 config_classes=("SD15", "SD15_instructpix2pix"),
                 markers=(("input_blocks.",), ("cond_stage_model.transformer.",)), text_markers=(("clip_l.",),),
                 text_encoders=(TextEncoder("clip_l.", "cond_stage_model."),),
                 lbw_forms=_LBW_SD, adjust_colours=_COLOURS_SD,
                 lbw_keys=(_LBW_UNET, r"^cond_stage_model\.transformer\.text_model\.encoder\.")),
    Architecture("sd2", "SD2.x", _SD1_BLOCKS, has_base=True,
                 rules=_SD_UNET_RULES("OUT11") + ((r"^cond_stage_model\.", "BASE"),),
                 config_classes=("SD20", "SD21UnclipL", "SD21UnclipH"),
                 # a UNet-only SD2 key set has SD1's names (and blocks): SD2 is told by its OpenCLIP-H
                 markers=(("cond_stage_model.model.",), ("input_blocks.", "clip_h."),
                          ("cond_stage_model.transformer.", "clip_h.")),
                 text_markers=(("clip_h.",),),
                 text_encoders=(TextEncoder("clip_h.", "cond_stage_model.model.", OPENCLIP),),
                 lbw_forms=_LBW_SD, adjust_colours=_COLOURS_SD,
                 lbw_keys=(_LBW_UNET, r"^cond_stage_model\.model\.transformer\.resblocks\.")),
    Architecture("sdxl", "SDXL", _SDXL_BLOCKS, has_base=True,
                 rules=_SD_UNET_RULES("OUT08") + ((r"^conditioner\.embedders\.[01]\.", "BASE"),),
                 config_classes=("SDXL", "SDXL_instructpix2pix"),
                 markers=(("label_emb.",), ("conditioner.embedders.",), ("input_blocks<=8", "middle_block.")),
                 text_markers=(("clip_g.",),),
                 text_encoders=(TextEncoder("clip_l.", "conditioner.embedders.0."),
                                TextEncoder("clip_g.", "conditioner.embedders.1.model.", OPENCLIP)),
                 lbw_forms=_LBW_XL, adjust_colours=_COLOURS_XL,
                 lbw_keys=(_LBW_UNET, r"^conditioner\.embedders\.0\.transformer\.text_model\.encoder\.",
                           r"^conditioner\.embedders\.1\.model\.transformer\.resblocks\.")),
    # The same models as "sdxl" with SuperMerger's extended block list: never detected from keys (no markers,
    # no config class); a text picks it (`ALTERNATE_TABLES`, merge_core.merge.merge_ratios).
    Architecture("sdxl_ext", "SDXL (extended, 110 blocks)", _SDXL_EXT_BLOCKS, keylist="sdxl",
                 rules=_SDXL_EXT_RULES,
                 text_encoders=(TextEncoder("clip_l.", "conditioner.embedders.0."),
                                TextEncoder("clip_g.", "conditioner.embedders.1.model.", OPENCLIP))),
    Architecture("flux", "Flux", _FLUX_BLOCKS, config_classes=("Flux", "FluxInpaint", "FluxSchnell"),
                 markers=(("double_blocks.",), ("single_blocks.",)), text_markers=(("t5xxl.",),),
                 text_encoders=(_CLIP_L, _T5), lbw_forms=_LBW_FLUX,
                 lbw_keys=(_U + r"(?:double_blocks|single_blocks|img_in|txt_in|time_in|vector_in|guidance_in|"
                           r"final_layer)\.", r"^text_encoders\.(?:clip_l|t5xxl)\."), rules=(
        (_U + r"double_blocks\.(\d+)\.", "D{:02d}"),
        (_U + r"single_blocks\.(\d+)\.", "S{:02d}"),
        (_U + r"(?:img_in|txt_in|time_in|vector_in|guidance_in)\.", "IN"),
        (_U + r"final_layer\.", "OUT"),
        (r"^text_encoders\.clip_l\.", "CLIP"),
        (r"^text_encoders\.t5xxl\.", "T5"),
    )),
    Architecture("sd3", "SD3", _SD3_BLOCKS, config_classes=("SD3",), markers=(("joint_blocks.",),),
                 text_markers=(("t5xxl.", "clip_g."),),
                 text_encoders=(_CLIP_L, TextEncoder("clip_g.", "text_encoders.clip_g."), _T5), rules=(
        (_U + r"joint_blocks\.(\d+)\.", "J{:02d}"),
        (_U + r"(?:x_embedder|pos_embed|t_embedder|y_embedder|context_embedder)(?:\.|$)", "IN"),
        (_U + r"final_layer\.", "OUT"),
        (r"^text_encoders\.clip_[lg]\.", "CLIP"),
        (r"^text_encoders\.t5xxl\.", "T5"),
    )),
) + _FAMILIES}

_ALIASES = {"sd15": "sd1", "sd1.5": "sd1", "sd1x": "sd1", "sd21": "sd2", "sd2.1": "sd2", "sd20": "sd2",
            "xl": "sdxl", "sd3.5": "sd3", "sd35": "sd3", "wan21": "wan", "wan2.1": "wan", "wan22": "wan",
            "wan2.2": "wan", "qwen": "qwen_image", "qwenimage": "qwen_image", "qwen-image": "qwen_image",
            "krea 2": "krea2", "aura": "auraflow", "flux.2": "flux2", "klein": "flux2", "z-image": "zimage",
            "z_image": "zimage", "cosmos": "cosmos_predict2", "predict2": "cosmos_predict2"}
# Other block tables of the same models (same keys, another block list), picked by the text, never by keys:
# detected architecture -> the tables a spec or weight string written for them is resolved with instead.
ALTERNATE_TABLES = {"sdxl": ("sdxl_ext",)}
# Architectures derived at run time from a model's own keys, by name (merge_core.arch.derived.register).
DERIVED: dict[str, Architecture] = {}


def get_architecture(name) -> Architecture:
    """The architecture called ``name`` (case-insensitive; an Architecture is returned as is)."""
    if isinstance(name, Architecture):
        return name
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in ARCHITECTURES:
        if key in DERIVED:
            return DERIVED[key]
        raise ValueError(f"unknown architecture {name!r}; valid: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[key]


# Most specific first: the first architecture whose markers the key set shows is the answer; text-encoder
# markers are read only when no diffusion-model marker decided.
# Flux.2 and Chroma show Flux.1's double_blocks/single_blocks too, so they are asked first.
DETECTION_ORDER = ("flux2", "chroma", "flux", "sd3", "wan", "qwen_image", "krea2", "auraflow", "anima",
                   "cosmos_predict2", "zimage", "sdxl", "sd2", "sd1")
TEXT_DETECTION_ORDER = ("sd3", "flux", "sdxl", "sd2", "sd1")
_MARKERS = ("double_blocks.", "single_blocks.", "joint_blocks.", "label_emb.", "input_blocks.", "middle_block.",
            "double_stream_modulation_img.", "single_stream_modulation.", "distilled_guidance_layer.",
            "head.modulation", "patch_embedding.", "time_text_embed.", "txt_norm.", "txtfusion.", "double_layers.",
            "single_layers.", "register_tokens", "cap_pad_token", "noise_refiner.", "llm_adapter.", "t_embedding_norm.",
            "x_embedder.proj.",
            "conditioner.embedders.", "cond_stage_model.model.", "cond_stage_model.transformer.",
            "first_stage_model.")
_TEXT_PREFIXES = ("clip_l.", "clip_g.", "clip_h.", "t5xxl.")
_INPUT_INDEX = re.compile(r"(?:^|\.)input_blocks\.(\d+)\.")
BY_CONFIG_CLASS = {cls: a.name for a in ARCHITECTURES.values() for cls in a.config_classes}


def _shows(seen: set, groups) -> bool:
    return any(all(m in seen for m in group) for group in groups)


def detect_architecture(keys: Iterable[str]) -> Architecture:
    """The architecture of a key set (checkpoint or ComfyUI form; UNet, text encoders, or both), from the
    records' detection markers in DETECTION_ORDER, then their text-encoder markers."""
    seen: set[str] = set()
    max_input = -1
    count = 0
    samples: list[str] = []
    for key in keys:
        count += 1
        if len(samples) < 5:
            samples.append(key)
        seen.update(m for m in _MARKERS if m in key)
        seen.update(p for p in _TEXT_PREFIXES if key.startswith(p) or key.startswith("text_encoders." + p))
        m = _INPUT_INDEX.search(key)
        if m:
            max_input = max(max_input, int(m.group(1)))
    if 0 <= max_input <= 8:
        seen.add("input_blocks<=8")
    for order, field_name in ((DETECTION_ORDER, "markers"), (TEXT_DETECTION_ORDER, "text_markers")):
        for name in order:
            if _shows(seen, getattr(ARCHITECTURES[name], field_name)):
                return ARCHITECTURES[name]
    what = ", ".join(sorted(m for m in seen if m != "input_blocks<=8")) or "none"
    raise ValueError(
        f"unknown model layout: {count} keys, markers seen: {what}; first keys: {samples}. "
        f"Known: {', '.join(a.label for a in ARCHITECTURES.values())} (UNet input_blocks/middle_block, "
        "Flux double_blocks/single_blocks, SD3 joint_blocks, the markers of docs/architectures.md, or their text "
        "encoders)")

"""Block tables and key lists against the keys ComfyUI itself holds for SD2, SDXL, SD3 and Flux models.

No weights are needed: each fixture's checkpoint-form layout (devkit.fixtures_arch, built from ComfyUI's
classes) goes through ComfyUI's own detection (`model_config_from_unet`, as the stock loaders call it), then
ComfyUI builds the model and text encoder it detected on the meta device. Their keys are exactly what a
loaded ModelPatcher and CLIP hold, at no memory cost, so every check below runs in CI. The blocks each key
must land in are stated here by hand (SuperMerger's layout), not read from merge_core.
"""
from __future__ import annotations

import functools
import re

import pytest

from devkit.fixtures_arch import FIXTURES, SD3_MEDIUM, SD35_LARGE, FLUX_DEV, FLUX_SCHNELL, meta_flux, meta_mmdit

ARCH = {"sd2v": "sd2", "sdxl": "sdxl", "sd3": "sd3", "flux_dev": "flux", "flux_schnell": "flux"}
SKIP_SUFFIXES = ("position_ids", "logit_scale")  # buffers no merge touches
# Keys ComfyUI's CLIP holds but its own save drops (SDXL's unused CLIP-L projection): absent from real files
# and from the key lists; the loader leaves them at their initial value.
SAVE_DROPS = {"sdxl": {"clip_l.transformer.text_projection.weight"}}


@pytest.fixture(autouse=True, scope="module")
def _comfy_imported():
    from devkit.comfy_env import import_comfy
    import_comfy()


def _comfy_detect(meta: dict):
    """(model config, unet prefix) the way comfy.sd's loaders detect a state dict."""
    import comfy.model_detection as md
    prefix = md.unet_prefix_from_state_dict(meta)
    if not any(k.startswith(prefix) for k in meta):
        prefix = ""  # a diffusion-model-only file (load_diffusion_model_state_dict does the same)
    return md.model_config_from_unet(meta, prefix), prefix


@functools.lru_cache(maxsize=None)
def _loaded_keys(kind: str) -> tuple[object, list[str], list[str]]:
    """(model config, ComfyUI's UNet keys 'diffusion_model.…', its text-encoder keys) for a fixture."""
    import comfy.model_base
    meta = FIXTURES[kind].build()
    config, prefix = _comfy_detect(meta)
    assert config is not None, f"{kind}: ComfyUI's detection found no model"
    if kind == "sd2v":  # model_type() reads a tensor's std, which a meta tensor has not: build it directly
        model = comfy.model_base.BaseModel(config, comfy.model_base.ModelType.V_PREDICTION, device="meta")
    else:
        model = config.get_model(meta, prefix, device="meta")
    unet = ["diffusion_model." + k for k in model.diffusion_model.state_dict()]
    clip_sd = config.process_clip_state_dict(meta)
    te = []
    if clip_sd:
        clip_model = config.clip_target(clip_sd).clip(device="meta")
        te = [k for k in clip_model.state_dict() if not k.endswith(SKIP_SUFFIXES)]
        missing = set(te) - set(clip_sd) - SAVE_DROPS.get(ARCH[kind], set())
        assert not missing, f"{kind}: the text encoder needs keys the file lacks: {sorted(missing)[:5]}"
    return config, unet, te


# Test-side block rules (SuperMerger's layout), on ComfyUI's internal names.
def expected_block(arch: str, key: str) -> str | None:
    k = key[len("diffusion_model."):] if key.startswith("diffusion_model.") else None
    if arch in ("sd2", "sdxl"):
        last = "OUT11" if arch == "sd2" else "OUT08"
        if k is None:
            return "BASE" if key.startswith(("clip_h.", "clip_l.", "clip_g.")) else None
        m = re.match(r"(input|output)_blocks\.(\d+)\.", k)
        if m:
            return ("IN" if m.group(1) == "input" else "OUT") + f"{int(m.group(2)):02d}"
        return {"time_embed": "IN00", "label_emb": "IN00", "middle_block": "M00", "out": last}.get(k.split(".")[0])
    if k is None:
        return {"clip_l": "CLIP", "clip_g": "CLIP", "t5xxl": "T5"}.get(key.split(".")[0])
    m = re.match(r"(double_blocks|single_blocks|joint_blocks)\.(\d+)\.", k)
    if m:
        return {"double_blocks": "D", "single_blocks": "S", "joint_blocks": "J"}[m.group(1)] + f"{int(m.group(2)):02d}"
    head = k.split(".")[0]
    if head in ("img_in", "txt_in", "time_in", "vector_in", "guidance_in", "x_embedder", "pos_embed",
                "t_embedder", "y_embedder", "context_embedder"):
        return "IN"
    return "OUT" if head == "final_layer" else None


@pytest.mark.parametrize("kind", ["sd2v", "sdxl", "sd3", "flux_dev", "flux_schnell"])
def test_loaded_keys_map_to_blocks_and_key_list(kind):
    """Every key ComfyUI holds for the fixture is in the architecture's key list (canonical form) and in the
    block the test expects; the detected config class is the one the fixture claims."""
    import merge_core as mc
    config, unet, te = _loaded_keys(kind)
    assert type(config).__name__ == FIXTURES[kind].detected_as
    arch = mc.get_architecture(ARCH[kind])
    keylist = set(arch.default_keys())
    wrong, unlisted = [], []
    for key in unet + te:
        if arch.block_of(key) != expected_block(arch.name, key):
            wrong.append((key, arch.block_of(key), expected_block(arch.name, key)))
        if mc.canonical_key(key, arch) not in keylist and key not in SAVE_DROPS.get(arch.name, ()):
            unlisted.append(key)
    assert not wrong, f"{len(wrong)} keys in the wrong block, e.g. {wrong[:5]}"
    assert not unlisted, f"{len(unlisted)} keys missing from the {arch.name} key list, e.g. {unlisted[:5]}"
    assert all(expected_block(arch.name, k) is not None for k in unet), "a UNet key belongs to no block"


def test_sdxl_label_emb_and_out_blocks():
    """SDXL's class embedding goes with IN00 and its final layers with OUT08, as in SuperMerger."""
    _, unet, te = _loaded_keys("sdxl")
    import merge_core as mc
    arch = mc.get_architecture("sdxl")
    label = [k for k in unet if k.startswith("diffusion_model.label_emb.")]
    out = [k for k in unet if k.startswith("diffusion_model.out.")]
    assert len(label) == 4 and len(out) == 4, (label, out)
    assert {arch.block_of(k) for k in label} == {"IN00"} and {arch.block_of(k) for k in out} == {"OUT08"}
    assert {arch.block_of(k) for k in te} == {"BASE"}
    assert any(k.startswith("clip_g.") for k in te) and any(k.startswith("clip_l.") for k in te)


def _blocks_of(arch_name: str, keys) -> set:
    import merge_core as mc
    arch = mc.get_architecture(arch_name)
    return {arch.block_of("diffusion_model." + k) for k in keys}


@pytest.mark.parametrize("config,depth", [(SD3_MEDIUM, 24), (SD35_LARGE, 38)], ids=["sd3-medium", "sd3.5-large"])
def test_sd3_layouts(config, depth):
    """SD3-medium (24 joint blocks) and SD3.5-large (38, RMS q/k norms) by key layout: ComfyUI detects the
    depth from the keys, and every key lands in J00..J(depth-1), IN or OUT."""
    meta = meta_mmdit(config)
    detected, prefix = _comfy_detect(meta)
    assert type(detected).__name__ == "SD3" and detected.unet_config["depth"] == depth
    keys = [k[len(prefix):] for k in meta]
    blocks = _blocks_of("sd3", keys)
    assert None not in blocks
    assert blocks == {f"J{i:02d}" for i in range(depth)} | {"IN", "OUT"}
    for k in keys:
        assert _blocks_of("sd3", [k]) == {expected_block("sd3", "diffusion_model." + k)}, k
    if depth == 24:
        import merge_core as mc
        listed = {k for k in mc.get_architecture("sd3").default_keys() if k.startswith("model.diffusion_model.")}
        assert listed == set(meta), "sd3 key list differs from ComfyUI's SD3-medium"


@pytest.mark.parametrize("config,guidance", [(FLUX_DEV, True), (FLUX_SCHNELL, False)], ids=["dev", "schnell"])
def test_flux_full_layouts(config, guidance):
    """Full Flux dev / schnell (19 double, 38 single blocks): ComfyUI detects them, the key list is dev's,
    and every key lands in D00..D18, S00..S37, IN or OUT."""
    import merge_core as mc
    meta = meta_flux(config)
    detected, _ = _comfy_detect(meta)
    assert type(detected).__name__ == ("Flux" if guidance else "FluxSchnell")
    blocks = _blocks_of("flux", meta)
    assert blocks == {f"D{i:02d}" for i in range(19)} | {f"S{i:02d}" for i in range(38)} | {"IN", "OUT"}
    listed = {k[len("model.diffusion_model."):] for k in mc.get_architecture("flux").default_keys()
              if k.startswith("model.diffusion_model.")}
    guidance_keys = {k for k in listed if k.startswith("guidance_in.")}
    assert len(guidance_keys) == 4
    assert set(meta) == (listed if guidance else listed - guidance_keys)


def test_openclip_g_positional_embedding_and_text_projection_merge_at_base():
    """The deliberate difference from SuperMerger (docs/architectures.md): OpenCLIP-G's positional_embedding
    and text_projection have no 'weight'/'bias' in their checkpoint names, so SuperMerger leaves them at A.
    Here they are text-encoder keys like the others: BASE ratio, and `conditioner.embedders.1` selects them."""
    import merge_core as mc
    arch = mc.get_architecture("sdxl")
    _, _, te = _loaded_keys("sdxl")
    pos = "clip_g.transformer.text_model.embeddings.position_embedding.weight"
    proj = "clip_g.transformer.text_projection.weight"
    assert pos in te and proj in te
    assert mc.canonical_key(pos, arch) == "conditioner.embedders.1.model.positional_embedding"
    assert mc.canonical_key(proj, arch) == "conditioner.embedders.1.model.text_projection"
    weights = mc.parse_block_weights("0.3," + ",".join(["0"] * 19), arch, alpha=0.5)
    spec = mc.parse_spec("BASE:conditioner.embedders.1:0.7", arch, keys=te)
    res = mc.resolve_ratios(te, arch, 0.5, block_weights=weights)
    assert res.ratios[pos] == 0.3 and res.ratios[proj] == 0.3
    res = mc.resolve_ratios(te, arch, 0.5, block_weights=weights, spec=spec)
    assert res.ratios[pos] == 0.7 and res.ratios[proj] == 0.7
    assert all(res.ratios[k] == (0.7 if k.startswith("clip_g.") else 0.3) for k in te)

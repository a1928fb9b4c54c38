"""Wan 2.1/2.2, Qwen-Image, Krea 2, AuraFlow, Cosmos Predict2, Anima, Flux.2, Chroma and Z-Image: detection, block tables, and merges that match
ComfyUI's own block-merge nodes bit for bit.

Models come from devkit.fixtures_families (ComfyUI's own classes). The published layouts are checked on the meta
device (no memory): ComfyUI's detection names the family's config class, the pack maps that class and the key
set to the family's record, and every key lands in the block the test expects. The block a key must land in
is read, for the families ComfyUI has a block-merge node for, off that node's own inputs (longest matching
prefix, else the node's first input: ComfyUI's rule, restated here), position by position against the
record's blocks: so the record partitions the keys exactly as the node does, in the node's order.

The merges use small seeded fp16 models: Wan, Krea 2 and Flux.2 loaded by `comfy.sd.load_diffusion_model_state_dict`
(ComfyUI's detection picks the config); Qwen-Image, AuraFlow, Chroma and Z-Image, whose detection fixes widths of
0.5-1.7 GiB models, built by their model-config class at small widths. Merged weights are read through
ComfyUI's own `patch_model` (with its object patches).
"""
from __future__ import annotations

import functools
import re

import pytest
import torch

from devkit.fixtures_families import FAMILIES, full_keys, meta_state_dict, tiny_model
from tests.helpers.arch_checks import assert_rounded_formula
from tests.helpers.pack import pack_module
from tests.unit.conftest import EMPTY_BLOCKS

U = "model.diffusion_model."
NATIVE = [n for n, f in FAMILIES.items() if f.native_node]

# Keys ComfyUI's patch_model leaves at A's weight (parameters held directly by a module that also has
# sub-modules with parameters), by family: the native nodes' patches on them change nothing, nor do ours.
UNPATCHED = {"wan": re.compile(r"^(?:blocks\.\d+\.modulation|head\.modulation)$"),
             "auraflow": re.compile(r"^(?:positional_encoding|register_tokens)$"),
             "zimage": re.compile(r"^(?:x_pad_token|cap_pad_token|siglip_pad_token)$")}


@pytest.fixture(scope="module", autouse=True)
def _comfy():
    pack_module("nodes.merge_nodes")  # imports ComfyUI first
    yield
    _models.cache_clear()  # the models go with the module, while ComfyUI can still detach them


def native_inputs(node: str) -> list[str]:
    """The ratio inputs of a ComfyUI block-merge node, in its order."""
    import comfy_extras.nodes_model_merging_model_specific as specific
    required = specific.NODE_CLASS_MAPPINGS[node].INPUT_TYPES()["required"]
    return [k for k in required if k not in ("model1", "model2")]


def native_index(inputs: list[str], key: str) -> int:
    """Which input's ratio ComfyUI's node gives `key` (no prefix): the longest input that starts the key, else
    the first input."""
    best, size = 0, 0
    for i, name in enumerate(inputs):
        if key.startswith(name) and len(name) > size:
            best, size = i, len(name)
    return best


def _flux_like(key: str, inputs: tuple[str, ...], mod: tuple[str, ...]) -> str | None:
    m = re.match(r"(double|single)_blocks\.(\d+)\.", key)
    if m:
        return ("D" if m.group(1) == "double" else "S") + f"{int(m.group(2)):02d}"
    head = key.split(".")[0]
    return "IN" if head in inputs else "MOD" if head in mod else "OUT" if head == "final_layer" else None


# Test-side tables of the families without a native node.
EXPECTED = {
    "flux2": lambda k: _flux_like(k, ("img_in", "txt_in", "time_in", "guidance_in"),
                                  ("double_stream_modulation_img", "double_stream_modulation_txt",
                                   "single_stream_modulation")),
    "chroma": lambda k: _flux_like(k, ("img_in", "txt_in"), ("distilled_guidance_layer",)),
    "zimage": lambda k: _zimage(k),
    "anima": lambda k: _anima(k),
}
ZIMAGE_IN = ("x_embedder", "t_embedder", "cap_embedder", "siglip_embedder", "x_pad_token", "cap_pad_token",
             "siglip_pad_token")


def _zimage(key: str) -> str | None:
    m = re.match(r"(noise_refiner|context_refiner|siglip_refiner|layers)\.(\d+)\.", key)
    if m:
        return {"noise_refiner": "N", "context_refiner": "C", "siglip_refiner": "S", "layers": "L"}[m.group(1)] + \
            f"{int(m.group(2)):02d}"
    head = key.split(".")[0]
    return "IN" if head in ZIMAGE_IN else "OUT" if head == "final_layer" else None


def _anima(key: str) -> str:
    """ModelMergeCosmosPredict2_2B's input, its adapter in LLM."""
    if key.startswith("llm_adapter."):
        return "LLM"
    import merge_core as mc
    return mc.get_architecture("anima").blocks[native_index(native_inputs("ModelMergeCosmosPredict2_2B"), key)]


def expected_block(name: str, key: str) -> str | None:
    """The block `key` (no prefix) must be in: the native node's input at the same position, or EXPECTED."""
    import merge_core as mc
    fam = FAMILIES[name]
    if fam.native_node:
        return mc.get_architecture(name).blocks[native_index(native_inputs(fam.native_node), key)]
    return EXPECTED[name](key)


def layouts():
    """(id, family, config class, layout) of every published layout the tests check."""
    for name, fam in FAMILIES.items():
        yield f"{name}-{fam.config_class}", name, fam.config_class, fam.full
        for label, (cls, layout) in fam.extra.items():
            yield f"{label}-{cls}", name, cls, layout


LAYOUTS = list(layouts())


@pytest.mark.parametrize("name,config_class,layout", [l[1:] for l in LAYOUTS], ids=[l[0] for l in LAYOUTS])
def test_published_layout_detected_and_partitioned(name, config_class, layout):
    """ComfyUI detects the layout as the config class, the pack maps both the class and the key set (checkpoint
    and ComfyUI form) to the family, and every key is in the block the test expects, each block non-empty for
    the family's largest layout."""
    import comfy.model_detection as md
    import merge_core as mc
    from merge_core.arch.architectures import BY_CONFIG_CLASS
    meta = meta_state_dict(config_class, layout)
    detected = md.model_config_from_unet(meta, "")
    assert type(detected).__name__ == config_class
    assert BY_CONFIG_CLASS[config_class] == name
    assert mc.detect_architecture([U + k for k in meta]).name == name
    assert mc.detect_architecture(["diffusion_model." + k for k in meta]).name == name
    arch = mc.get_architecture(name)
    wrong = [(k, arch.block_of("diffusion_model." + k), expected_block(name, k)) for k in meta
             if arch.block_of("diffusion_model." + k) != expected_block(name, k)
             or arch.block_of(U + k) != expected_block(name, k)]
    assert not wrong, f"{len(wrong)} of {len(meta)} keys in the wrong block, e.g. {wrong[:5]}"
    assert None not in {arch.block_of(U + k) for k in meta}
    if layout is FAMILIES[name].full:
        assert {arch.block_of(U + k) for k in meta} == set(arch.blocks) - EMPTY_BLOCKS.get(name, set())
        assert arch.default_keys() == full_keys(name), "key list differs from ComfyUI's layout: rewrite it"


def test_block_counts_and_native_order():
    """One block per native input, in the node's order; Flux.2 and Chroma hold Flux.1's blocks plus MOD."""
    import merge_core as mc
    counts = {n: len(mc.get_architecture(n).blocks) for n in FAMILIES}
    assert counts == {"wan": 46, "qwen_image": 66, "krea2": 38, "auraflow": 43, "flux2": 59, "chroma": 60,
                      "zimage": 38, "cosmos_predict2": 41, "anima": 34}
    for name in NATIVE:
        assert len(native_inputs(FAMILIES[name].native_node)) == counts[name]
    assert mc.get_architecture("qwen_image").block_of(U + "norm_out.linear.weight") == "POS"  # the node's default


def test_flux_families_told_apart_by_keys():
    """Flux.1 keys stay Flux.1; Flux.2 and Chroma keys, which also hold double_blocks/single_blocks, are not."""
    import merge_core as mc
    flux1 = mc.get_architecture("flux").default_keys()
    assert mc.detect_architecture(flux1).name == "flux"
    assert mc.detect_architecture(full_keys("flux2")).name == "flux2"
    assert mc.detect_architecture(full_keys("chroma")).name == "chroma"
    assert mc.get_architecture("flux").block_of(U + "distilled_guidance_layer.in_proj.weight") is None
    assert mc.get_architecture("chroma").block_of(U + "distilled_guidance_layer.in_proj.weight") == "MOD"
    assert mc.get_architecture("flux2").block_of(U + "single_stream_modulation.lin.weight") == "MOD"


@functools.lru_cache(maxsize=None)
def _models(name: str):
    return tiny_model(name, "A"), tiny_model(name, "B")


def patched_weights(patcher) -> dict[str, torch.Tensor]:
    """Every diffusion-model weight as ComfyUI's patch_model leaves it (then unpatched again)."""
    patcher.patch_model(device_to=torch.device("cpu"))
    try:
        return {k: v.detach().clone() for k, v in patcher.model.diffusion_model.state_dict().items()}
    finally:
        patcher.unpatch_model(device_to=torch.device("cpu"))


def ours(name: str, weights: str):
    merge_nodes = pack_module("nodes.merge_nodes")
    a, b = _models(name)
    out = merge_nodes.ElementalMerge.execute(model_a=a, model_b=b, mode="Weight sum", alpha=0.5, beta=0.0,
                                             print_change=False,
                                             block_weights_alpha=merge_nodes.TextInput(weights, name))
    assert f"({pack_module('nodes.engine.model_info').architecture_of(a).label})" in out.result[2]
    return out.result[0]


def ratio_values(n: int) -> list[float]:
    """n dyadic ratios in [0, 1], no two neighbours equal, 0 and 1 among them (products exact)."""
    return [((i * 5) % 17) / 16 for i in range(n)]


@pytest.mark.parametrize("name", NATIVE)
def test_block_weights_equal_native_node(name):
    """Block Weights with the native node's values, in its order, give every weight ComfyUI's node gives, to
    the bit; keys ComfyUI's load path does not patch stay A's under the native node and are merged under ours
    (an object patch)."""
    import comfy_extras.nodes_model_merging_model_specific as specific
    fam = FAMILIES[name]
    a, b = _models(name)
    inputs = native_inputs(fam.native_node)
    values = ratio_values(len(inputs))
    # The node's ratio is model1's share (1.0 keeps model1): our alpha for model B is 1 - its value.
    (native,) = specific.NODE_CLASS_MAPPINGS[fam.native_node]().merge(a, b, **dict(zip(inputs, values)))
    mine = ours(name, ",".join(str(1 - v) for v in values))
    got_native, got_ours = patched_weights(native), patched_weights(mine)
    wa, wb = a.model.diffusion_model.state_dict(), b.model.diffusion_model.state_dict()
    assert set(got_native) == set(got_ours) == set(wa)
    unpatched = UNPATCHED.get(name)
    differ = [k for k in wa if not torch.equal(got_native[k], got_ours[k])
              and not (unpatched is not None and unpatched.match(k))]
    assert not differ, f"{len(differ)} of {len(wa)} weights differ from {fam.native_node}'s, e.g. {differ[:5]}"
    merged = 0
    for k in wa:
        r = 1 - values[native_index(inputs, k)]
        if unpatched is not None and unpatched.match(k):
            # ComfyUI's load path never patches it: the native node leaves A; ours sets it by an object patch
            assert torch.equal(got_native[k], wa[k]), f"{k}: ComfyUI patched it"
        assert_rounded_formula(got_ours[k], wa[k], wb[k], r, k)
        merged += r != 0
    assert merged >= len(wa) * 0.8, (merged, len(wa))
    if unpatched is not None:
        assert any(unpatched.match(k) for k in wa)


@pytest.mark.parametrize("name", [n for n in FAMILIES if n not in NATIVE])
def test_block_weights_merge_every_key(name):
    """Flux.2 (loaded through ComfyUI's detection), Chroma and Z-Image: every weight is A(1-r)+Br with r its
    block's value by the test's table (MOD included), the parameters ComfyUI's load path does not patch too (an
    object patch)."""
    import merge_core as mc
    arch = mc.get_architecture(name)
    a, b = _models(name)
    values = dict(zip(arch.blocks, ratio_values(len(arch.blocks))))
    got = patched_weights(ours(name, ",".join(str(v) for v in values.values())))
    wa, wb = a.model.diffusion_model.state_dict(), b.model.diffusion_model.state_dict()
    assert set(got) == set(wa)
    blocks = set()
    for k in wa:
        block = expected_block(name, k)
        blocks.add(block)
        assert_rounded_formula(got[k], wa[k], wb[k], values[block], k)  # unpatched ones too: object patches
    assert blocks == {expected_block(name, k) for k in meta_state_dict(FAMILIES[name].config_class,
                                                                       FAMILIES[name].tiny)}
    assert None not in blocks and ("MOD" in blocks or "LLM" in blocks or name == "zimage")


def test_sd35_large_blocks_follow_the_native_node():
    """SD3.5 Large (38 joint blocks, RMS q/k norms) by layout: the SD3 record's IN is ModelMergeSD35_Large's first
    five inputs, J00-J37 and OUT its other inputs one for one."""
    import merge_core as mc
    from devkit.fixtures_arch import SD35_LARGE, meta_mmdit
    inputs = native_inputs("ModelMergeSD35_Large")
    assert len(inputs) == 44
    node_blocks = ("IN",) * 5 + tuple(f"J{i:02d}" for i in range(38)) + ("OUT",)
    arch = mc.get_architecture("sd3")
    keys = list(meta_mmdit(SD35_LARGE))
    wrong = [k for k in keys if arch.block_of(k) != node_blocks[native_index(inputs, k[len(U):])]]
    assert not wrong, wrong[:5]
    assert {arch.block_of(k) for k in keys} == set(node_blocks)


def test_anima_block_weights_equal_the_cosmos_predict2_2b_node():
    """Anima under ModelMergeCosmosPredict2_2B (its 2B layout's node): Block Weights with the node's values in its
    order, then the node's first value again for LLM (the node gives the adapter its first input's ratio), give
    every weight the node gives, to the bit; the adapter follows LLM's own value otherwise."""
    import comfy_extras.nodes_model_merging_model_specific as specific
    a, b = _models("anima")
    inputs = native_inputs("ModelMergeCosmosPredict2_2B")
    values = ratio_values(len(inputs))
    (native,) = specific.NODE_CLASS_MAPPINGS["ModelMergeCosmosPredict2_2B"]().merge(a, b, **dict(zip(inputs, values)))
    mine = ours("anima", ",".join(str(1 - v) for v in values + [values[0]]))
    got_native, got_ours = patched_weights(native), patched_weights(mine)
    wa, wb = a.model.diffusion_model.state_dict(), b.model.diffusion_model.state_dict()
    assert set(got_native) == set(got_ours) == set(wa)
    differ = [k for k in wa if not torch.equal(got_native[k], got_ours[k])]
    assert not differ, f"{len(differ)} of {len(wa)} weights differ from the node's, e.g. {differ[:5]}"
    for k in wa:
        assert_rounded_formula(got_ours[k], wa[k], wb[k], 1 - values[native_index(inputs, k)], k)
    assert any(k.startswith("llm_adapter.") for k in wa)

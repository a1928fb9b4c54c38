"""Flux's q/k RMSNorm names (``.scale`` in files and ComfyUI 0.3.75, ``.weight`` inside ComfyUI 0.33): the
mapping, and that canonical names, the calc-mode rule and spec elements are the same under both namings.

The 0.33 naming is made here by the rule ComfyUI 0.33's Flux config applies on load, written out from its
source (`supported_models.Flux.process_unet_state_dict`): every UNet key ending in ``_norm.scale`` gets
``.weight``; the text encoders are not touched.
"""
from __future__ import annotations

import pytest

import merge_core as mc
from merge_core.merge.calc_modes import calc_applies, get_calc_mode, keeps_a
from merge_core.arch.flux_names import comfy_name, file_element, file_name, is_renamed_norm
from tests.unit.conftest import read_keylist

UNET = "model.diffusion_model."


def comfy033(key: str) -> str:
    """A Flux file key as ComfyUI 0.33 names it after loading (its rule, restated)."""
    if key.startswith(UNET) and key.endswith("_norm.scale"):
        return key[:-len(".scale")] + ".weight"
    return key


@pytest.fixture(scope="module")
def file_keys():
    return read_keylist("flux")


@pytest.fixture(scope="module")
def patcher_keys():
    """ComfyUI's internal key forms, 0.3.75 (stored list) and 0.33 (derived by its rule)."""
    old = read_keylist("flux.comfy")
    new = ["model." + k if k.startswith("diffusion_model.") else k for k in old]
    new = [comfy033(k)[len("model."):] if k.startswith(UNET) else k for k in new]
    return old, new


def test_exactly_the_renamed_keys(file_keys):
    renamed = [k for k in file_keys if comfy033(k) != k]
    assert len(file_keys) == 1196 and len(renamed) == 152
    assert {k.rsplit(".", 2)[-2] for k in renamed} == {"query_norm", "key_norm"}
    assert [k for k in file_keys if is_renamed_norm(k)] == renamed
    for k in file_keys:
        assert comfy_name(k) == comfy033(k), k
        assert file_name(comfy033(k)) == k, k
        assert file_name(k) == k
    # the text encoders' norms are '.weight' in files and stay so
    te_norms = [k for k in file_keys if k.startswith("text_encoders.") and k.endswith("_norm.weight")]
    assert len(te_norms) > 40 and all(file_name(k) == k and comfy_name(k) == k for k in te_norms)


@pytest.mark.parametrize("prefix", ["model.diffusion_model.", "diffusion_model.", ""])
def test_every_prefix_kept(prefix):
    for path in ("double_blocks.3.img_attn.norm.query_norm", "double_blocks.18.txt_attn.norm.key_norm",
                 "single_blocks.37.norm.query_norm"):
        assert file_name(f"{prefix}{path}.weight") == f"{prefix}{path}.scale"
        assert comfy_name(f"{prefix}{path}.scale") == f"{prefix}{path}.weight"
    assert file_name(prefix + "double_blocks.0.img_attn.qkv.weight") == prefix + "double_blocks.0.img_attn.qkv.weight"
    assert file_name(prefix + "final_layer.norm_final.weight") == prefix + "final_layer.norm_final.weight"


def test_canonical_name_is_the_file_name_on_both_runtimes(file_keys, patcher_keys):
    flux = mc.get_architecture("flux")
    old, new = patcher_keys
    assert sum(a != b for a, b in zip(old, new)) == 152
    want = [k for k in file_keys]  # the comfy list is the file list in the same order, prefixes changed
    assert [mc.canonical_key(k, flux) for k in old] == want
    assert [mc.canonical_key(k, flux) for k in new] == want
    assert [mc.canonical_key(comfy033(k), flux) for k in file_keys] == want  # a 0.33 save's own names
    assert [flux.block_of(k) for k in old] == [flux.block_of(k) for k in new]


@pytest.mark.parametrize("calc", ["cosineA", "trainDifference", "tensor", "self"])
def test_calc_rule_keeps_norms_at_a_on_both_runtimes(patcher_keys, calc):
    """SuperMerger merges only names containing weight or bias: the '.scale' norms keep A under either naming."""
    flux = mc.get_architecture("flux")
    mode = get_calc_mode(calc)
    for keys in patcher_keys:
        applied = {k for k in keys if calc_applies(mode, mc.canonical_key(k, flux), flux.block_of(k))}
        kept = [k for k in keys if k not in applied and k.startswith("diffusion_model.")]
        assert len(kept) == 152 and all("_norm." in k for k in kept)
        assert all(keeps_a(mode, mc.canonical_key(k, flux), flux.block_of(k), 0.5, 0.5) for k in kept)


@pytest.mark.parametrize("spec,count", [
    ("D00:query_norm.scale:0.5", 2),            # img_attn and txt_attn query norms of D00
    ("D00:img_attn.norm:0.5", 2),               # both norms of img_attn
    ("D00:query_norm.weight:0.5", 2),           # the name ComfyUI 0.33 shows: the same keys
    ("S00:norm.key_norm.weight:0.5", 1),
    ("D00 S00:query_norm key_norm:0.5", 6),
    ("D00:NOT query_norm.weight:0.5", 22),      # D00 has 24 keys
    ("D00:weight:0.5", 10),                     # a generic word keeps its file meaning: no '.scale' key
])
def test_element_selects_the_same_keys_under_both_namings(file_keys, patcher_keys, spec, count):
    flux = mc.get_architecture("flux")
    selected = []
    for keys in (tuple(file_keys),) + tuple(tuple(k) for k in patcher_keys):
        parsed = mc.parse_spec(spec, flux, keys=keys)
        assert not parsed.diagnostics, parsed.diagnostics
        res = mc.resolve_ratios(keys, flux, 1.0, None, parsed)
        assert not res.warnings
        selected.append(sorted(mc.canonical_key(c.key, flux) for c in res.changes))
    assert len(selected[0]) == count
    assert selected[0] == selected[1] == selected[2]


def test_builtin_key_list_accepts_both_namings():
    """Validation against the built-in key list (no model at hand) knows the norms by either name."""
    for word in ("query_norm.scale", "query_norm.weight", "img_attn.norm.key_norm.weight", "key_norm"):
        assert not mc.validate_spec(f"D05:{word}:0.5", "flux"), word
    assert mc.validate_spec("D05:query_norm.bias:0.5", "flux")  # a name neither runtime has: still warned


def test_file_element():
    assert file_element("query_norm.weight") == "query_norm.scale"
    assert file_element("img_attn.norm.key_norm.weight") == "img_attn.norm.key_norm.scale"
    for word in ("weight", "norm.weight", "layer_norm.weight", "query_norm", "query_norm.scale", "qkv.weight"):
        assert file_element(word) == word
    assert mc.validate_spec("BASE:query_norm.weight:0.5", "sd1")  # only Flux reads it as .scale

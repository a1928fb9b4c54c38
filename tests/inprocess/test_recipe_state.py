"""How a MODEL's recipe node follows it through the nodes (model_info), on stand-in patchers: only
`model_options` matters, and ModelPatcher.clone() deep-copies it, as `_clone` does here."""
from __future__ import annotations

import copy

from merge_core.recipes import recipe as R
from tests.helpers.pack import pack_module

LORA = {"lora": "l.safetensors", "strength_model": 0.5, "strength_clip": None, "block_weights": "GRAD_V",
        "lbw_weights": None, "elemental": None}


class _Model:
    def __init__(self, options=None):
        self.model_options = options or {}


def _clone(m):
    return _Model(copy.deepcopy(m.model_options))


def test_lora_then_adjust_on_a_source_then_a_merge():
    info = pack_module("nodes.engine.model_info")
    a = _Model()
    info.set_source_name(a, "missing_here.safetensors")  # not in models/checkpoints: no provenance, no error
    assert info.recipe_of(a) == R.checkpoint_node("missing_here.safetensors")

    lora = _clone(a)  # what ElementalLoRA does
    lora.model_options[info.LORAS_KEY] = list(a.model_options.get(info.LORAS_KEY, [])) + [LORA]
    adjusted = _clone(lora)  # what ElementalAdjust does
    node = info.recipe_of(adjusted)
    node["adjust"] = node.get("adjust", []) + ["IN=2"]
    src = info.recipe_of(adjusted)
    assert [op["op"] for op in src["apply"]] == ["lora", "adjust"]
    assert src["apply"][0] == R.lora_op("l.safetensors", 0.5, None, block_weights="GRAD_V")
    assert src["apply"][1]["values"]["IN"] == 2.0 and "adjust" not in src
    assert info.recipe_of(adjusted) == src  # folding twice changes nothing

    b = _Model()
    info.set_source_name(b, "b.safetensors")
    merged = _clone(adjusted)  # ElementalMerge clones A, then attaches the merge node it builds
    built = R.merge_node("Weight sum", 0.5, None, "sd1", {"A": info.recipe_of(adjusted), "B": info.recipe_of(b)},
                         True, elemental_alpha="OUT05::0")
    info.attach_recipe(merged, built)
    built["alpha"] = 0.75  # the model holds its own copy
    node = info.recipe_of(merged)
    assert node["alpha"] == 0.5 and node["elemental_alpha"] == "OUT05::0"
    assert node["sources"]["A"] == src and node["sources"]["B"] == R.checkpoint_node("b.safetensors")
    assert node["apply"] == []  # A's LoRA, inherited by the clone, belongs to source A only
    assert info.model_name(merged) == "merge of (missing_here.safetensors, b.safetensors)"
    assert R.parse_recipe(R.document(node, "0.1.0", "0.3.75"))["model"] == node


def test_unknown_origin():
    info = pack_module("nodes.engine.model_info")
    anon = _Model()
    assert info.recipe_of(anon) is None and info.model_name(anon) == "unnamed model"
    merged = _clone(anon)
    info.attach_recipe(merged, R.merge_node("Weight sum", 0.5, None, "sd1", {"A": R.unknown_node("unnamed model"),
                                                                          "B": R.unknown_node("unnamed model")}, False))
    assert info.recipe_of(merged)["sources"] == {"A": R.unknown_node("unnamed model"),
                                                 "B": R.unknown_node("unnamed model")}

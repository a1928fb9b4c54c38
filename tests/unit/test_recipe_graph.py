"""Recipe -> API prompt: the graph written out by hand for a nested recipe."""
from __future__ import annotations

from merge_core.recipes import recipe as R
from merge_core.recipes.recipe_graph import recipe_graph

SHA = "a" * 64


def test_nested_merge_with_lora_adjust_and_save():
    a, b, c = (R.checkpoint_node(f"{n}.safetensors", SHA) for n in "ABC")
    b_lora = R.with_op(b, R.lora_op("l.safetensors", 0.5, None, block_weights="GRAD_V"))
    inner = R.merge_node("Weight sum", 0.25, None, "sd1", {"A": a, "B": b_lora}, True, elemental_alpha="OUT05::0")
    outer = R.with_op(R.merge_node("Add difference", 0.5, None, "sd1", {"A": inner, "B": b, "C": c}, False,
                                   calc_mode="trainDifference"), R.adjust_op({"IN": 2}))
    doc = R.parse_recipe(R.document(outer, "0.1.0", "0.3.75", save={"precision": "fp32"}))
    prompt, built = recipe_graph(doc)
    zeros = {n: 0.0 for n in ("OUT", "OUT2", "CONT", "BRI", "COL1", "COL2", "COL3")}
    assert prompt == {
        "1": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "A.safetensors"}},
        "2": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "B.safetensors"}},
        "3": {"class_type": "BlockWeights", "inputs": {"weights": "GRAD_V", "architecture": "auto"}},
        "4": {"class_type": "ElementalLoRA", "inputs": {"model": ["2", 0], "lora_name": "l.safetensors",
                                                        "strength_model": 0.5, "strength_clip": 1.0,
                                                        "lbw_weights": "", "block_weights": ["3", 0]}},
        "5": {"class_type": "ElementalSpec", "inputs": {"spec": "OUT05::0", "architecture": "sd1"}},
        "6": {"class_type": "ElementalMerge", "inputs": {
            "model_a": ["1", 0], "model_b": ["4", 0], "clip_a": ["1", 1], "clip_b": ["2", 1],
            "mode": "Weight sum", "calc_mode": "normal", "calc_option": 0.3, "alpha": 0.25, "beta": 0.25,
            "print_change": False, "elemental_alpha": ["5", 0]}},
        "7": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "C.safetensors"}},
        "8": {"class_type": "ElementalMerge", "inputs": {
            "model_a": ["6", 0], "model_b": ["2", 0], "model_c": ["7", 0], "clip_a": ["6", 1],
            "mode": "Add difference", "calc_mode": "trainDifference", "calc_option": 0.3, "alpha": 0.5,
            "beta": 0.25, "print_change": False}},
        "9": {"class_type": "ElementalAdjust", "inputs": {"model": ["8", 0], "IN": 2.0, **zeros}},
        "10": {"class_type": "SaveMergedCheckpoint", "inputs": {
            "model": ["9", 0], "filename_prefix": "checkpoints/ElementalMerge", "precision": "fp32",
            "clip": ["8", 1], "vae": ["1", 2]}},
    }
    assert (built.model, built.clip, built.vae) == (("9", 0), ("8", 1), ("1", 2))


def test_plain_checkpoint_without_save():
    doc = R.parse_recipe(R.document(R.checkpoint_node("x.safetensors"), "1", "2"))
    prompt, built = recipe_graph(doc, save=False)
    assert prompt == {"1": {"class_type": "MergeCheckpointLoader", "inputs": {"ckpt_name": "x.safetensors"}}}
    assert (built.model, built.clip, built.vae) == (("1", 0), ("1", 1), ("1", 2))

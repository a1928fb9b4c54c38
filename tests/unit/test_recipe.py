"""The recipe format: builders, the stored text, validation messages, the version-1 upgrade, walking."""
from __future__ import annotations

import json

import pytest

from merge_core.recipes import recipe as R

SHA_A, SHA_B, SHA_L = "a" * 64, "b" * 64, "0123456789abcdef" * 4


def _two_level() -> dict:
    """(A + B) weight sum, then add difference with that merge as A, Adjust on the result, a LoRA on B."""
    a = R.checkpoint_node("A.safetensors", SHA_A)
    b = R.with_op(R.checkpoint_node("B.safetensors", SHA_B), R.lora_op("detail.safetensors", 0.8, 0.5, SHA_L,
                                                                        block_weights="1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,"
                                                                                      "0,0,0,0,0,0,0,0,0,0,1"))
    inner = R.merge_node("Weight sum", 0.5, None, "sd1", {"A": a, "B": b}, True, elemental_alpha="OUT05:attn2:0.2")
    outer = R.merge_node("Add difference", 0.3, None, "sd1", {"A": inner, "B": b, "C": a}, False,
                         calc_mode="trainDifference")
    return R.document(R.with_op(outer, R.adjust_op({"IN": 2, "COL1": -1})), "0.1.0", "0.3.75",
                      save={"precision": "fp16"})


def test_document_shape_written_out():
    doc = R.document(R.merge_node("Weight sum", 0.25, None, "sd1",
                                  {"A": R.checkpoint_node("A.safetensors", SHA_A),
                                   "B": R.checkpoint_node("B.safetensors", None)}, True),
                     "0.1.0", "0.3.75")
    assert doc == {
        "format": "elemental-merge-recipe", "version": 2, "pack_version": "0.1.0", "comfyui_version": "0.3.75",
        "model": {"kind": "merge", "mode": "Weight sum", "calc_mode": "normal", "calc_option": None,
                  "alpha": 0.25, "beta": None, "architecture": "sd1",
                  "block_weights_alpha": None, "block_weights_beta": None,
                  "elemental_alpha": None, "elemental_beta": None, "text_encoder_merged": True,
                  "sources": {"A": {"kind": "checkpoint", "name": "A.safetensors", "sha256": SHA_A, "apply": []},
                              "B": {"kind": "checkpoint", "name": "B.safetensors", "sha256": None, "apply": []}},
                  "apply": []}}


def test_stored_text_round_trips_and_is_stable():
    doc = _two_level()
    text = R.dumps(doc)
    assert text == json.dumps(doc, sort_keys=True, ensure_ascii=False)
    assert R.parse_recipe(text) == doc
    assert R.dumps(R.parse_recipe(text)) == text
    assert R.parse_recipe({"format": "pt", R.METADATA_KEY: text}) == doc  # a file's whole metadata dict


def test_defaults_filled_for_optional_fields():
    doc = {"format": R.FORMAT, "version": 2, "pack_version": "x", "comfyui_version": "y",
           "model": {"kind": "merge", "mode": "Weight sum", "alpha": 0.5, "architecture": "sdxl",
                     "text_encoder_merged": False,
                     "sources": {"A": {"kind": "checkpoint", "name": "a"}, "B": {"kind": "checkpoint", "name": "b"}}}}
    out = R.parse_recipe(doc)
    m = out["model"]
    assert (m["calc_mode"], m["calc_option"], m["beta"], m["apply"], m["elemental_beta"]) == ("normal", None, None, [], None)
    assert m["sources"]["A"] == {"kind": "checkpoint", "name": "a", "sha256": None, "apply": []}
    assert "save" not in out and "recipe" not in m["sources"]["A"]


def _problems(doc) -> list[tuple[str, str]]:
    with pytest.raises(R.RecipeError) as e:
        R.parse_recipe(doc)
    assert str(e.value).startswith("invalid merge recipe:\n- ")
    return e.value.problems


def test_every_problem_listed_with_its_path():
    doc = json.loads(R.dumps(_two_level()))  # no shared sub-objects
    m = doc["model"]
    m["alhpa"] = 0.5
    m["sources"]["C"]["sha256"] = "ABC"
    m["sources"]["A"]["mode"] = "Slerp"
    m["apply"][0]["values"]["GAMMA"] = 1
    m["apply"].append({"op": "lora", "name": "", "strength_model": "1", "strength_clip": 1})
    assert _problems(doc) == [
        ("model", "unknown field 'alhpa' for a merge (valid: kind, mode, calc_mode, calc_option, alpha, beta, "
                  "architecture, block_weights_alpha, block_weights_beta, elemental_alpha, elemental_beta, "
                  "text_encoder_merged, sources, apply, task)"),
        ("model.sources.A.mode", "unknown mode 'Slerp' (valid: Weight sum, Add difference, Triple sum, Sum twice, "
                                 "TIES, DARE, DARE-TIES, DELLA, Breadcrumbs, Model Stock, Geometric median, SLERP, "
                                 "Average)"),
        ("model.sources.C.sha256", 'expected 64 lowercase hex digits (sha256) or null, got "ABC"'),
        ("model.apply[0].values.GAMMA", "unknown adjust value (valid: IN, OUT, OUT2, CONT, BRI, COL1, COL2, COL3)"),
        ("model.apply[1].name", 'expected a non-empty string, got ""'),
        ("model.apply[1].strength_model", 'expected a finite number, got "1"'),
    ]


@pytest.mark.parametrize("change, expected", [
    ({"calc_mode": "cosineA"}, ("model.calc_mode", "calc mode 'cosineA' needs mode 'Weight sum', not 'Add difference'")),
    ({"calc_mode": "bogus"}, ("model.calc_mode", "unknown calc mode 'bogus' (valid: normal, cosineA, cosineB, "
                                                 "trainDifference, smoothAdd, extract, tensor, tensor2, self)")),
    ({"calc_mode": "extract"}, ("model.beta", "mode 'Add difference' with calc mode 'extract' uses beta: "
                                              "a number is needed")),
    ({"mode": "Triple sum", "calc_mode": "normal"}, ("model.beta", "mode 'Triple sum' with calc mode 'normal' uses beta: a number is needed")),
    ({"mode": "Weight sum", "calc_mode": "normal"}, ("model.sources", "mode 'Weight sum' uses sources A, B only; not C")),
    ({"architecture": "sd9"}, ("model.architecture", "unknown architecture 'sd9' (valid: sd1, sd2, sdxl, sdxl_ext, "
                                                     "flux, sd3, wan, qwen_image, krea2, auraflow, flux2, chroma, "
                                                     "zimage, cosmos_predict2, anima)")),
    ({"alpha": float("nan")}, ("model.alpha", "expected a finite number, got NaN")),
    ({"text_encoder_merged": 1}, ("model.text_encoder_merged", "expected true or false, got 1")),
])
def test_merge_rules(change, expected):
    doc = _two_level()
    doc["model"].update(change)
    assert _problems(doc) == [expected]


def test_missing_source_and_fields():
    doc = _two_level()
    del doc["model"]["sources"]["C"]
    del doc["model"]["alpha"]
    del doc["pack_version"]
    assert _problems(doc) == [("", "missing field 'pack_version'"), ("model", "missing field 'alpha'"),
                              ("model.sources", "mode 'Add difference' needs sources A, B, C; missing C")]


@pytest.mark.parametrize("text, expected", [
    ("", [("", "empty recipe text")]),
    ("{oops", [("", "not JSON: Expecting property name enclosed in double quotes at line 1 column 2")]),
    ("[1]", [("", "a recipe is a JSON object, not list")]),
    (json.dumps({"format": R.FORMAT, "version": 3}), [("version", "recipe version 3 is newer than this pack reads "
                                                                  "(up to 2): update the pack")]),
    (json.dumps({"kind": "merge"}), [("", "unknown field 'kind' for a document (valid: format, version, "
                                          "pack_version, comfyui_version, model, save)"),
                                     ("", "missing field 'format'"), ("", "missing field 'version'"),
                                     ("", "missing field 'pack_version'"), ("", "missing field 'comfyui_version'"),
                                     ("", "missing field 'model'")]),
])
def test_bad_text(text, expected):
    assert _problems(text) == expected


def test_nested_source_kind_and_depth():
    doc = _two_level()
    doc["model"]["sources"]["B"] = {"kind": "lora"}
    assert _problems(doc) == [("model.sources.B", "unknown source kind 'lora' (valid: checkpoint, merge, unknown)")]


def test_version_1_upgrade():
    """What the pack wrote before: names only, nested recipes as model_x_recipe."""
    inner = {"version": 1, "mode": "Weight sum", "alpha": 0.5, "beta": None, "architecture": "sd1",
             "block_weights_alpha": "GRAD_V", "block_weights_beta": None, "elemental_alpha": "OUT05::0",
             "elemental_beta": None, "models": {"A": "a.safetensors", "B": "b.safetensors"},
             "text_encoder_merged": True}
    outer = {"version": 1, "mode": "Sum twice", "alpha": 0.3, "beta": 0.2, "architecture": "sd1",
             "block_weights_alpha": None, "block_weights_beta": None, "elemental_alpha": None,
             "elemental_beta": "IN01::1", "models": {"A": "merge of (a.safetensors, b.safetensors)",
                                                     "B": "b.safetensors", "C": "c.safetensors"},
             "text_encoder_merged": False, "model_a_recipe": inner}
    doc = R.parse_recipe(json.dumps(outer, sort_keys=True))
    want_inner = R.merge_node("Weight sum", 0.5, None, "sd1", {"A": R.checkpoint_node("a.safetensors"),
                                                               "B": R.checkpoint_node("b.safetensors")}, True,
                              block_weights_alpha="GRAD_V", elemental_alpha="OUT05::0")
    want = R.merge_node("Sum twice", 0.3, 0.2, "sd1", {"A": want_inner, "B": R.checkpoint_node("b.safetensors"),
                                                       "C": R.checkpoint_node("c.safetensors")}, False,
                        elemental_beta="IN01::1")
    assert doc == R.document(want, "unknown", "unknown")
    assert _problems({"version": 1, "mode": "Weight sum"}) == [("", "version 1 recipe without the field 'models'")]


def test_file_needs_skip_provenance_and_fill_hashes():
    doc = _two_level()
    saved = R.document(R.merge_node("Weight sum", 0.1, None, "sd1", {"A": R.checkpoint_node("x.safetensors"),
                                                                     "B": R.checkpoint_node("y.safetensors")}, True),
                       "0.1.0", "0.3.75")
    doc["model"]["sources"]["A"]["sources"]["A"] = R.checkpoint_node("merged.safetensors", None, recipe=saved)
    doc = R.parse_recipe(doc)
    needs = R.file_needs(doc)
    assert [(n.path, n.folder, n.name, n.sha256) for n in needs] == [
        ("model.sources.A.sources.A", "checkpoints", "merged.safetensors", None),
        ("model.sources.A.sources.B", "checkpoints", "B.safetensors", SHA_B),
        ("model.sources.A.sources.B.apply[0]", "loras", "detail.safetensors", SHA_L),
        ("model.sources.B", "checkpoints", "B.safetensors", SHA_B),
        ("model.sources.B.apply[0]", "loras", "detail.safetensors", SHA_L),
        ("model.sources.C", "checkpoints", "A.safetensors", SHA_A),
    ]
    asked = []
    filled = R.fill_hashes(doc, lambda folder, name: asked.append((folder, name)) or "c" * 64)
    assert asked == [("checkpoints", "merged.safetensors")]
    assert filled["model"]["sources"]["A"]["sources"]["A"]["sha256"] == "c" * 64
    assert doc["model"]["sources"]["A"]["sources"]["A"]["sha256"] is None  # the input is not changed
    assert filled["model"]["sources"]["A"]["sources"]["A"]["recipe"]["model"]["sources"]["A"]["sha256"] is None


def test_describe():
    assert R.describe(_two_level()["model"]) == "\n".join([
        "Add difference [trainDifference] (sd1) alpha=0.3",
        "  A: merge",
        "    Weight sum [normal] (sd1) alpha=0.5; elemental_alpha",
        "      A: A.safetensors [aaaaaaaaaa]",
        "      B: B.safetensors [bbbbbbbbbb]",
        "         + LoRA detail.safetensors model=0.8 clip=0.5 (block weights)",
        "  B: B.safetensors [bbbbbbbbbb]",
        "     + LoRA detail.safetensors model=0.8 clip=0.5 (block weights)",
        "  C: A.safetensors [aaaaaaaaaa]",
        "+ Adjust IN=2 COL1=-1",
    ])


def test_pack_version(tmp_path):
    p = tmp_path / "pyproject.toml"
    p.write_text('[tool.x]\nversion = "9"\n[project]\nname = "n"\nversion = "1.2.3"\n[tool.comfy]\nversion = "7"\n')
    assert R.pack_version(str(p)) == "1.2.3"
    assert R.pack_version(str(tmp_path / "missing.toml")) == "unknown"
    assert R.pack_version() == "0.1.0"  # this repository's pyproject.toml


def test_version_1_with_calc_mode_and_adjust():
    """The in-memory recipe ElementalMerge/ElementalAdjust keep today (v1 dict plus calc mode and adjust texts)."""
    v1 = {"version": 1, "mode": "Add difference", "calc_mode": "extract", "calc_option": 0.5, "alpha": 0.5,
          "beta": 0.25, "architecture": "sd1", "models": {"A": "a", "B": "b", "C": "c"},
          "text_encoder_merged": True, "adjust": ["2,0,0,0,0,0,0,0", "COL1=-1"]}
    m = R.parse_recipe(v1)["model"]
    assert (m["calc_mode"], m["calc_option"], m["beta"]) == ("extract", 0.5, 0.25)
    assert [op["values"] for op in m["apply"]] == [
        {"IN": 2.0, "OUT": 0.0, "OUT2": 0.0, "CONT": 0.0, "BRI": 0.0, "COL1": 0.0, "COL2": 0.0, "COL3": 0.0},
        {"IN": 0.0, "OUT": 0.0, "OUT2": 0.0, "CONT": 0.0, "BRI": 0.0, "COL1": -1.0, "COL2": 0.0, "COL3": 0.0}]
    v1["adjust"] = ["1,2"]
    assert _problems(v1) == [("adjust", "adjust: expected 8 numbers (IN, OUT, OUT2, CONT, BRI, COL1, COL2, COL3), "
                                         "got 2 in '1,2'")]


def test_lora_op_without_clip():
    op = R.lora_op("x.safetensors", 1.0, None, lbw_weights="1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1")
    node = R.with_op(R.checkpoint_node("a.safetensors"), op)
    doc = R.parse_recipe(R.document(node, "1", "2"))
    assert doc["model"]["apply"] == [{"op": "lora", "name": "x.safetensors", "sha256": None, "strength_model": 1.0,
                                      "strength_clip": None, "block_weights": None,
                                      "lbw_weights": "1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1", "elemental": None}]


def test_unknown_source():
    node = R.merge_node("Weight sum", 0.5, None, "sd1", {"A": R.unknown_node("unnamed model"),
                                                         "B": R.checkpoint_node("b")}, True)
    doc = R.parse_recipe(R.document(node, "1", "2"))
    assert doc["model"]["sources"]["A"] == {"kind": "unknown", "label": "unnamed model", "apply": []}
    assert [n.name for n in R.file_needs(doc)] == ["b"]
    assert "A: unnamed model (file unknown)" in R.describe(doc["model"])

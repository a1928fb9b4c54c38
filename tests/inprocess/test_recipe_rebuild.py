"""LoadMergeRecipe's checks before anything loads (ComfyUI's folder_paths, small files, no models) and the
graph runner's handling of node inputs. The full rebuild runs end to end in tests/e2e/test_save_recipe.py."""
from __future__ import annotations

import hashlib

import pytest

from merge_core.recipes import recipe as R
from merge_core.files.file_hash import file_sha256
from tests.helpers.pack import pack_module


@pytest.fixture
def folders(tmp_path):
    """Two checkpoint files and one LoRA in a temporary models folder known to ComfyUI's folder_paths."""
    rebuild = pack_module("nodes.engine.recipe_rebuild")
    import folder_paths

    (tmp_path / "ck").mkdir()
    (tmp_path / "lo").mkdir()
    for name, data in (("ck/a.safetensors", b"model a"), ("ck/b.safetensors", b"model b"),
                       ("lo/l.safetensors", b"lora")):
        (tmp_path / name).write_bytes(data)
    saved = {k: (list(v[0]), set(v[1])) for k, v in folder_paths.folder_names_and_paths.items()}
    folder_paths.add_model_folder_path("checkpoints", str(tmp_path / "ck"), is_default=True)
    folder_paths.add_model_folder_path("loras", str(tmp_path / "lo"), is_default=True)
    yield rebuild
    folder_paths.folder_names_and_paths.update({k: v for k, v in saved.items()})


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hasher(folder, name):
    import folder_paths

    return file_sha256(folder_paths.get_full_path(folder, name))


def test_every_problem_listed_before_anything_loads(folders):
    b = R.with_op(R.checkpoint_node("b.safetensors", "f" * 64), R.lora_op("l.safetensors", 1.0, 1.0, sha(b"lora")))
    inner = R.merge_node("Weight sum", 0.5, None, "sd1", {"A": R.checkpoint_node("a.safetensors", sha(b"model a")),
                                                          "B": R.unknown_node("unnamed model")}, True)
    outer = R.merge_node("Add difference", 0.5, None, "sd1",
                         {"A": inner, "B": b, "C": R.checkpoint_node("gone.safetensors", sha(b"x"))}, True)
    doc = R.parse_recipe(R.document(outer, "0.1.0", "0.3.75"))
    with pytest.raises(folders.SourceError) as e:
        folders.check_sources(doc, hasher)
    assert str(e.value) == "\n".join([
        "cannot rebuild the merge; nothing was loaded:",
        "- model.sources.A.sources.B: 'unnamed model' was loaded by a loader that does not record its file: "
        "this recipe cannot be rebuilt",
        f"- model.sources.B: checkpoint 'b.safetensors' has sha256 {sha(b'model b')[:10]}, the recipe expects "
        "ffffffffff: a different file",
        f"- model.sources.C: checkpoint 'gone.safetensors' not found in models/checkpoints (expected: sha256 "
        f"{sha(b'x')[:10]})",
    ])


def test_sources_that_match_are_returned_with_their_paths(folders, tmp_path):
    a = R.checkpoint_node("a.safetensors", sha(b"model a"))
    b = R.with_op(R.checkpoint_node("b.safetensors"), R.lora_op("l.safetensors", 1.0, None, sha(b"lora")))
    doc = R.parse_recipe(R.document(R.merge_node("Weight sum", 0.5, None, "sd1", {"A": a, "B": b}, False),
                                    "0.1.0", "0.3.75"))
    found = folders.check_sources(doc, hasher)
    assert [(c.need.name, c.path, c.sha256) for c in found] == [
        ("a.safetensors", str(tmp_path / "ck" / "a.safetensors"), sha(b"model a")),
        ("b.safetensors", str(tmp_path / "ck" / "b.safetensors"), sha(b"model b")),  # no hash: by name
        ("l.safetensors", str(tmp_path / "lo" / "l.safetensors"), sha(b"lora")),
    ]


class _Node:
    """A stand-in node class with the V3 surface run_graph uses: INPUT_TYPES and execute."""
    calls = []

    def __init__(self, required, optional=()):
        self.required, self.optional = required, optional

    def INPUT_TYPES(self):
        return {"required": {k: None for k in self.required}, "optional": {k: None for k in self.optional}}

    def execute(self, **kw):
        _Node.calls.append(kw)
        return type("Out", (), {"args": (kw, "second")})()


def test_run_graph_links_outputs_and_drops_calc_inputs_of_a_pack_without_them():
    rebuild = pack_module("nodes.engine.recipe_rebuild")
    table = {"Src": _Node(["x"]), "Merge": _Node(["model_a", "alpha"])}
    prompt = {"1": {"class_type": "Src", "inputs": {"x": 1}},
              "2": {"class_type": "Merge", "inputs": {"model_a": ["1", 1], "alpha": 0.5, "calc_mode": "normal",
                                                      "calc_option": 0.3}}}
    _Node.calls.clear()
    out = rebuild.run_graph(prompt, table)
    assert _Node.calls == [{"x": 1}, {"model_a": "second", "alpha": 0.5}]
    assert out["2"] == ({"model_a": "second", "alpha": 0.5}, "second")
    prompt["2"]["inputs"]["calc_mode"] = "cosineA"
    with pytest.raises(ValueError, match="Merge has no input 'calc_mode': this pack cannot rebuild the recipe"):
        rebuild.run_graph(prompt, table)
    with pytest.raises(ValueError, match="node type Nope is not registered"):
        rebuild.run_graph({"1": {"class_type": "Nope", "inputs": {}}}, table)

"""The file merge's reader and writer on small files: bad files stop with the file and tensor named, before
anything is written; quantized weights are read as their float32 values; a failed merge leaves no output."""
from __future__ import annotations

import json
import os
import struct

import pytest
import torch

from merge_core.file_merge.merge import FileMergeSettings, merge_files
from merge_core.files.safetensors_stream import save_dict
from merge_core.files.tensor_file import TensorFile, TensorFileError

U = "model.diffusion_model."


def sd1_like(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {U + "input_blocks.11.0.in_layers.2.weight": torch.randn(8, 4, generator=g).half(),
            U + "output_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": torch.randn(6, 6, generator=g).half(),
            U + "middle_block.1.norm.bias": torch.randn(6, generator=g).half(),
            "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.randn(5, generator=g).half(),
            "cond_stage_model.logit_scale": torch.randn((), generator=g).half(),
            "first_stage_model.decoder.conv_in.weight": torch.randn(3, 3, generator=g).half()}


def write_raw(path, header: dict, data: bytes):
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


@pytest.mark.parametrize("header,data,expect", [
    ({"w": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]}}, b"\0" * 4, "past the end of the file"),
    ({"w": {"dtype": "F16", "shape": [4], "data_offsets": [0, 6]}}, b"\0" * 8, "needs 8"),
    ({"w": {"dtype": "Q9", "shape": [4], "data_offsets": [0, 8]}}, b"\0" * 8, "unknown dtype"),
    ({"w": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
      "v": {"dtype": "F16", "shape": [2], "data_offsets": [2, 6]}}, b"\0" * 8, "overlaps"),
])
def test_a_lying_or_truncated_header_names_the_file_and_tensor(tmp_path, header, data, expect):
    path = tmp_path / "bad.safetensors"
    write_raw(path, header, data)
    with pytest.raises(TensorFileError) as e:
        TensorFile(str(path))
    assert "bad.safetensors" in str(e.value) and expect in str(e.value)
    if expect != "unknown dtype":
        assert "'w'" in str(e.value) or "'v'" in str(e.value)


def test_not_json_and_too_short(tmp_path):
    (tmp_path / "short.safetensors").write_bytes(b"abc")
    (tmp_path / "junk.safetensors").write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(TensorFileError, match="short.safetensors.*too short"):
        TensorFile(str(tmp_path / "short.safetensors"))
    with pytest.raises(TensorFileError, match="junk.safetensors.*not valid JSON"):
        TensorFile(str(tmp_path / "junk.safetensors"))


def test_scaled_fp8_and_comfy_quant_read_as_float32(tmp_path):
    w = torch.randn(4, 4)
    scale = torch.tensor(0.5)
    q = (w / scale).to(torch.float8_e4m3fn)
    save_dict(str(tmp_path / "s.safetensors"), {"l.weight": q, "l.scale_weight": scale,
                                                 "scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)})
    conf = torch.tensor(list(json.dumps({"format": "float8_e4m3fn"}).encode()), dtype=torch.uint8)
    save_dict(str(tmp_path / "c.safetensors"), {"l.weight": q, "l.weight_scale": scale, "l.comfy_quant": conf})
    want = q.float() * 0.5
    for name in ("s", "c"):
        f = TensorFile(str(tmp_path / f"{name}.safetensors"))
        assert torch.equal(f.read_float32("l.weight"), want)
        assert f.companions() == ({"l.scale_weight", "scaled_fp8"} if name == "s" else {"l.weight_scale", "l.comfy_quant"})
    conf = torch.tensor(list(json.dumps({"format": "nvfp4"}).encode()), dtype=torch.uint8)
    save_dict(str(tmp_path / "n.safetensors"), {"l.weight": q, "l.weight_scale": scale, "l.comfy_quant": conf})
    with pytest.raises(TensorFileError, match="'l.weight' is quantized as 'nvfp4'"):
        TensorFile(str(tmp_path / "n.safetensors")).read_float32("l.weight")


def test_weight_sum_equals_the_formula_and_a_failed_merge_leaves_nothing(tmp_path):
    a, b = sd1_like(1), sd1_like(2)
    save_dict(str(tmp_path / "a.safetensors"), a)
    save_dict(str(tmp_path / "b.safetensors"), b)
    out = str(tmp_path / "m.safetensors")
    settings = FileMergeSettings("Weight sum", 0.3, elemental_alpha="OUT04:attn2:0.9")
    result = merge_files({"a": str(tmp_path / "a.safetensors"), "b": str(tmp_path / "b.safetensors")}, out,
                         settings, "fp32")
    f = TensorFile(out)
    for k in a:
        got = f.read(k)
        if k.startswith("first_stage_model.") or k.endswith("logit_scale"):
            assert torch.equal(got, a[k].float())  # the VAE is A's; logit_scale too, as in the live merge
            continue
        r = 0.9 if "attn2" in k else 0.3
        assert torch.equal(got, torch.lerp(a[k].float(), b[k].float(), r)), k
    assert result.notes["unet"].patched == 3 and result.notes["clip"].patched == 1
    with pytest.raises(FileExistsError):
        merge_files({"a": str(tmp_path / "a.safetensors"), "b": str(tmp_path / "b.safetensors")}, out, settings)
    # B truncated after its header was written: the read fails, and no output is left under any name.
    data = (tmp_path / "b.safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[:-4])
    with pytest.raises(TensorFileError, match="t.safetensors"):
        merge_files({"a": str(tmp_path / "a.safetensors"), "b": str(tmp_path / "t.safetensors")},
                    str(tmp_path / "n.safetensors"), settings)
    assert sorted(os.listdir(tmp_path)) == ["a.safetensors", "b.safetensors", "m.safetensors", "t.safetensors"]


def test_command_line_merge_then_rebuild_by_recipe_gives_the_same_tensors(tmp_path, capsys):
    from merge_core.file_merge.cli import main
    save_dict(str(tmp_path / "a.safetensors"), sd1_like(1))
    save_dict(str(tmp_path / "b.safetensors"), sd1_like(2))
    save_dict(str(tmp_path / "c.safetensors"), sd1_like(3))
    srcs = [str(tmp_path / f"{n}.safetensors") for n in "abc"]
    first, again = str(tmp_path / "m.safetensors"), str(tmp_path / "r.safetensors")
    assert main(srcs + ["-o", first, "--mode", "Add difference", "--alpha", "0.4", "--spec", "OUT04:attn2:0.9",
                        "--precision", "bf16", "--quiet"]) == 0
    assert "OUT04" in capsys.readouterr().out  # the per-block summary
    assert main(["--recipe", first, "-o", again, "--quiet"]) == 0
    x, y = TensorFile(first), TensorFile(again)
    assert set(x.keys()) == set(y.keys())
    assert all(torch.equal(x.read(k).view(torch.int16), y.read(k).view(torch.int16)) for k in x.keys())
    # a source that changed since the merge is refused, naming it
    save_dict(str(tmp_path / "b.safetensors"), sd1_like(4))
    assert main(["--recipe", first, "-o", str(tmp_path / "z.safetensors")]) == 2
    assert "b.safetensors" in capsys.readouterr().err
    # a bad spec exits 2 with the entry's position
    assert main(srcs[:2] + ["-o", str(tmp_path / "z.safetensors"), "--spec", "OUT99::0.5"]) == 2
    assert "OUT99" in capsys.readouterr().err and not os.path.exists(tmp_path / "z.safetensors")

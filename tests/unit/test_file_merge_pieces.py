"""The file merge computes element-by-element keys in cache-sized pieces (merge_core/file_merge/pieces.py).
Each case here is merged twice, in pieces (made small so that every key spans several, with an uneven last
one) and as whole keys (the path the live-save equality tests compare), and every tensor must hold the same
bytes: modes, calc mode, precisions, the held-dtype rounding, quantized and mixed-dtype sources."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import merge_core.file_merge.merge as file_merge
import merge_core.merge.pieces as pieces
from merge_core.file_merge.merge import FileMergeSettings, merge_files
from merge_core.files.safetensors_stream import save_dict

U = "model.diffusion_model."
TE = "cond_stage_model.transformer.text_model."
SAME_IN_B_AND_C = U + "middle_block.1.proj_in.weight"


def model(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)
    out = {U + "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight": r(50, 61),
           U + "output_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": r(40, 77),
           U + "middle_block.1.norm.bias": r(2100),
           SAME_IN_B_AND_C: r(33, 70),
           TE + "encoder.layers.0.mlp.fc1.weight": r(64, 48),
           TE + "final_layer_norm.weight": r(48),
           "first_stage_model.decoder.conv_in.weight": r(9, 9)}
    for k in (U + "middle_block.1.norm.bias", SAME_IN_B_AND_C):  # signed zeros keep their sign in every path
        out[k].view(-1)[::7] = -0.0
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pieces")
    a, b, c = model(1), model(2), model(3)
    c[SAME_IN_B_AND_C] = b[SAME_IN_B_AND_C].clone()  # trainDifference keeps A on this key
    paths = {}
    save_dict(str(d / "a.safetensors"), {k: v.half() for k, v in a.items()})
    # B: float32, its UNet attention weight scaled fp8 (a quantized source among plain ones)
    key = U + "output_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
    scale = torch.tensor(0.03125)
    b_file = dict(b)
    b_file[key] = (b[key] / scale).to(torch.float8_e4m3fn)
    b_file[key[:-len("weight")] + "scale_weight"] = scale
    b_file["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    save_dict(str(d / "b.safetensors"), b_file)
    c_file = {k: v.to(torch.bfloat16) if v.dim() > 1 else v.half() for k, v in c.items()}
    c_file[SAME_IN_B_AND_C] = c[SAME_IN_B_AND_C]  # float32, as B holds it
    save_dict(str(d / "c.safetensors"), c_file)
    for n in "abc":
        paths[n] = str(d / f"{n}.safetensors")
    return d, paths


CASES = {
    "weight sum, spec, fp16": (FileMergeSettings("Weight sum", 0.3, elemental_alpha="OUT04:attn2:0.9\nBASE::0.6"),
                               "fp16", "ab", None),
    "add difference, bf16": (FileMergeSettings("Add difference", 0.7), "bf16", "abc", None),
    "trainDifference, fp32, held fp16": (FileMergeSettings("Add difference", 0.45, calc_mode="trainDifference"),
                                         "fp32", "abc", {"unet": torch.float16, "clip": torch.float16}),
    "sum twice, fp8": (FileMergeSettings("Sum twice", 0.35, beta=0.6), "fp8_e4m3fn", "abc", None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_pieces_write_the_bytes_of_whole_keys(files, case, monkeypatch):
    d, paths = files
    settings, precision, names, held = CASES[case]
    used = {n: paths[n] for n in names}
    monkeypatch.setattr(pieces, "PIECE_ELEMENTS", 1000)
    in_pieces = str(d / "pieces.safetensors")
    merge_files(used, in_pieces, settings, precision, weight_dtypes=held)
    monkeypatch.setattr(file_merge, "computes_by_element", lambda work: False)
    whole = str(d / "whole.safetensors")
    merge_files(used, whole, settings, precision, weight_dtypes=held)
    got, want = load_file(in_pieces), load_file(whole)
    try:
        assert list(got) == list(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
            assert torch.equal(got[k].view(torch.uint8), want[k].view(torch.uint8)), f"{case}: {k} differs"
        a = load_file(paths["a"])
        assert not torch.equal(got[U + "middle_block.1.norm.bias"].float(), a[U + "middle_block.1.norm.bias"].float())
        if "trainDifference" in case:  # B equals C on this key: A's values, signed zeros included
            assert torch.equal(got[SAME_IN_B_AND_C].half().view(torch.int16), a[SAME_IN_B_AND_C].view(torch.int16))
    finally:
        for p in (in_pieces, whole):
            (d / p).unlink(missing_ok=True)

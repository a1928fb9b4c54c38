"""The streaming safetensors writer against the safetensors library itself (the independent oracle)."""
from __future__ import annotations

import gc
import json
import os
import struct
import weakref

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from merge_core.files.safetensors_stream import (StreamWriteError, plan_file, read_header, save_dict,
                                           write_streaming)


def _mixed() -> dict[str, torch.Tensor]:
    """Every dtype the writer supports, odd sizes (alignment), a scalar, an empty and a non-contiguous tensor."""
    g = torch.Generator().manual_seed(7)
    f = torch.randn(5, 3, generator=g) * 30
    return {
        "model.w32": f,
        "model.b16": f[:, 1].to(torch.float16),
        "model.bf": torch.randn(7, generator=g).to(torch.bfloat16),
        "model.fp8a": (torch.randn(3, 3, generator=g) * 10).to(torch.float8_e4m3fn),
        "model.fp8b": (torch.randn(9, generator=g) * 100).to(torch.float8_e5m2),
        "z.scalar": torch.tensor(3.25),
        "a.empty": torch.zeros(0, 4),
        "t.transposed": f.t(),  # not contiguous
        "ids": torch.arange(5, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "v_pred": torch.tensor([]),
        "f64": torch.randn(2, generator=g, dtype=torch.float64),
        "u8": torch.arange(3, dtype=torch.uint8),
        "i32": torch.arange(3, dtype=torch.int32),
        "i16": torch.arange(3, dtype=torch.int16),
        "i8": torch.arange(3, dtype=torch.int8),
    }


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8) if t.numel() else t.reshape(-1)


def _assert_same_tensors(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(_bits(a[k]), _bits(b[k])), k


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}, {"recipe": '{"é": "\\n\\"x\\"", "a": [1]}'}])
def test_bytes_equal_safetensors_save_file(tmp_path, metadata):
    tensors = _mixed()
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    save_dict(str(ours), tensors, metadata)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(theirs), metadata=metadata)
    assert ours.read_bytes() == theirs.read_bytes()
    _assert_same_tensors(load_file(str(ours)), tensors)


def test_many_metadata_entries_sorted_and_equal_to_safetensors(tmp_path):
    """safetensors writes metadata in hash-map order (varies per run); ours sorts: same content, same data."""
    tensors = _mixed()
    md = {"zeta": "1", "alpha": "2", "format": "pt", "elemental_merge_recipe": json.dumps({"v": 2})}
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    save_dict(str(ours), tensors, md)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(theirs), metadata=md)
    with safe_open(str(ours), "pt") as f:
        assert f.metadata() == md
    h_ours, m_ours = read_header(str(ours))
    h_theirs, _ = read_header(str(theirs))
    assert h_ours == h_theirs
    assert list(m_ours) == sorted(md)
    # identical data sections: everything after each header
    n_ours = 8 + struct.unpack("<Q", ours.read_bytes()[:8])[0]
    n_theirs = 8 + struct.unpack("<Q", theirs.read_bytes()[:8])[0]
    assert ours.read_bytes()[n_ours:] == theirs.read_bytes()[n_theirs:]
    save_dict(str(tmp_path / "again.safetensors"), tensors, dict(reversed(list(md.items()))))
    assert (tmp_path / "again.safetensors").read_bytes() == ours.read_bytes()


def test_header_layout_by_hand(tmp_path):
    """Order: widest dtype first, then name; offsets contiguous; JSON padded with spaces to 8 bytes."""
    layout = {"b": (torch.float16, (3,)), "a": (torch.float16, (1,)), "c": (torch.float32, (2, 2)),
              "d": (torch.float8_e4m3fn, (5,)), "e": (torch.bfloat16, (1,))}
    plan = plan_file(layout, {"k": "v"})
    assert plan.order == ["c", "e", "a", "b", "d"]
    assert [(t.begin, t.end) for t in plan.tensors] == [(0, 16), (16, 18), (18, 20), (20, 26), (26, 31)]
    n = struct.unpack("<Q", plan.header[:8])[0]
    assert n % 8 == 0 and n == len(plan.header) - 8
    text = plan.header[8:].decode()
    expected = ('{"__metadata__":{"k":"v"},"c":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},'
                '"e":{"dtype":"BF16","shape":[1],"data_offsets":[16,18]},'
                '"a":{"dtype":"F16","shape":[1],"data_offsets":[18,20]},'
                '"b":{"dtype":"F16","shape":[3],"data_offsets":[20,26]},'
                '"d":{"dtype":"F8_E4M3","shape":[5],"data_offsets":[26,31]}}')
    assert text == expected + " " * (-len(expected) % 8)
    assert plan.file_size == len(plan.header) + 31


def test_callback_order_and_each_tensor_dropped(tmp_path):
    """The callback runs once per tensor in file order; the writer keeps no reference to a written tensor."""
    layout = {f"k{i}": (torch.float32, (64, 64)) for i in (3, 1, 2, 0)}
    calls, alive = [], []

    def produce(name):
        calls.append(name)
        assert all(r() is None for r in alive), "a tensor written earlier is still referenced"
        t = torch.full((64, 64), float(name[1:]))
        alive.append(weakref.ref(t))
        return t

    def after(i, name):
        gc.collect()

    path = tmp_path / "s.safetensors"
    write_streaming(str(path), layout, produce, on_tensor=after)
    gc.collect()
    assert calls == ["k0", "k1", "k2", "k3"]
    assert all(r() is None for r in alive)
    back = load_file(str(path))
    assert all(torch.equal(back[k], torch.full((64, 64), float(k[1:]))) for k in layout)


def test_fp8_values_round_trip(tmp_path):
    """fp8 bytes stored as produced: loading gives the exact cast of the fp32 source."""
    src = torch.linspace(-500, 500, 1001)
    tensors = {"e4": src.to(torch.float8_e4m3fn), "e5": src.to(torch.float8_e5m2)}
    save_dict(str(tmp_path / "f.safetensors"), tensors)
    back = load_file(str(tmp_path / "f.safetensors"))
    assert back["e4"].dtype == torch.float8_e4m3fn and back["e5"].dtype == torch.float8_e5m2
    assert torch.equal(back["e4"].float(), src.to(torch.float8_e4m3fn).float())
    assert torch.equal(back["e5"].float(), src.to(torch.float8_e5m2).float())
    header, _ = read_header(str(tmp_path / "f.safetensors"))
    assert header["e4"]["dtype"] == "F8_E4M3" and header["e5"]["dtype"] == "F8_E5M2"


def test_mismatch_names_the_tensor_and_leaves_no_file(tmp_path):
    path = tmp_path / "bad.safetensors"
    layout = {"a": (torch.float16, (2,)), "b": (torch.float16, (3,))}
    with pytest.raises(StreamWriteError, match=r"tensor 'b': the header says torch.float16 \[3\] but the "
                                               r"callback returned torch.float32 \[3\]"):
        write_streaming(str(path), layout, lambda n: torch.zeros(2 if n == "a" else 3,
                                                                 dtype=torch.float16 if n == "a" else torch.float32))
    assert os.listdir(tmp_path) == []
    with pytest.raises(StreamWriteError, match=r"tensor 'a': the header says torch.float16 \[2\] but the "
                                               r"callback returned torch.float16 \[2, 1\]"):
        write_streaming(str(path), layout, lambda n: torch.zeros(2, 1, dtype=torch.float16))
    assert os.listdir(tmp_path) == []


def test_bad_plans():
    with pytest.raises(StreamWriteError, match=r"tensor 'x': dtype torch.complex64 .*valid: bool, uint8"):
        plan_file({"x": (torch.complex64, (1,))})
    with pytest.raises(StreamWriteError, match="reserved"):
        plan_file({"__metadata__": (torch.float32, (1,))})
    with pytest.raises(StreamWriteError, match="str to str; not: 'n'"):
        plan_file({"x": (torch.float32, (1,))}, {"n": 1})


def test_empty_file_matches_safetensors(tmp_path):
    save_dict(str(tmp_path / "o.safetensors"), {}, {"a": "b"})
    save_file({}, str(tmp_path / "t.safetensors"), metadata={"a": "b"})
    assert (tmp_path / "o.safetensors").read_bytes() == (tmp_path / "t.safetensors").read_bytes()

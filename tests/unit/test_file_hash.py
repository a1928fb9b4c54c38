"""File hashes: hashlib on the bytes is the oracle; the cache is checked by counting real reads."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from merge_core.files import file_hash
from merge_core.files.file_hash import file_sha256, is_sha256, short_hash


@pytest.fixture
def reads(monkeypatch):
    """Counts how often a file's bytes are actually hashed."""
    seen = []
    real = file_hash.sha256_of_file

    def counting(path):
        seen.append(path)
        return real(path)

    monkeypatch.setattr(file_hash, "sha256_of_file", counting)
    return seen


def _write(path, data: bytes, mtime_ns: int):
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_hash_equals_hashlib_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(file_hash, "CHUNK", 7)  # many chunks, the last one short
    data = bytes(range(256)) * 3 + b"tail"
    p = tmp_path / "m.safetensors"
    p.write_bytes(data)
    assert file_sha256(str(p)) == hashlib.sha256(data).hexdigest()
    (tmp_path / "e").write_bytes(b"")
    assert file_sha256(str(tmp_path / "e")) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_cache_hit_miss_and_invalidation(tmp_path, reads):
    cache = str(tmp_path / "cache" / "hashes.json")  # folder created on first write
    p = tmp_path / "m.safetensors"
    _write(p, b"first", 1_000_000_000_000)
    h1 = file_sha256(str(p), cache)
    assert h1 == hashlib.sha256(b"first").hexdigest() and len(reads) == 1
    assert file_sha256(str(p), cache) == h1 and len(reads) == 1          # hit
    stored = json.load(open(cache))
    assert stored == {"version": 1, "files": {str(p): {"size": 5, "mtime_ns": 1_000_000_000_000, "sha256": h1}}}

    _write(p, b"other", 1_000_000_000_000)                                 # same size and mtime: trusted
    assert file_sha256(str(p), cache) == h1 and len(reads) == 1
    _write(p, b"other", 2_000_000_000_000)                                 # mtime changed
    assert file_sha256(str(p), cache) == hashlib.sha256(b"other").hexdigest() and len(reads) == 2
    _write(p, b"longer!", 2_000_000_000_000)                               # size changed
    assert file_sha256(str(p), cache) == hashlib.sha256(b"longer!").hexdigest() and len(reads) == 3


def test_relative_and_absolute_paths_share_an_entry(tmp_path, reads, monkeypatch):
    cache = str(tmp_path / "h.json")
    (tmp_path / "a.bin").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    file_sha256("a.bin", cache)
    file_sha256(str(tmp_path / "a.bin"), cache)
    assert len(reads) == 1


@pytest.mark.parametrize("content", ["not json", json.dumps({"version": 99, "files": {}}), "[]",
                                     json.dumps({"version": 1, "files": {"x": 1}})])
def test_corrupt_or_foreign_cache_is_rebuilt(tmp_path, reads, content):
    cache = tmp_path / "h.json"
    cache.write_text(content)
    p = tmp_path / "a.bin"
    p.write_bytes(b"abc")
    assert file_sha256(str(p), str(cache)) == hashlib.sha256(b"abc").hexdigest()
    assert json.load(open(cache))["files"][str(p)]["sha256"] == hashlib.sha256(b"abc").hexdigest()


def test_bad_cached_value_is_not_trusted(tmp_path, reads):
    cache = tmp_path / "h.json"
    p = tmp_path / "a.bin"
    p.write_bytes(b"abc")
    st = os.stat(p)
    cache.write_text(json.dumps({"version": 1, "files": {str(p): {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                                                  "sha256": "nothex"}}}))
    assert file_sha256(str(p), str(cache)) == hashlib.sha256(b"abc").hexdigest() and len(reads) == 1


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        file_sha256(str(tmp_path / "nope.safetensors"), str(tmp_path / "h.json"))


def test_helpers():
    h = hashlib.sha256(b"x").hexdigest()
    assert is_sha256(h) and not is_sha256(h.upper()) and not is_sha256(h[:-1]) and not is_sha256(None)
    assert short_hash(h) == h[:10]

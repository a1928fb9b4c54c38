"""sha256 of model files, cached by (path, size, mtime) so a 7 GB checkpoint is hashed once, not per save.

A recipe names each source by file name and sha256; the hash is what proves a rebuilt merge used the same
file. Hashing reads the whole file (about 10 s per GB on a slow disk), so the result is kept in a small JSON
file keyed by the absolute path and invalidated when the file's size or modification time (ns) changes,
the same test `make` and most sync tools trust. The cache location is the caller's choice (the nodes pass
ComfyUI's user directory). A missing or corrupt cache file is not an error: it is rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading

CACHE_VERSION = 1
CHUNK = 16 * 1024 * 1024
SHORT = 10  # A1111/Civitai "AutoV2" short form: the first 10 hex digits of the full sha256

log = logging.getLogger("elemental_merge")
_lock = threading.Lock()


def sha256_of_file(path: str) -> str:
    """The full sha256 of a file's bytes, read in chunks (memory stays flat for any file size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(CHUNK)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _stamp(path: str) -> dict:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_cache(cache_path: str) -> dict:
    try:
        with open(cache_path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("[Elemental Merge] hash cache %s unreadable (%s): starting a new one", cache_path, e)
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("files"), dict):
        return {}
    return data["files"]


def _write_cache(cache_path: str, files: dict) -> None:
    """Atomic replace, so a reader in another process never sees half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
    tmp = f"{cache_path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"version": CACHE_VERSION, "files": files}, f, indent=1, sort_keys=True)
    os.replace(tmp, cache_path)


def file_sha256(path: str, cache_path: str | None = None) -> str:
    """sha256 of `path`, from the cache at `cache_path` when its size and mtime still match, else computed
    (and stored). Without `cache_path` it is always computed."""
    key = os.path.abspath(path)
    stamp = _stamp(key)
    if cache_path is None:
        return sha256_of_file(key)
    with _lock:
        entry = _read_cache(cache_path).get(key)
    if isinstance(entry, dict) and {k: entry.get(k) for k in stamp} == stamp and is_sha256(entry.get("sha256")):
        return entry["sha256"]
    digest = sha256_of_file(key)
    if _stamp(key) != stamp:  # changed while we read it: do not cache a hash of a moving target
        log.warning("[Elemental Merge] %s changed while it was hashed; not caching its hash", key)
        return digest
    with _lock:
        files = _read_cache(cache_path)  # re-read: another hash may have been stored meanwhile
        files[key] = {**stamp, "sha256": digest}
        _write_cache(cache_path, files)
    return digest


def is_sha256(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def short_hash(sha256: str) -> str:
    """The 10-digit form Civitai and A1111 show ("AutoV2"), for labels and error messages."""
    return sha256[:SHORT]

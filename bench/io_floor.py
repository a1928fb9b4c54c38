"""The I/O floor of a file-to-file merge: read every tensor of the sources and write the output's bytes,
with plain file I/O and no merge. The least the streaming file merge can cost on this disk.

It reads the way the merge's reader does (merge_core.files.tensor_file: one `os.preadv` per tensor into a
fresh buffer of the tensor's size), in A's file order, A's tensor and then the same key of each other
source, and writes A's bytes (header included) to OUT: a file of the output's size when the output is in
A's dtype (fp16 sources saved as fp16). Each buffer is dropped once written, so its own peak RSS is the
interpreter plus the largest tensor.

Run as a child process (bench.bench_file_merge times it and reads its peak RSS):
    python -m bench.io_floor OUT A.safetensors B.safetensors [C.safetensors]
"""
from __future__ import annotations

import json
import os
import struct
import sys


def tensor_spans(path: str) -> tuple[int, dict]:
    """(header bytes incl. the length prefix, {name: (begin, end)} absolute offsets) of a safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return 8 + n, {k: (8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1]) for k, v in header.items()}


def read_span(fd: int, begin: int, end: int) -> bytearray:
    buf = bytearray(end - begin)
    view, done = memoryview(buf), 0
    while done < len(buf):
        got = os.preadv(fd, [view[done:]], begin + done)
        if got <= 0:
            raise OSError(f"short read at {begin + done}")
        done += got
    return buf


def copy_floor(out: str, sources: list[str]) -> tuple[int, int]:
    """Reads every tensor of `sources` and writes A's bytes to `out`; (bytes read, bytes written)."""
    spans = [tensor_spans(p) for p in sources]
    fds = [os.open(p, os.O_RDONLY) for p in sources]
    read = written = 0
    try:
        head_len, a_spans = spans[0]
        order = sorted(a_spans, key=lambda k: a_spans[k][0])
        with open(out, "wb") as f:
            f.write(read_span(fds[0], 0, head_len))
            written += head_len
            for name in order:
                data = read_span(fds[0], *a_spans[name])
                for fd, (_, other) in zip(fds[1:], spans[1:]):
                    if name in other:
                        read += len(read_span(fd, *other[name]))
                f.write(data)
                read += len(data)
                written += len(data)
                del data
            for fd, (_, other) in zip(fds[1:], spans[1:]):  # keys only the other sources hold
                for name in other.keys() - a_spans.keys():
                    read += len(read_span(fd, *other[name]))
    finally:
        for fd in fds:
            os.close(fd)
    return read, written


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    read, written = copy_floor(argv[0], argv[1:])
    print(f"read {read / 1e9:.2f} GB, wrote {written / 1e9:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

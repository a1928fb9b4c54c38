"""What the per-architecture end-to-end tests share: graph pieces, the saved-file check and the report parser.

The ratio of each key is NOT computed here: every test passes its own predicate (`ratio_of`), written in the
test from the block layout, so that the check is independent of merge_core's tables.
"""
from __future__ import annotations

import glob
import json
import os
import re
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterable

import numpy as np
import torch
from safetensors import safe_open

from devkit.fixtures_arch import FIXTURES
from devkit.proc_memory import PeakProbe
from devkit.server import ComfyError
from devkit.workflows import only_image

# Output keys that a save adds or that a merge never touches (ComfyUI's own bookkeeping).
SAVE_EXTRAS = ("v_pred", "ztsnr")
UNMERGED_SUFFIXES = ("logit_scale", "position_ids")


def sample_nodes(model, clip, vae, prefix: str, start: int, latent: str = "EmptyLatentImage",
                 cfg: float = 5.0, scheduler: str = "normal") -> dict:
    """API nodes: encode two prompts with `clip`, sample `model` 1 step at 64x64, decode with `vae`, save the
    image and the sampled latent (ids start..start+6)."""
    s = start
    return {
        str(s): {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", "clip": clip}},
        str(s + 1): {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": clip}},
        str(s + 2): {"class_type": latent, "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        str(s + 3): {"class_type": "KSampler", "inputs": {
            "model": model, "positive": [str(s), 0], "negative": [str(s + 1), 0], "latent_image": [str(s + 2), 0],
            "seed": 11, "steps": 1, "cfg": cfg, "sampler_name": "euler", "scheduler": scheduler, "denoise": 1.0}},
        str(s + 4): {"class_type": "VAEDecode", "inputs": {"samples": [str(s + 3), 0], "vae": vae}},
        str(s + 5): {"class_type": "SaveImage", "inputs": {"images": [str(s + 4), 0], "filename_prefix": prefix}},
        str(s + 6): {"class_type": "SaveLatent", "inputs": {"samples": [str(s + 3), 0],
                                                             "filename_prefix": "latents/" + prefix}},
    }


def saved_latent(server, outputs: dict, node_id: str) -> torch.Tensor:
    """The latent a SaveLatent node wrote (read from the server's output folder)."""
    (entry,) = outputs[str(node_id)]["latents"]
    path = os.path.join(server.output_dir, entry.get("subfolder", ""), entry["filename"])
    with safe_open(path, "pt") as f:
        return f.get_tensor("latent_tensor")


class TensorFile:
    """A safetensors file read one tensor at a time with plain reads (no mmap): `safe_open` maps the file, and
    the pages a check touches count in the test process's RSS until the file is closed, which would make a
    multi-GB check look like it needs that much memory. Here each tensor is its own buffer, freed with it."""

    def __init__(self, path: str):
        from merge_core.files.safetensors_stream import TORCH_DTYPE, read_header
        self.path = path
        self.header, self._metadata = read_header(path)
        with open(path, "rb") as f:
            self._data_start = 8 + int.from_bytes(f.read(8), "little")
        self._dtypes = TORCH_DTYPE
        self._fd = os.open(path, os.O_RDONLY)

    def keys(self) -> list[str]:
        return list(self.header)

    def metadata(self) -> dict:
        return dict(self._metadata)

    def get_tensor(self, key: str) -> torch.Tensor:
        entry = self.header[key]
        begin, end = entry["data_offsets"]
        raw = bytearray(end - begin)
        view, done = memoryview(raw), 0
        while done < len(raw):
            n = os.preadv(self._fd, [view[done:]], self._data_start + begin + done)
            if n <= 0:
                raise OSError(f"{self.path}: short read at {key}")
            done += n
        dtype = self._dtypes[entry["dtype"]]
        if not raw:
            return torch.empty(entry["shape"], dtype=dtype)
        return torch.frombuffer(raw, dtype=dtype).reshape(entry["shape"])

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def newest_file(output_dir: str, prefix: str) -> str:
    """The highest-numbered `<prefix>_NNNNN_.safetensors` under output_dir (prefix may hold a subfolder)."""
    found = sorted(glob.glob(os.path.join(output_dir, f"{prefix}_*_.safetensors")))
    if not found:
        raise AssertionError(f"no saved file {prefix}_*: {os.listdir(output_dir)}")
    return found[-1]


def check_weight_sum_file(path: str, source_a: str, source_b: str, ratio_of: Callable[[str], float | None],
                          source_key: Callable[[str], str] = lambda k: k, expect_keys: Iterable[str] | None = None
                          ) -> dict:
    """Every tensor of a saved Weight-sum merge against A(1-a)+Ba, computed here from the source files.

    `ratio_of(out_key)` is the test's own ratio for a key (None: not merged, must be A's, bit for bit). A merged
    tensor must be the formula, evaluated here in float64, rounded to the saved dtype: each element one of the
    two representable neighbours of the exact value (ComfyUI merges in float32, with lerp, and rounds once;
    a wrong ratio is off by far more). One tensor at a time is held, so this fits beside a server.
    Returns {"checked", "merged", "ratios": {ratio: count}} for the test to assert on."""
    counts: dict[float, int] = {}
    merged = 0
    with TensorFile(path) as out, TensorFile(source_a) as fa, TensorFile(source_b) as fb:
        out_keys = list(out.keys())
        if expect_keys is not None:
            missing = set(expect_keys) - set(out_keys)
            assert not missing, f"{len(missing)} keys missing from the saved file, e.g. {sorted(missing)[:5]}"
        a_keys, b_keys = set(fa.keys()), set(fb.keys())
        for key in out_keys:
            if key in SAVE_EXTRAS:
                continue
            src = source_key(key)
            got = out.get_tensor(key)
            if src not in a_keys:
                assert key.endswith(UNMERGED_SUFFIXES), f"{key}: in the saved file but not in A"
                continue
            a = ratio_of(key)
            A = fa.get_tensor(src)
            if a is None or a == 0 or not got.is_floating_point() or src not in b_keys:
                assert torch.equal(got, A.to(got.dtype)), f"{key}: expected A's weight (ratio {a})"
                continue
            B = fb.get_tensor(src)
            assert_rounded_formula(got, A, B, a, key)
            merged += 1
            counts[a] = counts.get(a, 0) + 1
        return {"checked": len(out_keys), "merged": merged, "ratios": counts, "metadata": out.metadata()}


def dtype_ulp(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The spacing of `dtype` at each value of `x` (float64): the largest gap to a neighbour."""
    h = x.to(dtype)
    up = torch.nextafter(h, torch.tensor(float("inf"), dtype=dtype)).double() - h.double()
    down = h.double() - torch.nextafter(h, torch.tensor(float("-inf"), dtype=dtype)).double()
    return torch.maximum(up, down)


def assert_rounded_formula(got: torch.Tensor, A: torch.Tensor, B: torch.Tensor, a: float, key: str = "") -> None:
    """Every element of `got` is one of the two `got.dtype` values next to A(1-a)+Ba (exact, float64).

    Cheap on GB-sized models: the formula in float32 rounded to `got.dtype` is the answer for nearly every
    element; only the elements where `got` differs from it (values near a rounding boundary) are checked
    against the float64 value."""
    ref = (A.float() * (1 - a) + a * B.float()).to(got.dtype)
    off = got != ref
    if not off.any():
        return
    exact = A[off].double() * (1 - a) + a * B[off].double()
    err = (got[off].double() - exact).abs()
    ulp = dtype_ulp(exact, got.dtype)
    assert (err <= ulp).all(), (f"{key}: ratio {a}: {int(off.sum())} elements off the rounded formula, up to "
                                f"{(err / ulp).max().item():.2f} ulp of {got.dtype}")


_SUMMARY = re.compile(r"^(\S+)\s+(\d+)\s+(\S+)$")


def report_block_summary(report: str, title: str = "alpha") -> dict[str, tuple[int, str]]:
    """{block: (keys changed, ratio range)} from the per-block summary of the change report's `title` part."""
    lines = report.splitlines()
    try:
        start = lines.index(title)
    except ValueError:
        raise AssertionError(f"no '{title}' section in the report:\n{report[:2000]}")
    out: dict[str, tuple[int, str]] = {}
    in_summary = False
    for line in lines[start + 1:]:
        if line.startswith("block ") and "keys changed" in line:
            in_summary = True
            continue
        if in_summary:
            m = _SUMMARY.match(line.strip())
            if not m:
                break
            out[m.group(1)] = (int(m.group(2)), m.group(3))
    return out


def spec_ratio(key: str, block: str | None, start: float | None,
               entries: Iterable[tuple[set, tuple[str, ...], bool, float]]) -> float | None:
    """A key's ratio after spec entries given as (blocks, elements, elements inverted, ratio), last one winning:
    the test-side statement of "an entry selects a key when its block is listed and an element is a substring
    of the key (or, inverted, none is)"."""
    if block is None:
        return None
    r = start
    for blocks, elements, invert, ratio in entries:
        if block not in blocks:
            continue
        hit = any(e in key for e in elements) if elements else True
        if hit != invert:
            r = ratio
    return r


def run_patient(server, prompt: dict, timeout: float = 1200, poll_timeout: float = 300) -> dict:
    """`server.run`, tolerating a server that answers slowly while it holds the GIL for long (a multi-GB save
    serializes in one call): each /history poll may take `poll_timeout` seconds."""
    return server.run(prompt, timeout, poll_timeout)


# ---- graph pieces and assertions shared by the architecture tests ----------------------------------------

def merge_recipe(metadata: dict) -> dict:
    """The merge node of a saved file's recipe (format 2, docs/recipe.md)."""
    doc = json.loads(metadata["elemental_merge_recipe"])
    assert doc["format"] == "elemental-merge-recipe" and doc["save"]["precision"] == "fp16", doc
    assert doc["model"]["kind"] == "merge", doc
    return doc["model"]


def name(fixtures, kind, who="A") -> str:
    return os.path.basename(fixtures[(kind, who)])


def assert_sampled(server, outputs, merged_ids, plain_ids):
    """The merged model's latent is finite and its image differs from model A's."""
    latent = saved_latent(server, outputs, merged_ids[1])
    assert latent.isfinite().all(), "the merged model sampled non-finite values"
    assert latent.abs().sum() > 0
    merged, plain = only_image(server, outputs, merged_ids[0]), only_image(server, outputs, plain_ids[0])
    assert merged.std() > 0, "the merged image is flat"
    assert not np.array_equal(merged, plain), "the merged model gives A's image"
    return merged


ARCH_LABELS = {"sd1": "SD1.x", "sd2v": "SD2.x", "sd3": "SD3", "flux_dev": "Flux", "sdxl": "SDXL"}


def loader_node(fixtures, kind: str, who: str = "A") -> dict:
    """The stock loader node for a fixture: Load Diffusion Model for UNet-only files, Load Checkpoint otherwise
    ("sd1" is the SD1.5 test checkpoint test_A)."""
    if kind == "sd1":
        return {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "test_A.safetensors"}}
    if FIXTURES[kind].folder == "diffusion_models":
        return {"class_type": "UNETLoader", "inputs": {"unet_name": name(fixtures, kind, who),
                                                       "weight_dtype": "default"}}
    return {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name(fixtures, kind, who)}}


def assert_mismatch_refused(server, loader_a: dict, loader_b: dict, label_a: str, label_b: str) -> None:
    """Merging models of two architectures stops with an error naming both inputs and both architectures."""
    prompt = {"1": loader_a, "2": loader_b,
              "52": {"class_type": "ElementalMerge", "inputs": {
                  "model_a": ["1", 0], "model_b": ["2", 0], "mode": "Weight sum", "alpha": 0.5, "beta": 0.0,
                  "print_change": False}},
              "60": {"class_type": "PreviewAny", "inputs": {"source": ["52", 2]}}}
    try:
        run_patient(server, prompt)
    except ComfyError as err:
        text = str(err)
    else:
        raise AssertionError(f"{label_a} against {label_b} merged without an error")
    assert "model_a" in text and "model_b" in text and "architectures differ" in text, text[:3000]
    assert label_a in text and label_b in text, text[:3000]
    for slot, loader, label in (("model_a", loader_a, label_a), ("model_b", loader_b, label_b)):
        if loader["class_type"] == "CheckpointLoaderSimple":  # the graph names a stock-loaded checkpoint
            assert f"{slot} ({loader['inputs']['ckpt_name']}, {label})" in text, text[:3000]


def merge_node(model_a, model_b, clip_a=None, clip_b=None, weights="", spec="", arch="auto", alpha=0.5) -> dict:
    """Nodes 50 (BlockWeights), 51 (ElementalSpec), 52 (ElementalMerge, print_change on)."""
    inputs = {"model_a": model_a, "model_b": model_b, "mode": "Weight sum", "alpha": alpha, "beta": 0.0,
              "print_change": True, "elemental_alpha": ["51", 0]}
    if clip_a is not None:
        inputs.update(clip_a=clip_a, clip_b=clip_b)
    nodes = {"51": {"class_type": "ElementalSpec", "inputs": {"spec": spec, "architecture": arch}},
             "52": {"class_type": "ElementalMerge", "inputs": inputs}}
    if weights:
        nodes["50"] = {"class_type": "BlockWeights", "inputs": {"weights": weights, "architecture": arch}}
        inputs["block_weights_alpha"] = ["50", 0]
    return nodes


def in_proj_count(keys) -> int:
    """Keys as ComfyUI holds them: an OpenCLIP fused in_proj weight/bias is three (q, k, v) inside ComfyUI."""
    return sum(3 if k.endswith((".in_proj_weight", ".in_proj_bias")) else 1 for k in keys)


def expected_summary(keys, block_of, ratio_of, spec_blocks, count=len) -> dict:
    """{block: number of keys a spec entry selects}, from the test's own predicates."""
    out: dict[str, list] = {}
    for k in keys:
        b = block_of(k)
        if b in spec_blocks and ratio_of(k, spec_only=True) is not None:
            out.setdefault(b, []).append(k)
    return {b: count(v) for b, v in out.items()}


def start_server(comfyui_dir: str, checkpoints: dict, linked: dict, extra_args=("--fp16-unet", "--fp16-text-enc")):
    """A started ComfyServer with `checkpoints` ({name: path}) in models/checkpoints and `linked` ({path:
    model folder}) linked into their folders (diffusion_models, vae, ...)."""
    from devkit.server import ComfyServer
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    srv = ComfyServer(comfyui_dir, python, checkpoints=checkpoints, extra_args=tuple(extra_args))
    for path, folder in linked.items():
        target = os.path.join(srv.models_dir, folder)
        os.makedirs(target, exist_ok=True)
        os.symlink(path, os.path.join(target, os.path.basename(path)))
    try:
        srv.start()
    except BaseException:
        srv.cleanup()
        raise
    return srv


@contextmanager
def measured(request, server, settle: float):
    """Around one test of a module's server: its wall time and peak RSS (server + this process), printed and
    appended to the TSV (`record_peak`); then the server frees its models, waiting `settle` seconds."""
    with PeakProbe([server.proc.pid, os.getpid()]) as probe:
        yield
    record_peak(request.node.nodeid, probe)
    server.free_memory(settle=settle)


def record_peak(nodeid: str, probe: PeakProbe) -> None:
    """Prints a test's time and peak RSS and appends them to $ELEMENTAL_CACHE/arch_test_peaks.tsv."""
    print("\n[peak] " + probe.line(nodeid.rsplit("::", 1)[-1]))
    cache = os.environ.get("ELEMENTAL_CACHE", os.path.expanduser("~/.cache/comfyui-elemental-merge"))
    with open(os.path.join(cache, "arch_test_peaks.tsv"), "a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\t{nodeid}\t{probe.seconds:.1f}\t{probe.total_gib:.2f}\t"
                f"{probe.anon_gib:.2f}\n")

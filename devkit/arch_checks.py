"""What the per-architecture end-to-end tests share: graph pieces, the saved-file check and the report parser.

The ratio of each key is NOT computed here: every test passes its own predicate (`ratio_of`), written in the
test from the block layout, so that the check is independent of merge_core's tables.
"""
from __future__ import annotations

import glob
import os
import re
from typing import Callable, Iterable

import torch
from safetensors import safe_open

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

    `ratio_of(out_key)` is the test's own ratio for a key (None: not merged, must be A's). Weights are merged
    by ComfyUI in float32 and rounded once to the saved dtype, so the formula is evaluated the same way and
    compared exactly. One tensor at a time is held, so this fits beside a server holding the models.
    Returns {"checked", "merged", "ratios": {ratio: count}} for the test to assert on."""
    counts: dict[float, int] = {}
    merged = 0
    with safe_open(path, "pt") as out, safe_open(source_a, "pt") as fa, safe_open(source_b, "pt") as fb:
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
            expected = (A.float() * (1 - a) + a * B.float()).to(got.dtype)
            diff = (got.float() - expected.float()).abs().max().item()
            assert torch.equal(got, expected), f"{key}: ratio {a}: max |saved - formula| = {diff}"
            merged += 1
            counts[a] = counts.get(a, 0) + 1
        return {"checked": len(out_keys), "merged": merged, "ratios": counts, "metadata": out.metadata()}


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
    import json
    import time
    from devkit.server import ComfyError

    prompt_id = server.queue(prompt)
    deadline = time.time() + timeout
    while time.time() < deadline:
        history = server.get_json(f"/history/{prompt_id}", timeout=poll_timeout)
        if prompt_id in history:
            entry = history[prompt_id]
            status = entry.get("status", {})
            if status.get("status_str") == "error" or not status.get("completed", True):
                raise ComfyError(f"prompt failed: {json.dumps(status.get('messages'), indent=1)[-6000:]}"
                                 f"\n--- server log ---\n{server.log_tail()}")
            return entry["outputs"]
        if server.proc is not None and server.proc.poll() is not None:
            raise ComfyError(f"ComfyUI died (exit {server.proc.returncode}):\n{server.log_tail()}")
        time.sleep(0.5)
    raise ComfyError(f"prompt did not finish within {timeout:.0f} s:\n{server.log_tail()}")

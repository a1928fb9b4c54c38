"""Fixtures for merge_core's unit tests: the stored key lists, read directly (not through merge_core)."""
from __future__ import annotations

import gzip
import os

import pytest

KEYLIST_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "merge_core", "arch", "keylists")
# SuperMerger's SD1 preset list, frozen in tests/data: a change to the shipped presets/sd1.tsv is noticed, and
# test_block_weights' hand-typed spot values keep the check independent of both copies.
REFERENCE_TSV = os.path.join(os.path.dirname(__file__), "..", "data", "supermerger_presets_sd1.tsv")
ARCHS = ("sd1", "sd2", "sdxl", "flux", "sd3")
# Diffusion-model-only families: a checkpoint-form key list each, no ComfyUI-form list (no text encoders).
FAMILIES = ("wan", "qwen_image", "krea2", "auraflow", "cosmos_predict2", "anima", "flux2", "chroma", "zimage")
# Blocks that hold no parameter in any layout (a native node's input for the parameter-less rotary embedding).
EMPTY_BLOCKS = {"cosmos_predict2": {"POS"}, "anima": {"POS"}}


def read_keylist(name: str) -> list[str]:
    with gzip.open(os.path.join(KEYLIST_DIR, f"{name}.txt.gz"), "rt", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


@pytest.fixture(scope="session")
def keylists() -> dict[str, list[str]]:
    return {a: read_keylist(a) for a in ARCHS + FAMILIES}


@pytest.fixture(scope="session")
def comfy_keylists() -> dict[str, list[str]]:
    return {a: read_keylist(f"{a}.comfy") for a in ARCHS}


@pytest.fixture(scope="session")
def sd1_keys(keylists):
    return keylists["sd1"]


@pytest.fixture(scope="session")
def sdxl_keys(keylists):
    return keylists["sdxl"]

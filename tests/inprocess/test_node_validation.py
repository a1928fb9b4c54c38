"""Queue-time validation of ElementalSpec and BlockWeights (V3 validate_inputs), called directly."""
from __future__ import annotations

import pytest

from tests.helpers.pack import pack_module


@pytest.fixture(scope="module")
def nodes():
    return pack_module("nodes.merge_nodes")


def test_valid_specs_pass(nodes):
    v = nodes.ElementalSpec.validate_inputs
    assert v("", "auto") is True
    assert v("IN01-IN03::0.75\nNOT IN04 M00:attn1:0.3", "auto") is True
    assert v("D03::0.5", "auto") is True          # a Flux block: valid for some architecture
    assert v(None, "auto") is True                 # linked: checked at merge time


def test_auto_rejects_what_no_architecture_accepts(nodes):
    msg = nodes.ElementalSpec.validate_inputs("IN04:attn1:0.5\nOUT99::0.5", "auto")
    assert isinstance(msg, str)
    assert "line 2, column 1" in msg and "OUT99" in msg and "valid for no architecture" in msg


def test_named_architecture_is_checked_fully(nodes):
    assert nodes.ElementalSpec.validate_inputs("IN11::0.5", "sd1") is True
    msg = nodes.ElementalSpec.validate_inputs("IN11::0.5", "sdxl")  # SDXL stops at IN08
    assert isinstance(msg, str) and "for SDXL" in msg and "line 1, column 1" in msg


def test_block_weights(nodes):
    v = nodes.BlockWeights.validate_inputs
    assert v("GRAD_V", "sd1") is True
    assert v(",".join(["0.5"] * 26), "auto") is True
    assert v(None, "auto") is True
    assert "empty" in v("  ", "auto")
    msg = v("0.5, 0.5, nope", "sd1")
    assert isinstance(msg, str) and "line 1, column" in msg


def test_text_written_for_other_architecture_fails_at_merge(nodes):
    import merge_core

    with pytest.raises(ValueError, match="written for SDXL but the models are SD1.x"):
        pack_module("merge_core.text.written").check_written_for(
            "elemental_alpha", nodes.TextInput("IN01::0", "sdxl"), merge_core.get_architecture("sd1"))

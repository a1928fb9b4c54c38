"""merge_core.text.validation: block weights checked like specs, the architecture a text fits, the queue-time
message, and the one cache switch (clear_caches)."""
from __future__ import annotations

import pytest

from merge_core import (ARCHITECTURES, AUTO, ArchitectureFit, Diagnostic, clear_caches, closest_architecture,
                        parse_spec, resolve_ratios, text_problem, validate_block_weights, validate_spec)
from merge_core.cache import cache_info
from merge_core.diagnostics import ERROR
from merge_core.arch.key_index import key_index


def _errors(diags):
    return [(d.line, d.column, d.message) for d in diags if d.is_error]


# ---- validate_block_weights ---------------------------------------------------------------------------------

def test_block_weights_valid_preset_and_lists_give_no_diagnostic():
    assert validate_block_weights("GRAD_V", "sd1") == []
    assert validate_block_weights(",".join(["0.5"] * 26), "sd1") == []
    assert validate_block_weights(",".join(["1"] * 25), "sd1", alpha=0.5) == []


def test_block_weights_errors_are_positioned_diagnostics():
    (d,) = validate_block_weights("1, x,3", "sd1")
    assert isinstance(d, Diagnostic) and d.is_error
    assert (d.line, d.column, d.message, d.entry) == (1, 4, "'x' is not a finite number or a preset name", "1, x,3")
    assert d.hint.startswith("presets: ") and "GRAD_V" in d.hint
    two = validate_block_weights("1,2\n3,nan", "sd1")
    assert _errors(two) == [(2, 3, "'nan' is not a finite number or a preset name")]
    # 25 values without alpha leave BASE unset: an error with the fix in the hint
    (d,) = validate_block_weights(",".join(["1"] * 25), "sd1")
    assert d.message == "25 values leave BASE unset and no alpha was given" and d.hint == "give alpha or 26 values"
    (d,) = validate_block_weights("1,2,3", "sdxl")
    assert d.message.startswith("SDXL block weights need 20 values (BASE, IN00..IN08, M00, OUT00..OUT08) or 19 "
                                "without BASE, or an SD1 list of 26/25, or 110 for the extended table "
                                "(LoRA Block Weight's lists: 12), got 3; "
                                "closest: SD1.x 25, ")  # then the other records nearest to 3 values


def test_block_weights_unknown_architecture_is_a_diagnostic_not_an_exception():
    (d,) = validate_block_weights("GRAD_V", "sd7")
    assert (d.line, d.column, d.severity) == (1, 1, ERROR) and "sd7" in d.message


# ---- closest_architecture -----------------------------------------------------------------------------------

def test_valid_for_sdxl_only_picks_sdxl():
    text = ",".join(["0.25"] * 20)  # 20 values: SDXL's BASE + 19 blocks; no other table has 20 or 21 blocks
    assert [a.name for a in ARCHITECTURES.values() if not _errors(validate_block_weights(text, a))] == ["sdxl"]
    fit = closest_architecture(text, validate_block_weights)
    assert isinstance(fit, ArchitectureFit)
    assert fit.architecture.name == "sdxl" and fit.valid and fit.diagnostics == [] and fit.errors == []


def test_first_valid_architecture_in_table_order_wins():
    fit = closest_architecture("IN04:attn1:0.5", validate_spec)
    assert fit.architecture is ARCHITECTURES["sd1"] and fit.valid
    # warnings do not make a text invalid
    fit = closest_architecture("OUT05:nosuchelement:0.5", validate_spec)
    assert fit.architecture.name == "sd1" and fit.valid
    assert [d.message for d in fit.diagnostics] == ["element 'nosuchelement' matches no key of SD1.x",
                                                   "entry selects no key"]


def test_invalid_everywhere_picks_the_fewest_errors():
    text = "D03::1, S05::1, IN10::1"  # SD1/SD2: D03, S05 unknown (2); SDXL: 3; Flux: only IN10 (1); SD3: 3
    counts = {a.name: len(_errors(validate_spec(text, a))) for a in ARCHITECTURES.values()}
    assert counts == {"sd1": 2, "sd2": 2, "sdxl": 3, "sdxl_ext": 2, "flux": 1, "sd3": 3, "wan": 3, "qwen_image": 3,
                      "krea2": 3, "auraflow": 1, "flux2": 1, "chroma": 1, "zimage": 3,
                      "cosmos_predict2": 3, "anima": 3}
    # table order: Flux comes first of the 1s
    fit = closest_architecture(text, validate_spec)
    assert fit.architecture.name == "flux" and not fit.valid
    assert _errors(fit.diagnostics) == [(1, 17, "unknown block 'IN10'")]


def test_ties_go_to_the_first_in_table_order_and_candidates_limit_the_choice():
    fit = closest_architecture("1,2,3", validate_block_weights)  # one error in every architecture
    assert fit.architecture.name == "sd1" and len(fit.errors) == 1
    fit = closest_architecture("1,2,3", validate_block_weights, ["sd3", "flux"])
    assert fit.architecture.name == "sd3"
    with pytest.raises(ValueError):
        closest_architecture("1,2,3", validate_block_weights, [])


# ---- text_problem (the merge nodes' queue-time message) -----------------------------------------------------

def test_text_problem_messages():
    assert text_problem("elemental spec", "IN04:attn1:0.5", AUTO, validate_spec) is None
    assert text_problem("elemental spec", "   \n", "sdxl", validate_spec) is None
    assert text_problem("block weights", ",".join(["1"] * 20), AUTO, validate_block_weights) is None
    assert text_problem("elemental spec", "IN04:attn1:0.5\nOUT99::0.5", AUTO, validate_spec) == (
        "invalid elemental spec: valid for no architecture; as SD1.x:\n"
        "line 2, column 1: unknown block 'OUT99' in entry 'OUT99::0.5' "
        "(did you mean OUT09? valid: BASE, IN00..IN11, M00, OUT00..OUT11)")
    assert text_problem("elemental spec", "IN11::0.5", "sdxl", validate_spec) == (
        "invalid elemental spec for SDXL:\n"
        "line 1, column 1: unknown block 'IN11' in entry 'IN11::0.5' "
        "(did you mean IN01? valid: BASE, IN00..IN08, M00, OUT00..OUT08)")
    problem = text_problem("block weights", "1,2,3", "sd1", validate_block_weights)
    assert problem.startswith(
        "invalid block weights for SD1.x:\n"
        "line 1, column 1: SD1.x block weights need 26 values (BASE, IN00..IN11, M00, OUT00..OUT11) "
        "or 25 without BASE (LoRA Block Weight's lists: 17), got 3; closest: SDXL 19, ")
    assert problem.endswith(" in entry '1,2,3'")


# ---- clear_caches -------------------------------------------------------------------------------------------

def test_clear_caches_empties_every_cache_and_results_stay_the_same():
    arch = ARCHITECTURES["sd1"]
    keys = tuple(arch.default_keys())
    spec = parse_spec("OUT05:attn2:0.2", arch)
    before = resolve_ratios(keys, arch, 0.5, spec=spec).ratios
    index = key_index(arch, keys)
    filled = {name: info[3] for name, info in cache_info().items() if info[3]}
    for name in ("merge_core.text.spec._parse", "merge_core.arch.key_index.key_index", "merge_core.arch.keys._canonical",
                 "merge_core.arch.architectures._block_of", "merge_core.arch.architectures._load_keylist"):
        assert filled.get(name, 0) > 0, name
    clear_caches()
    assert {name: info[3] for name, info in cache_info().items()} == {name: 0 for name in cache_info()}
    assert key_index(arch, keys) is not index  # rebuilt, not the old object
    spec2 = parse_spec("OUT05:attn2:0.2", arch)
    assert spec2 is not spec and spec2 == spec
    after = resolve_ratios(keys, arch, 0.5, spec=spec2).ratios
    assert after == before
    assert sum(1 for k, r in after.items() if r == 0.2) == sum(1 for k in keys if ".output_blocks.5." in k
                                                              and "attn2" in k)

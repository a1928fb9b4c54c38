"""An element that hits keys only inside their prefix (``ff`` in ``model.diffusion_model.``): SuperMerger's
result is kept, and the spec, the queue-time log and the change report warn with the prefix and a narrower
element (`merge_core.text.validation.element_prefix_warning`). No ComfyUI."""
from __future__ import annotations

from merge_core import format_change_report, parse_spec, resolve_ratios, validate_spec
from merge_core.arch import derived
from merge_core.arch.architectures import get_architecture
from merge_core.arch.key_index import key_index
from merge_core.text.validation import (PREFIX_MATCH, element_prefix_warning, key_prefixes,
                                        spec_queue_warnings)

U = "model.diffusion_model."


def warnings_of(text, arch):
    return [d for d in validate_spec(text, arch) if PREFIX_MATCH in d.message]


def test_ff_outside_out04_warns_with_the_prefix_and_ff_net_and_keeps_supermergers_selection():
    sd1 = get_architecture("sd1")
    (w,) = warnings_of("NOT OUT04:ff:0.9", sd1)
    assert (w.line, w.column, w.severity) == (1, 11, "warning")
    assert w.message.startswith("element 'ff' matches ")
    assert "'model.diffusion_model.' (in 'diffusion_model')" in w.message
    assert "write 'ff.net'" in w.hint
    # The selection is SuperMerger's: every key outside OUT04, since every UNet key holds "ff".
    index = key_index(sd1)
    entry = parse_spec("NOT OUT04:ff:0.9", sd1).entries[0]
    expected = [i for i, (b, c) in enumerate(zip(index.blocks, index.canon)) if b != "OUT04" and "ff" in c]
    unet_outside = [i for i, (b, c) in enumerate(zip(index.blocks, index.canon)) if b != "OUT04" and c.startswith(U)]
    assert list(index.select(entry)) == expected and set(unet_outside) <= set(expected)
    # The count in the message: the selected keys whose "ff" is only in the prefix (not the ff.net layers).
    only_prefix = [i for i in unet_outside if "ff" not in index.canon[i][len(U) - 1:]]
    assert f"matches {len(only_prefix)} keys" in w.message


def test_not_element_and_one_block_warn_too():
    (w,) = warnings_of("OUT05:NOT ff:0.2", "sd1")
    assert w.column == 11 and "write 'ff.net'" in w.hint
    (w,) = warnings_of("OUT04:ff:0.2", "sd1")  # OUT04's ResBlock keys are hit through the prefix
    assert w.column == 7


def test_narrow_or_deliberate_elements_do_not_warn():
    for text in ("OUT04:ff.net:0.2", "IN04:attn2:0.3", "IN04:diffusion_model:0.3", "BASE:cond_stage_model:0.5",
                 "OUT04:model:0.1", "::0.5", "OUT04:NOT attn2:0.2"):
        assert warnings_of(text, "sd1") == [], text


def test_no_element_name_to_offer_asks_for_a_longer_one():
    (w,) = warnings_of("OUT04:mod:0.1", "sd1")
    assert "write a longer element that names the layer" in w.hint


def test_text_encoder_prefix_is_named():
    assert key_prefixes(get_architecture("sdxl"))[:2] == ("conditioner.embedders.1.model.", "conditioner.embedders.0.")
    (w,) = warnings_of("BASE:ner:0.5", "sdxl")
    assert "'conditioner.embedders." in w.message and "(in 'conditioner')" in w.message


def test_pure_function_on_comfyui_key_forms_and_a_derived_architecture():
    keys = [f"diffusion_model.blocks.{i}.{p}" for i in range(2) for p in ("attn.qkv.weight", "ff.0.weight")]
    keys = ["diffusion_model.patch_embed.weight"] + keys + ["diffusion_model.head.weight"]
    arch = derived.derive_architecture(keys, "Test")
    entry = parse_spec("B00 IN:diff:0.5", arch, keys).entries[0]
    message, hint = element_prefix_warning(entry, "diff", arch, keys)
    assert message == "element 'diff' matches 3 keys of these blocks only inside their prefix " \
                      "'model.diffusion_model.' (in 'diffusion_model')"
    assert "write a longer element" in hint
    entry = parse_spec("B00:ff:0.5", arch, keys).entries[0]
    assert element_prefix_warning(entry, "ff", arch, keys)[0].startswith("element 'ff' matches 1 key of")
    assert element_prefix_warning(entry, "attn", arch, keys) is None


def test_report_carries_the_warning():
    sd1 = get_architecture("sd1")
    keys = tuple(sd1.default_keys())
    spec = parse_spec("OUT04:ff:0.2", sd1, keys)
    report = format_change_report(resolve_ratios(keys, sd1, 0.5, spec=spec))
    assert "warning: element 'ff' matches" in report and PREFIX_MATCH in report


def test_queue_time_warnings_name_the_architecture_checked():
    (line,) = spec_queue_warnings("NOT OUT04:ff:0.9", "auto")
    assert line.startswith("SD1.x (auto: the first architecture the text fits): line 1, column 11: warning:")
    (line,) = spec_queue_warnings("NOT OUT04:ff:0.9", "sdxl")
    assert line.startswith("SDXL: ") and "ff.net" in line
    assert spec_queue_warnings("OUT99:ff:0.9", "sd1") == []  # an error is reported instead
    assert spec_queue_warnings("", "auto") == [] and spec_queue_warnings("IN04:attn2:0.3", "auto") == []

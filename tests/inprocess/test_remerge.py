"""Incremental re-merge on real ComfyUI objects (CPU): after a sequence of XY cells the loaded weights are
exactly those of a fresh ElementalMerge with the last cell's settings, only the keys whose ratio changed were
recomputed (counted at ComfyUI's `patch_weight_to_device`), loading between cells patches nothing, and the
source models are untouched.

Expected changed-key sets are computed here from the key names (block prefix + element substring), not
from merge_core; expected values of recomputed keys from the safetensors files in the fp32 order of the
patch steps (the UNet is fp32 on CPU, so bit for bit).
"""
from __future__ import annotations

import hashlib
import importlib

import pytest
import torch
from safetensors import safe_open

from tests.helpers.pack import PACK, pack_module

OUT05 = "diffusion_model.output_blocks.5."
IN07 = "diffusion_model.input_blocks.7."
CLIP = "clip_l."


@pytest.fixture(scope="module")
def objs(checkpoint_paths):
    pack_module("nodes.merge_nodes")
    import comfy.sd

    out = {}
    for name in "AB":
        opts = {} if name == "A" else {"dtype": torch.float16}
        model, clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(
            checkpoint_paths[name], output_vae=False, output_clip=True, model_options=opts)
        out[name] = (model, clip)
    out["files"] = {n: safe_open(checkpoint_paths[n], "pt") for n in "AB"}
    yield out
    out.clear()


def digests(patchers) -> dict:
    """(patcher index, key) -> sha256 of the loaded weight's bytes (no second copy of the model in RAM)."""
    import comfy.model_management
    import comfy.utils

    comfy.model_management.load_models_gpu(patchers)
    out = {}
    for i, p in enumerate(patchers):
        for key in p.model_state_dict():
            t = comfy.utils.get_attr(p.model, key).detach().contiguous().reshape(-1)
            out[(i, key)] = hashlib.sha256(t.view(torch.uint8).numpy().tobytes()).hexdigest()
    return out


@pytest.fixture
def counter(monkeypatch):
    import comfy.model_patcher

    calls = []
    original = comfy.model_patcher.ModelPatcher.patch_weight_to_device

    def counting(self, key, *a, **kw):
        calls.append(key)
        return original(self, key, *a, **kw)

    monkeypatch.setattr(comfy.model_patcher.ModelPatcher, "patch_weight_to_device", counting)
    return calls


def expected_alpha(key: str, pins: list) -> float:
    """Base 0.5; a pinpoint (prefix, element or None, ratio) sets the keys it names."""
    r = 0.5
    for prefix, element, ratio in pins:
        if key.startswith(prefix) and (element is None or element in key):
            r = ratio
    return r


def walk_cells(eng, method, arch, sequence, counter):
    """Applies each cell's settings to the incremental merge: exactly the keys whose ratio changed are
    re-merged (ratio 0: restored from the backup), and loading afterwards re-patches nothing."""
    prev = None
    for i, (settings, pins) in enumerate(sequence):
        ra, rb = pack_module("nodes.plot.plot_job").settings_ratios(method, arch, eng.keys, settings)
        counter.clear()
        changed = eng.apply(ra, rb)
        want = {k: expected_alpha(k, pins) for k in eng.keys}
        assert all(ra(k) == want[k] for k in eng.keys), f"cell {i}: ratios differ from the hand computation"
        if prev is None:
            assert changed == set(eng.keys) and not counter  # first cell: patched by the next load
        else:
            expect = {k for k in eng.keys if want[k] != prev[k]}
            assert expect, f"cell {i} changes nothing: bad test sequence"
            assert changed == expect, f"cell {i}: {len(changed)} keys re-merged, expected {len(expect)}"
            # a key going to ratio 0 is restored from the backup (A's weight): nothing to compute
            assert sorted(counter) == sorted(k for k in expect if want[k] != 0), f"cell {i}: recomputed keys"
            assert sum(eng.last.in_place.values()) == len(expect) and not eng.last.deferred
        counter.clear()
        eng.load()  # what the sampler / text encoder does before using the model
        if prev is None:
            assert len(counter) == len([k for k in eng.keys if want[k] != 0])  # the full merge, once
        else:
            assert counter == [], f"cell {i}: loading re-patched {len(counter)} keys"
        prev = want


def assert_sources_untouched(objs, a_patches_before):
    import comfy.model_management
    import comfy.utils

    (ma, _), (mb, cb) = objs["A"], objs["B"]
    files = objs["files"]
    # A's patcher has no patches, and loading A gives the file's weights.
    assert ma.patches == a_patches_before == {}
    assert mb.patches == {} and cb.patcher.patches == {}
    comfy.model_management.load_models_gpu([ma])
    for key in ("diffusion_model.output_blocks.5.1.transformer_blocks.0.attn2.to_k.weight",
                "diffusion_model.input_blocks.7.0.in_layers.2.weight"):
        assert torch.equal(comfy.utils.get_attr(ma.model, key).detach(),
                           files["A"].get_tensor("model." + key).float()), key


def test_incremental_equals_full_remerge(objs, counter):
    remerge, merge_nodes = (pack_module(m) for m in ("nodes.engine.remerge", "nodes.merge_nodes"))
    axes = importlib.import_module(f"{PACK}.merge_core.plot.axes")
    import comfy.utils

    (ma, ca), (mb, cb) = objs["A"], objs["B"]
    a_patches_before = dict(ma.patches)
    method = importlib.import_module(f"{PACK}.merge_core").get_merge_method("Weight sum")
    eng = remerge.IncrementalMerge(ma, mb, None, method, ca, cb)
    arch = pack_module("nodes.engine.model_info").architecture_of(ma)
    base = axes.Settings(0.5, 0.25)
    # (settings, independent description of the ratios): pinpoint element, another element, a whole block,
    # the text encoder (BASE), and back to the base.
    T = axes.Target
    sequence = [
        (base, []),
        (axes.pinpoint(base, T("", "OUT05", "attn2.to_k"), 0.75, "alpha"), [(OUT05, "attn2.to_k", 0.75)]),
        (axes.pinpoint(base, T("", "OUT05", "attn2.to_k"), 0.25, "alpha"), [(OUT05, "attn2.to_k", 0.25)]),
        (axes.pinpoint(base, T("", "IN07", ""), 1.0, "alpha"), [(IN07, None, 1.0)]),
        (axes.pinpoint(base, T("", "BASE", "layers.3."), 0.0, "alpha"), [(CLIP, "layers.3.", 0.0)]),
        (base, []),
        (axes.pinpoint(base, T("", "OUT05", "attn2.to_k"), 0.75, "alpha"), [(OUT05, "attn2.to_k", 0.75)]),
    ]
    walk_cells(eng, method, arch, sequence, counter)
    # The recomputed keys hold the formula's value, in the patch steps' fp32 order (UNet fp32: bit for bit).
    files = objs["files"]
    for key in [k for k in eng.keys if k.startswith(OUT05) and "attn2.to_k" in k]:
        fk = "model." + key
        A, B = files["A"].get_tensor(fk).float(), files["B"].get_tensor(fk).float()
        got = comfy.utils.get_attr(eng.model.model, key).detach()
        assert torch.equal(got, A * (1 - 0.75) + 0.75 * B), key

    incremental = digests([eng.model, eng.clip.patcher])
    # A fresh full merge through the ElementalMerge node with the last cell's settings.
    spec = merge_nodes.TextInput(sequence[-1][0].elemental_alpha)
    model, clip, _ = merge_nodes.ElementalMerge.execute(
        model_a=ma, model_b=mb, clip_a=ca, clip_b=cb, mode="Weight sum", alpha=0.5, beta=0.25,
        print_change=False, elemental_alpha=spec).args
    counter.clear()
    full = digests([model, clip.patcher])
    assert len(counter) > 600, "the fresh merge should have been fully patched"
    assert incremental.keys() == full.keys()
    differing = [k for k in full if full[k] != incremental[k]]
    assert not differing, f"{len(differing)} weights differ, e.g. {differing[:3]}"
    # Back on the incremental merge after another patcher used the model: a full, correct re-patch.
    counter.clear()
    assert digests([eng.model, eng.clip.patcher]) == incremental
    assert len(counter) > 600

    assert_sources_untouched(objs, a_patches_before)

def test_not_loaded_model_is_deferred_not_patched(objs, counter):
    """Before the first load, or when the model is not loaded with our patches, `apply` only changes the
    patch lists (and the uuid) and leaves the patching to ComfyUI's next load."""
    remerge = pack_module("nodes.engine.remerge")
    import comfy.model_management

    (ma, ca), (mb, cb) = objs["A"], objs["B"]
    eng = remerge.IncrementalMerge(ma, mb, None, "Weight sum", ca, cb)
    eng.apply(lambda k: 0.5)
    eng.load()
    comfy.model_management.load_models_gpu([ma])  # another clone of A takes the model
    uuid_before = eng.model.patches_uuid
    counter.clear()
    changed = eng.apply(lambda k: 0.25 if "output_blocks.5." in k else 0.5)
    assert counter == [] and eng.last.deferred == {"unet": len(changed)} and not eng.last.in_place
    assert eng.model.patches_uuid != uuid_before


def test_comfy_internals_the_remerge_uses_are_still_there(objs):
    """Fails on a ComfyUI upgrade that renames a ModelPatcher internal `comfy_internals` relies on, naming it."""
    internals = pack_module("nodes.engine.comfy_internals")
    (ma, ca), (mb, cb) = objs["A"], objs["B"]
    eng = pack_module("nodes.engine.remerge").IncrementalMerge(ma, mb, None, "Weight sum", ca, cb)
    eng.apply(lambda k: 0.5, None)
    eng.load()  # fills `backup` and the loaded-weights uuid, so their layout is checked too
    for target in eng.targets:
        patcher = target.target.patcher
        assert patcher.backup and patcher.patches
        missing = internals.missing_internals(patcher)
        assert missing == [], (f"ComfyUI changed ModelPatcher internals that nodes/engine/comfy_internals.py reads "
                               f"(written against ComfyUI {internals.COMFYUI_VERSION_READ}): {missing}")


def test_missing_internals_names_what_is_gone():
    internals = pack_module("nodes.engine.comfy_internals")
    from types import SimpleNamespace

    patcher = SimpleNamespace(patches={"w": [(1.0, None, 1.0)]}, patches_uuid=None, backup={},
                              use_ejected=None, _load_list=None, object_patches={}, object_patches_backup={},
                              model=SimpleNamespace(current_weight_patches_uuid=None))
    assert internals.missing_internals(patcher) == [
        "ModelPatcher.patch_weight_to_device", "ModelPatcher.model.model_lowvram",
        "ModelPatcher.model.model_loaded_weight_memory",
        "ModelPatcher.patches['w'] entries of 5 fields ('strength_patch', 'source', 'strength_model', 'offset', "
        "'function') (found 3)"]

"""Calc modes on SD2 (768-v, OpenCLIP-H) through ElementalMerge on real ComfyUI objects, against docs/calc-modes.md's
formulas (tests/helpers/calc_oracles.py) applied to the CHECKPOINT-layout tensors read from the fixture files.

Why SD2: ComfyUI holds OpenCLIP-H's attention input projection split (``self_attn.q_proj``/``k_proj``/
``v_proj``) and ``text_projection`` transposed, while the file (and SuperMerger) has one fused
``attn.in_proj_weight``/``in_proj_bias`` (q, k, v stacked on dim 0) and ``text_projection`` as stored. The
oracle computes on the file's tensors; each ComfyUI key is then compared with its part of the oracle's result:
rows [0, d), [d, 2d), [2d, 3d) of the fused tensor for q, k, v (d = rows / 3), the transpose for
text_projection, the tensor itself otherwise. A pack that computed on ComfyUI's split layout fails here: the
cosine statistic and k over dim 0, tensor's row swap (it crosses the q/k boundary with these ratios) and
smoothAdd's filters at the q/k/v seams all differ.

Names only come from the pack (merge_core.arch.keys.canonical_key); `test_layout_mapping` proves that naming and
the row/transpose rule right on its own by comparing every loaded, unmerged weight with its file tensor.

Models: the seeded full-size SD2-v fixtures A and B (devkit.fixtures_arch), loaded by
comfy.sd.load_checkpoint_guess_config with an fp16 UNet (the files are fp16; the text encoder loads fp16
too, logit_scale fp32). C is A's clone with B's patches at 0.5/0.5, as in the SD1 test: ``A * 0.5 + 0.5 * B``
in float32. Ratios differ block by block and the spec names checkpoint-form elements (``in_proj``,
``resblocks.1.``), all within [0, 1]. fp16 weights must be within one fp16 ulp of the oracle's float32 value.

Coverage: every mode (SAMPLED_CALCS) checks tests.helpers.calc_oracles.oracle_sample's fixed sample of the file
tensors of every text-encoder key and of the UNet keys of the blocks in UNET_BLOCKS: text_projection, every tensor outside every block, one of each layer role
(a fused in_proj weight and bias with all their q/k/v parts among them) at ratio 0 and not, of each block
(and one 4-D one of each), of each (alpha, beta) pair; the smallest of each for smoothAdd (its scipy oracle is
slow). smoothAdd's oracle of the few largest tensors (calc_oracles.smooth_columns: the 640/1280-channel
convolutions, the token embedding; never a fused in_proj or text_projection) is computed exactly and compared
on three windows of 16 columns (first, middle, last; every row, so every q/k/v seam and kernel position);
at ratio 0 every element is compared with A. The cosine statistics (engine and oracle) stay over every tensor;
the oracle computes both in one pass over the files, once per module (checkpoint_stat).
`self` also asserts the documented naming rule: OpenCLIP ``ln_1``/``ln_2``/``ln_final`` (ComfyUI's
``layer_norm1``/``layer_norm2``/``final_layer_norm``) contain no "norm" and are scaled, while UNet ``norm``
keys keep A.

Measured (2-core CPU, ComfyUI 0.3.75, other jobs sharing the machine): 594 keys per mode (all 390 text-encoder
keys, 204 UNet keys of the 7 sampled blocks; smoothAdd 583), 8 modes, every element within one fp16 ulp of the
oracle (max 0.5 ulp: the fp16 rounding itself; tensor/tensor2 exact; the test now checks the one-ulp bound
with over_one_fp16_ulp and no longer computes the ulp of every element, which cost ~6 s per mode). Runtime ~490 s in all (tensor, tensor2,
self and the mapping check ~95 s; cosineA, cosineB, trainDifference, smoothAdd and extract ~390 s, the cosine
statistic over the whole model and smoothAdd's scipy oracle dominating). Peak RSS (VmHWM, devkit PeakProbe):
13.1 GiB (8.2 GiB anonymous) for the 8 modes while the files were read through safe_open's mmap (every page
touched counted); with devkit's TensorFile (plain reads, as now) a tensor + cosineA run peaked
at 7.9 GiB (7.6 GiB anonymous), so the module fits the default suite (no ``heavy`` marker). A mutation check
(tensor, cosineA and smoothAdd made layout-independent in the pack) fails at the first q_proj: cosineA off by
0.034, tensor by 0.23.

    flock /tmp/elemental-heavy.lock $PYTHON -m pytest -q tests/inprocess/test_calc_modes_sd2.py
"""
from __future__ import annotations

import os

import pytest
import torch

from tests.helpers.arch_checks import TensorFile
from devkit.fixtures_arch import checkpoints_dir, ensure_fixture
from devkit.proc_memory import PeakProbe
from tests.helpers.calc_oracles import (CALC_MODE_OF, CALC_SPEC_BETA, SAMPLED_CALCS, assert_sample_covers,
                                oracle_sample, oracle_stats, oracle_weight, over_one_fp16_ulp, smooth_columns)
from tests.helpers.pack import pack_module
from tests.helpers.sd1_sources import (both_ratios, keys_of, load_models, merged_weight, run_calc_merge,
                                         with_half_merge_c)
from tests.helpers.expected_blocks import expected_block

ARCH = "sd2"
CALC = CALC_MODE_OF
SPEC_ALPHA = """IN01-IN03::0.75
OUT03-OUT05:NOT norm:0.625
BASE:resblocks.1.:0.125
BASE:in_proj:0.375
OUT04::1
IN00:time_embed:0"""
SPEC_BETA = CALC_SPEC_BETA
# UNet blocks checked key by key (SD2 UNet prefixes after diffusion_model.)
UNET_BLOCKS = ("time_embed.", "input_blocks.1.", "input_blocks.4.", "middle_block.", "output_blocks.4.",
               "output_blocks.11.", "out.")
QKV = ("q_proj", "k_proj", "v_proj")
TEXT_PROJECTION = "clip_h.transformer.text_projection.weight"


# ---------------------------------------------------------------- ComfyUI key -> checkpoint tensor (naming only)

def file_view(key: str):
    """(file key, part): part is 0/1/2 for q/k/v rows of a fused in_proj, "T" for the transposed
    text_projection, None for a key stored as is."""
    from merge_core.arch.keys import canonical_key

    name = canonical_key(key, ARCH)
    if name.endswith(("attn.in_proj_weight", "attn.in_proj_bias")):
        return name, QKV.index(key.split(".")[-2])
    if key == TEXT_PROJECTION:
        return name, "T"
    return name, None


def comfy_part(tensor: torch.Tensor, part):
    """The piece of a checkpoint-layout tensor that a ComfyUI key holds."""
    if part is None:
        return tensor
    if part == "T":
        return tensor.transpose(0, 1)
    d = tensor.shape[0] // 3
    return tensor[part * d:(part + 1) * d]


# ---------------------------------------------------------------- models

@pytest.fixture(scope="module")
def objs():
    paths = {n: ensure_fixture(checkpoints_dir(), "sd2v", n) for n in "AB"}
    merge_nodes = pack_module("nodes.merge_nodes")
    probe = PeakProbe([os.getpid()]).__enter__()
    models = with_half_merge_c(load_models(paths, "AB", lambda _name: {"dtype": torch.float16}))
    files = {n: TensorFile(paths[n]) for n in "AB"}  # plain reads: no mapped file pages left in RSS
    yield merge_nodes, models, files
    for f in files.values():
        f.close()
    probe.__exit__(None, None, None)
    print("\n[peak] " + probe.line("test_calc_modes_sd2"))
    models.clear()


def in_sample(key: str) -> bool:
    return not key.startswith("diffusion_model.") or key[len("diffusion_model."):].startswith(UNET_BLOCKS)


def file_tensors(files, fk):
    """A, B and C's checkpoint-layout tensors of file key ``fk`` (C as ComfyUI evaluates the patched clone)."""
    A, B = files["A"].get_tensor(fk), files["B"].get_tensor(fk)
    return A, B, A.float() * 0.5 + 0.5 * B.float()


def run(merge_nodes, models, calc, **kw):
    return run_calc_merge(merge_nodes, models, calc, SPEC_ALPHA, SPEC_BETA, ARCH, **kw)


def checkpoint_stats(files) -> dict:
    """The oracle's cosine statistics (cosineA and cosineB, one pass) over the files' tensors as stored (fused
    in_proj, text_projection untransposed): every key holding "model", the VAE excepted. One cosine per tensor
    serves both (calc_oracles.oracle_stats' one_cosine: normalizing each column over dim 0 leaves its cosine
    over dim 0 unchanged): the statistic's pass over the whole model is what this module's cosineA spends
    most on, and the per-key oracle (oracle_cosine) still normalizes as docs/calc-modes.md says."""
    keys = [k for k in files["A"].keys() if "model" in k and not k.startswith("first_stage_model.")
            and k in files["B"].keys()]
    return oracle_stats(((files["A"].get_tensor(k), files["B"].get_tensor(k)) for k in keys), ("cosineA", "cosineB"),
                        one_cosine=True)


@pytest.fixture(scope="module")
def checkpoint_stat(objs):
    """mode -> checkpoint_stats' value, computed on first use, once per module."""
    stats = {}

    def get(mode):
        if not stats:
            stats.update(checkpoint_stats(objs[2]))
        return stats[mode]
    return get


# ---------------------------------------------------------------- tests

def test_layout_mapping(objs):
    """Every ComfyUI key is its file tensor's part (q/k/v rows, transpose), every file key (not the VAE) is
    held by ComfyUI, and unmerged A holds its file's values exactly."""
    _, models, files = objs
    unet_keys, clip_keys = keys_of(models)
    ma, ca = models["A"]
    sd = {**ma.model_state_dict(filter_prefix="diffusion_model."), **ca.patcher.model_state_dict()}
    seen: dict[str, list] = {}
    for key in unet_keys + clip_keys:
        fk, part = file_view(key)
        assert fk in files["A"].keys(), key
        seen.setdefault(fk, []).append(part)
        want = comfy_part(files["A"].get_tensor(fk), part)
        assert torch.equal(sd[key], want.to(sd[key].dtype)), key
    model_keys = {k for k in files["A"].keys() if not k.startswith("first_stage_model.")}
    assert set(seen) == model_keys
    fused = [fk for fk, parts in seen.items() if sorted(parts) == [0, 1, 2]]
    assert len(fused) == 2 * 24 and all(fk.endswith(("in_proj_weight", "in_proj_bias")) for fk in fused)
    assert seen["cond_stage_model.model.text_projection"] == ["T"]


@pytest.mark.parametrize("calc", list(CALC))
def test_sd2_weights_equal_checkpoint_layout_oracle(objs, checkpoint_stat, calc):
    merge_nodes, models, files = objs
    model, clip, report = run(merge_nodes, models, calc).args
    unet_keys, clip_keys = keys_of(models)
    ra, rb = both_ratios(unet_keys + clip_keys, SPEC_ALPHA, SPEC_BETA, ARCH)
    stat = checkpoint_stat(calc) if calc.startswith("cosine") else None
    work = [(model, k) for k in unet_keys if in_sample(k)] + [(clip.patcher, k) for k in clip_keys]
    if calc in SAMPLED_CALCS:
        shapes = {k: tuple(v.shape) for p in (model, clip.patcher) for k, v in p.model_state_dict().items()}
        units = {}  # one unit per file tensor: a fused in_proj's q/k/v parts go together
        for _, k in work:
            fk, part = file_view(k)
            shape = (shapes[k][::-1] if part == "T" else shapes[k] if part is None
                     else (3 * shapes[k][0],) + shapes[k][1:])
            units.setdefault(fk, (fk, fk, expected_block(ARCH, fk), shape, ra[k], rb[k]))
        units = list(units.values())
        subset = oracle_sample(units, always=[file_view(TEXT_PROJECTION)[0]], smallest=calc == "smoothAdd")
        assert_sample_covers(units, subset)
        work = [(p, k) for p, k in work if file_view(k)[0] in subset]
        fused_parts = [file_view(k)[1] for _, k in work if file_view(k)[1] in (0, 1, 2)]
        assert fused_parts.count(0) == fused_parts.count(1) == fused_parts.count(2) >= 2  # in_proj weight and bias
        assert TEXT_PROJECTION in {k for _, k in work}
    checked = changed = windowed = 0
    done_fk, want_full, ratios_fk = None, None, None
    scaled_norms = 0
    for patcher, key in work:
        fk, part = file_view(key)
        a, b = ra[key], rb[key]
        if fk != done_fk:  # q, k, v follow each other: one oracle per fused tensor
            A, B, C = file_tensors(files, fk)
            columns = smooth_columns(A.shape, a) if calc == "smoothAdd" else None  # rows whole: q/k/v parts
            assert columns is None or part is None, fk  # windows: never a fused in_proj or text_projection
            want_full, done_fk, ratios_fk = (oracle_weight(calc, ARCH, fk, A, B, C, a, b, stat, columns=columns),
                                             fk, (a, b))
            A_full = A
            windowed += columns is not None
        assert (a, b) == ratios_fk, f"{key}: q/k/v ratios differ"
        want = comfy_part(want_full, part)
        A = comfy_part(A_full, part)
        got = merged_weight(patcher, key)
        assert got.shape == A.shape, key
        err = ((got if columns is None else got[:, columns]).float() - want).abs()
        # fp16 weights: one fp16 ulp of the float32 result (over_one_fp16_ulp: the verdict of comparing with
        # fp16_ulp everywhere, the ulp computed only where the error passes a lower bound of it); float32 ones
        # (logit_scale): float32 round-off
        over = over_one_fp16_ulp(err, want) if got.dtype == torch.float16 else ~(err <= 2.0 ** -22 * want.abs())
        assert not over.any(), (f"{calc} {key} ({fk} part {part}): max error {err.max().item():.3g}, "
                                f"{int(over.sum())} of {err.numel()} elements over one ulp")
        moved = not torch.equal(got, A.to(got.dtype))
        changed += moved
        if calc == "self" and moved and key.startswith("clip_h.") and "norm" in key and "norm" not in fk:
            scaled_norms += 1
        checked += 1
    print(f"\n[{calc}] {checked} keys checked ({sum(k.startswith('clip_h.') for _, k in work)} text encoder; "
          f"{windowed} on column windows), {changed} changed, every element within one fp16 ulp")
    assert checked == len(work) and checked > (60 if calc in SAMPLED_CALCS else 300)
    assert windowed <= 8 if calc == "smoothAdd" else windowed == 0  # the few largest tensors only
    assert changed > len(work) // 3, f"{calc}: only {changed} of {checked} keys changed"
    if calc == "self":  # ln_1/ln_2/ln_final are scaled: matched against checkpoint names, as docs/calc-modes.md says
        renamed = [k for _, k in work if k.startswith("clip_h.") and "norm" in k and "norm" not in file_view(k)[0]
                   and ra[k] not in (0, 1)]  # every layer's ln_1/ln_2 and ln_final (weights, biases): 98
        assert scaled_norms == len(renamed) >= 3
    assert f"calc mode: {calc}" in report

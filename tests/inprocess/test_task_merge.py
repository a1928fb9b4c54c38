"""The task-vector methods through Elemental Merge on real ComfyUI models: every merged weight, as ComfyUI's own
patch path computes it, equals the float64 formula of tests/helpers/task_oracles.py with each key's parameters
resolved from plain values and elemental specs.

- SD3 (the reduced fixture, UNet only, float32 in memory): base A and four further models B..E, every
  method, every key of the UNet.
- SD1.5 (the full test checkpoints A, B, C, UNet fp16 and CLIP-L): base A and fine-tunes B and C, every
  method, a covering sample of keys (every block, the text encoder), compared after the fp16 rounding of the
  model's own dtype.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

from tests.helpers import task_oracles as oracle
from tests.helpers.pack import pack_module
from tests.helpers.sd1_sources import file_key, merged_weight

METHODS = ["TIES", "DARE", "DARE-TIES", "DELLA", "Breadcrumbs", "Model Stock", "Geometric median", "SLERP",
           "Average"]
PLAIN = {"alpha": 0.75, "density": 0.3, "drop_rate": 0.6, "epsilon": 0.2, "outlier_rate": 0.05}
SEED = 1234
SD3_SPECS = {"elemental_density": "J01:attn:0.65\nOUT::0.9", "elemental_drop_rate": "J00::0.3",
             "elemental_epsilon": "IN::0.05", "elemental_outlier_rate": "J01::0.1", "elemental_alpha": "J00:mlp:0.5"}
SD1_SPECS = {"elemental_density": "OUT04:attn2:0.6\nBASE::0.5", "elemental_drop_rate": "IN04 M00::0.3",
             "elemental_epsilon": "OUT05::0.05", "elemental_outlier_rate": "IN01::0.1",
             "elemental_alpha": "OUT03::0.5"}
WEIGHTS5 = "1, 2, 1, 0.5, 1.5"
WEIGHTS3 = "1, 2, 0.5"
SD3_EXTRA_SEEDS = {"D": 4, "E": 5}
# The methods whose oracle sorts or iterates (ranks, Weiszfeld) merge three models, the others all five: the
# count changes no code path after the first two fine-tunes, and a 2-core CI pays for every sort.
MODELS_AT_MOST = {"DELLA": 3, "Breadcrumbs": 3, "Geometric median": 3}


def _merge(models: dict, clips: dict, method: str, specs: dict, weights: str | None = None):
    """ElementalMerge.execute of `method` over the models it takes (A first); model weights for as many
    models as it reads unless `weights` is given."""
    merge_nodes = pack_module("nodes.merge_nodes")
    T = merge_nodes.TextInput
    names = ["A", "B"] if method == "SLERP" else sorted(models)[:MODELS_AT_MOST.get(method, 5)]
    kw = {f"model_{n.lower()}": models[n] for n in names}
    kw.update({f"clip_{n.lower()}": clips[n] for n in names if clips.get(n) is not None})
    kw.update({k: T(v) for k, v in specs.items()})
    weights = {3: WEIGHTS3, 5: WEIGHTS5}.get(len(names), "") if weights is None else weights
    out = merge_nodes.ElementalMerge.execute(mode=method, beta=0.0, print_change=False, merge_seed=SEED,
                                             model_weights=weights if method in ("Average", "Geometric median")
                                             else "", **PLAIN, **kw)
    return out.args, names


def _per_key_values(keys: list, arch_name: str, specs: dict) -> dict:
    """key -> {param: value}, from merge_core's resolver (tested on its own) with no block weights."""
    import merge_core as mc

    arch = mc.get_architecture(arch_name)
    out = {k: dict(PLAIN) for k in keys}
    for name in PLAIN:
        text = specs.get(f"elemental_{name}")
        if not text:
            continue
        res = mc.resolve_ratios(keys, arch, PLAIN[name], None, mc.parse_spec(text, arch, keys=keys))
        for k in keys:
            out[k][name] = res.ratios.get(k, PLAIN[name])
    return out


def _weights(text: str, n: int) -> list:
    return [float(x) for x in text.split(",")][:n]


# ---- SD3: five models, every key ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sd3():
    from devkit.checkpoints import SEEDS
    from devkit.fixtures_arch import checkpoints_dir, ensure_fixture
    pack_module("nodes.merge_nodes")
    import comfy.sd

    info = pack_module("nodes.engine.model_info")
    models, files = {}, {}
    for name in "ABCDE":
        path = ensure_fixture(checkpoints_dir(), "sd3", name, seed=SEEDS.get(name, SD3_EXTRA_SEEDS.get(name)))
        model, _clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(
            path, output_vae=False, output_clip=False, model_options={"dtype": torch.float32})
        info.set_source_name(model, f"sd3_{name}.safetensors")
        models[name] = model
        files[name] = path
    yield models, files
    models.clear()


def _file_tensors(path: str, keys) -> dict:
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k).to(torch.float32).numpy() for k in keys}


@pytest.mark.parametrize("method", METHODS)
def test_sd3_every_key_equals_the_formula(sd3, method):
    models, files = sd3
    (merged, _clip, report), names = _merge(models, {}, method, SD3_SPECS)
    assert all(not m.patches for m in models.values()), "a source got patches"
    keys = list(models["A"].model_state_dict(filter_prefix="diffusion_model.").keys())
    fkeys = {k: "model." + k for k in keys}
    values = _per_key_values([fkeys[k] for k in keys], "sd3", SD3_SPECS)
    sources = {n: _file_tensors(files[n], fkeys.values()) for n in names}
    patched = set(merged.patches)
    # What ComfyUI cannot patch (a buffer) keeps A; the report counts every patched key.
    unpatchable = {k for k in keys if k not in patched}
    assert unpatchable <= {"diffusion_model.pos_embed"}, sorted(unpatchable)
    assert f"UNet: {len(patched)} keys patched" in report
    weights = _weights(WEIGHTS5 if len(names) == 5 else WEIGHTS3, len(names)) \
        if method in ("Average", "Geometric median") else ()
    for key in sorted(patched):
        fk = fkeys[key]
        got = merged_weight(merged, key).double().numpy()
        base, others = sources["A"][fk], [sources[n][fk] for n in names[1:]]
        if method == "Geometric median":
            _check_median(got, [base] + others, weights, key)
            continue
        want = oracle.merge(method, base, others, values[fk], SEED, fk, weights)
        np.testing.assert_allclose(got, want, rtol=3e-5, atol=3e-6, err_msg=f"{method} {key}")


def _check_median(got, points, weights, key):
    """`got` is the weighted geometric median: float64 Weiszfeld steps from it (each step lowers the sum of
    distances unless it is the median) move it by at most 1e-3 of its norm and lower that sum by at most 1e-4."""
    pts = [p.astype(np.float64) for p in points]
    x = got
    for _ in range(200):
        inv = [w / max(np.linalg.norm(p - x), 1e-300) for p, w in zip(pts, weights)]
        step = sum(p * c for p, c in zip(pts, inv)) / sum(inv)
        moved, x = np.linalg.norm(step - x), step
        if moved <= 1e-12 * np.linalg.norm(x):
            break
    assert np.linalg.norm(got - x) <= 1e-3 * max(np.linalg.norm(x), 1e-6), key
    assert oracle.median_objective(pts, weights, got) <= oracle.median_objective(pts, weights, x) * (1 + 1e-4), key
    mean = sum(p * w for p, w in zip(pts, weights)) / sum(weights)
    assert oracle.median_objective(pts, weights, got) < oracle.median_objective(pts, weights, mean), key


def test_sd3_too_few_models_and_mixed_architectures_refused(sd3, checkpoint_paths):
    models, _ = sd3
    merge_nodes = pack_module("nodes.merge_nodes")
    with pytest.raises(ValueError, match=r"mode 'Model Stock' needs at least 2 models besides the base model_a; "
                                         r"connect model_b, model_c"):
        merge_nodes.ElementalMerge.execute(model_a=models["A"], model_b=models["B"], mode="Model Stock",
                                           alpha=1.0, beta=0.0, print_change=False)
    with pytest.raises(ValueError, match=r"mode 'SLERP' reads model_a and model_b only; disconnect model_c"):
        merge_nodes.ElementalMerge.execute(model_a=models["A"], model_b=models["B"], model_c=models["C"],
                                           mode="SLERP", alpha=0.5, beta=0.0, print_change=False)
    with pytest.raises(ValueError, match=r"mode 'Weight sum' reads model_a, model_b only; disconnect model_d"):
        merge_nodes.ElementalMerge.execute(model_a=models["A"], model_b=models["B"], model_d=models["D"],
                                           mode="Weight sum", alpha=0.5, beta=0.0, print_change=False)
    T = merge_nodes.TextInput
    with pytest.raises(ValueError, match=r"density 1.5 is outside \[0, 1\] in block J01"):
        merge_nodes.ElementalMerge.execute(model_a=models["A"], model_b=models["B"], mode="TIES", alpha=1.0,
                                           beta=0.0, print_change=False, elemental_density=T("J01::1.5"))


def test_sd3_recipe_records_the_task_settings(sd3):
    models, _ = sd3
    (merged, _clip, report), _ = _merge(models, {}, "DELLA", SD3_SPECS, "")
    recipe = pack_module("nodes.engine.model_info").recipe_of(merged)
    assert recipe["mode"] == "DELLA" and sorted(recipe["sources"]) == list("ABC")
    assert recipe["task"] == {"density": 0.3, "epsilon": 0.2, "merge_seed": SEED,
                              "block_weights_density": None, "elemental_density": SD3_SPECS["elemental_density"],
                              "block_weights_epsilon": None, "elemental_epsilon": SD3_SPECS["elemental_epsilon"]}
    import merge_core.recipes.recipe as R
    R.validate(R.document(recipe, "x", "y"))  # raises on a problem
    assert "DELLA (SD3) alpha=0.75 density=0.3 epsilon=0.2 merge_seed=1234" in report
    assert "density" in report.split("\n", 1)[1]  # the per-key change report of the spec-set parameter


# ---- SD1.5: three models, a covering sample ------------------------------------------------------------------

@pytest.fixture(scope="module")
def sd1(checkpoint_paths):
    from tests.helpers.sd1_sources import load_models

    models = load_models(checkpoint_paths, "ABC", lambda name: {"dtype": torch.float16})
    yield models, checkpoint_paths
    models.clear()


SAMPLE_LIMIT = 3_000_000  # elements: the largest convolutions and the token embedding cost minutes of oracle


def _sd1_sample(models) -> list:
    """A key per block (the first weight in each of IN00..OUT11, M00 of at most SAMPLE_LIMIT elements, else its
    first bias), an
    attn2 and a norm of OUT04, and the text encoder's position embedding, a q_proj and a layer norm."""
    import merge_core as mc

    arch = mc.get_architecture("sd1")
    unet = models["A"][0].model_state_dict(filter_prefix="diffusion_model.")
    clip = models["A"][1].patcher.model_state_dict()
    chosen, seen = [], set()
    for suffix in ("weight", "bias"):  # a downsampling block's only weight is a large conv: its bias then
        for k, t in unet.items():
            block = arch.block_of("model." + k)
            if block not in seen and k.endswith(suffix) and t.numel() <= SAMPLE_LIMIT:
                seen.add(block)
                chosen.append(k)
    assert {f"IN{i:02}" for i in range(12)} | {"M00"} | {f"OUT{i:02}" for i in range(12)} <= seen, sorted(seen)
    chosen += [k for k in unet if k.startswith("diffusion_model.output_blocks.4.1.")
               and ("attn2.to_k" in k or "norm1" in k)]
    chosen += [k for k in clip if "position_embedding" in k or "layers.5.self_attn.q_proj.weight" in k
               or "final_layer_norm.weight" in k]
    return chosen


@pytest.mark.parametrize("method", METHODS)
def test_sd1_sample_equals_the_formula(sd1, method):
    models, paths = sd1
    (merged, clip, report), names = _merge({n: m for n, (m, c) in models.items()},
                                           {n: c for n, (m, c) in models.items()}, method, SD1_SPECS)
    unet_keys = list(models["A"][0].model_state_dict(filter_prefix="diffusion_model.").keys())
    clip_keys = list(models["A"][1].patcher.model_state_dict().keys())
    sample = _sd1_sample(models)
    assert len(sample) >= 30
    all_file_keys = [file_key(k) for k in unet_keys + clip_keys if not k.endswith("text_projection.weight")]
    values = _per_key_values(all_file_keys, "sd1", SD1_SPECS)
    weights = _weights(WEIGHTS3, len(names)) if method in ("Average", "Geometric median") else ()
    fk = {k: file_key(k) for k in sample}
    sources = {n: _file_tensors(paths[n], fk.values()) for n in names}
    for key in sample:
        patcher = merged if key.startswith("diffusion_model.") else clip.patcher
        assert key in patcher.patches, key
        got = merged_weight(patcher, key)
        assert got.dtype == torch.float16
        base, others = sources["A"][fk[key]], [sources[n][fk[key]] for n in names[1:]]
        if method == "Geometric median":
            _check_median(got.double().numpy(), [base] + others, weights, key)
            continue
        want = oracle.merge(method, base, others, values[fk[key]], SEED, fk[key], weights)
        # one fp16 rounding of the float32 result
        np.testing.assert_allclose(got.double().numpy(), want, rtol=2 ** -10, atol=2 ** -24 + 1e-6,
                                   err_msg=f"{method} {key}")
    for name, (m, c) in models.items():
        assert not m.patches and not c.patcher.patches, f"{name} got patches"


def test_sd1_dare_statistics_end_to_end(sd1):
    """DARE through the node: on a large key the kept fraction is 1 - p^N (an element changes unless every model
    dropped it) and each kept change is the sum of the kept task vectors over 1 - p."""
    models, paths = sd1
    (merged, _clip, _), names = _merge({n: m for n, (m, c) in models.items()}, {}, "DARE", {}, "")
    key = "diffusion_model.output_blocks.4.1.transformer_blocks.0.ff.net.0.proj.weight"
    src = _file_tensors(paths["A"], [file_key(key)])[file_key(key)], [
        _file_tensors(paths[n], [file_key(key)])[file_key(key)] for n in ("B", "C")]
    got = merged_weight(merged, key).double().numpy()
    base, (b, c) = src[0].astype(np.float64), src[1]
    changed = got != base.astype(np.float16).astype(np.float64)
    p = PLAIN["drop_rate"]
    n = changed.size
    assert abs(changed.mean() - (1 - p * p)) < 5 * ((1 - p * p) * p * p / n) ** 0.5
    want = oracle.merge("DARE", src[0], [b, c], PLAIN, SEED, file_key(key))
    np.testing.assert_allclose(got, want, rtol=2 ** -10, atol=1e-6)


def test_models_of_different_architectures_refused(sd3, sd1):
    merge_nodes = pack_module("nodes.merge_nodes")
    models3, _ = sd3
    models1, _ = sd1
    with pytest.raises(ValueError, match=r"cannot merge model_a \(sd3_A.safetensors, SD3\) with model_d "
                                         r"\(test_B.safetensors, SD1.x\): the architectures differ"):
        merge_nodes.ElementalMerge.execute(model_a=models3["A"], model_b=models3["B"], model_c=models3["C"],
                                           model_d=models1["B"][0], mode="TIES", alpha=1.0, beta=0.0,
                                           print_change=False)

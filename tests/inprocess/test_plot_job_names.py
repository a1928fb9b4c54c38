"""A model axis that puts one input's stock-loaded model into another slot: the merge names that slot by
the file it now holds, not by what the graph wires into it (the graph's names follow the models)."""
from __future__ import annotations

import torch

from tests.helpers.pack import pack_module


def test_swapped_stock_model_is_named_by_its_file(checkpoint_paths):
    plot_job = pack_module("nodes.plot.plot_job")
    import comfy.sd

    models = {}
    for n in "AB":  # as the stock Load Checkpoint leaves them: no name, no recipe on the model
        model, clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(
            checkpoint_paths[n], output_vae=False, output_clip=True, model_options={"dtype": torch.float16})
        models[n] = (model, clip)
    assert pack_module("nodes.engine.model_info").recipe_of(models["A"][0]) is None
    job = plot_job.MergeJob.__new__(plot_job.MergeJob)  # the input wiring only: no renderer, no sampling
    job.kw = {"mode": "Weight sum", "model_a": models["A"][0], "clip_a": models["A"][1],
              "model_b": models["B"][0], "clip_b": models["B"][1]}
    job.loaded = {"model_a": "test_A.safetensors", "model_b": "test_B.safetensors"}
    job.checkpoints = plot_job.CheckpointCache()

    assert job._inputs(()).names == {"A": "test_A.safetensors", "B": "test_B.safetensors"}
    swapped = job._inputs((("A", "test_B.safetensors"),))
    assert swapped.models["model_a"] is models["B"][0]  # reused, not loaded again
    assert swapped.names == {"A": "test_B.safetensors", "B": "test_B.safetensors"}
    assert swapped.recipe_sources()["A"]["name"] == "test_B.safetensors"

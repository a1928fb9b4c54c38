"""The tests CI also runs on the older supported ComfyUI (0.3.75), beside the whole suite on 0.33.0.

What the compatibility run must show: the pack registers and every example workflow runs; the ComfyUI
internals and patch paths the engine relies on behave as it expects; one exact merge and save per
architecture. Everything else (the unit tests need no ComfyUI; the rest is the same code on either version)
runs on 0.33.0 only, which keeps CI inside its time budget. `scripts/test.sh` selects these with `--compat`.

Each entry: a test file, and the test names in it (a name selects every parametrization, "name[id]" one of
them; "*" the whole file).
"""
from __future__ import annotations

COMPAT_TESTS: dict[str, tuple[str, ...]] = {
    # registration and categories
    "tests/e2e/test_foundation.py": ("test_pack_registers_without_import_failure",
                                     "test_pack_nodes_sit_beside_the_stock_merge_nodes"),
    # every example workflow
    "tests/e2e/test_merge_nodes.py": ("test_example_workflow_runs", "test_saved_merge_reloads_equal_to_formula"),
    "tests/e2e/test_xy_plot.py": ("test_example_workflow",),
    "tests/e2e/test_xyz_plot.py": ("test_example_workflow_runs",),
    "tests/e2e/test_adjust.py": ("test_example_workflow_runs",),
    "tests/e2e/test_diff_checker.py": ("test_example_workflow",),
    "tests/e2e/test_elemental_lora.py": ("test_example_workflow_runs",),
    # the calc-mode examples: one of each engine path (plain per-key, checkpoint layout); the cosine and
    # extract examples run on 0.33.0 only (the cosine statistic over SD1 costs a minute)
    "tests/e2e/test_calc_modes.py": ("test_family_workflow_runs_and_calc_mode_matters[calc_train_difference]",
                                     "test_family_workflow_runs_and_calc_mode_matters[calc_tensor]"),
    "tests/e2e/test_save_recipe.py": ("test_save_then_reload_by_recipe_examples",),
    "tests/e2e/test_file_merge.py": ("test_file_merge_equals_the_live_save[merge_checkpoint_files]",),
    # the internals and the patch paths
    "tests/inprocess/test_remerge.py": ("test_comfy_internals_the_remerge_uses_are_still_there",
                                        "test_missing_internals_names_what_is_gone"),
    "tests/inprocess/test_load_paths.py": ("*",),
    # Flux's q/k norm names differ between the versions (.scale on 0.3.75, .weight inside 0.33)
    "tests/inprocess/test_flux_norm_names.py": ("test_fixture_has_file_names_and_loader_renames_the_norms",
                                                "test_saved_diffusion_model_has_file_names_and_loads_back"),
    # one exact merge and save per model family (SD1 UNet + CLIP: test_saved_merge_reloads_equal_to_formula
    # above, which SD2's checks repeat with another text encoder, so SD2 runs on 0.33.0 only; SDXL is behind
    # -m heavy on both versions)
    "tests/e2e/test_arch_models.py": ("test_sd3_merge_save_sample",
                                      "test_flux_dev_merge_save_reload_sample", "test_flux_merge_example_workflow"),
}


def selected(nodeid: str) -> bool:
    """Whether the test `nodeid` (pytest's, relative to the repository root) is in the compatibility run."""
    path, _, rest = nodeid.partition("::")
    names = COMPAT_TESTS.get(path)
    if not names:
        return False
    name = rest.split("[", 1)[0]
    return "*" in names or name in names or rest in names

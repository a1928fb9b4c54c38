"""Load Merge Recipe: rebuild a saved merge (MODEL, CLIP, report, and the first source's VAE) from the recipe in its file, or from pasted
recipe JSON, after checking that every source file is the one the recipe names (sha256).

The rebuild itself is nodes/recipe_rebuild.py; this module is the node's sockets, queue-time checks and the
list of files to pick from (saved merges under output/checkpoints, then models/checkpoints).
"""
from __future__ import annotations

from ..merge_core.recipes import recipe as recipes
from .sockets.common import CATEGORY, io, log
from .engine.recipe_rebuild import rebuild, recipe_from_file, saved_merge_names

PASTED = "(pasted recipe)"


class LoadMergeRecipe(io.ComfyNode):
    """Rebuilds a merge from a recipe, refusing sources that are missing or differ from the recorded hash."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LoadMergeRecipe", display_name="Load Merge Recipe", category=CATEGORY,
            description="Rebuilds a saved merge from the recipe in its metadata (or pasted recipe JSON): finds "
                        "each source in models/checkpoints (and loras), checks its sha256, then runs the same "
                        "merge nodes. Missing or different sources stop it with a list of each.",
            inputs=[io.Combo.Input("merge_file", options=[PASTED] + saved_merge_names(), default=PASTED,
                                   tooltip="a saved merge (output/checkpoints: '[output]') or a checkpoint whose "
                                           "metadata holds a recipe; or '(pasted recipe)' to use recipe_json"),
                    io.String.Input("recipe_json", multiline=True, default="",
                                    tooltip="the recipe JSON (or a file's whole metadata), when merge_file is "
                                            f"'{PASTED}'")],
            outputs=[io.Model.Output(display_name="MODEL"), io.Clip.Output(display_name="CLIP"),
                     io.String.Output(display_name="report"),
                     io.Vae.Output(display_name="VAE", tooltip="the VAE of the recipe's first source (A of A...), "
                                                               "which a save of the recipe's graph uses")],
        )

    @classmethod
    def validate_inputs(cls, merge_file=None, recipe_json=None):
        if merge_file == PASTED and recipe_json is not None:
            try:
                recipes.parse_recipe(recipe_json)
            except recipes.RecipeError as e:
                return str(e)
        return True

    @classmethod
    def execute(cls, merge_file, recipe_json=""):
        doc = recipes.parse_recipe(recipe_json) if merge_file == PASTED else recipe_from_file(merge_file)
        model, clip, vae, report = rebuild(doc)
        log.info("[Elemental Merge] rebuilt %s", merge_file if merge_file != PASTED else "a pasted recipe")
        return io.NodeOutput(model, clip, report, vae, ui={"text": [report]})


NODES = [LoadMergeRecipe]

"""Elemental Adjust: SuperMerger's "Adjust" as a node, MODEL in, MODEL out, on any SD1/SD2/SDXL model.

The eight values and what they change are merge_core.adjust's; how they become patches is
nodes.adjust_patches' (shared with the XY plot's `adjust` axes). The node adds the patches to a clone, so the
input model is never changed and the adjustment stacks on whatever the model already is (a merge, a LoRA).
"""
from __future__ import annotations

from ..merge_core.merge.adjust import NAMES, AdjustError, AdjustValues
from .engine import model_info
from .engine.adjust_patches import add_adjust_patches, adjust_plan, adjust_report
from .sockets.common import CATEGORY, io, log

TOOLTIPS = {
    "IN": "detail/noise at the input: scales the first conv (weight x (1 - IN*0.01), bias x (1 + IN*0.02))",
    "OUT": "detail/noise at the output: scales the output GroupNorm (weight x (1 - OUT*0.01), bias x (1 + OUT*0.02))",
    "OUT2": "detail/noise: scales the output conv weight by (1 - OUT2*0.01)",
    "CONT": "contrast: adds CONT*0.02 to the output conv bias of latent channel 0",
    "BRI": "brightness: shifts the output conv bias of latent channels 1-3",
    "COL1": "colour tone cyan <-> red",
    "COL2": "colour tone magenta <-> green",
    "COL3": "colour tone yellow <-> blue",
}
RECIPE_ENTRY = "adjust"


class ElementalAdjust(io.ComfyNode):
    """Adds SuperMerger's Adjust to a model as patches; reports which keys changed and by how much."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ElementalAdjust", display_name="Elemental Adjust", category=CATEGORY,
            description="SuperMerger's Adjust: detail (IN, OUT, OUT2), contrast (CONT), brightness (BRI) and colour "
                        "(COL1-3) by changing only the UNet's first conv and output layers. Useful values are "
                        "about -5 to 5; all 0 changes nothing. SD1, SD2 and SDXL (not Flux or SD3).",
            inputs=[io.Model.Input("model")] + [
                io.Float.Input(name, default=0.0, min=-100.0, max=100.0, step=0.01, tooltip=TOOLTIPS[name])
                for name in NAMES
            ],
            outputs=[io.Model.Output(display_name="MODEL"), io.String.Output(display_name="report")],
        )

    @classmethod
    def execute(cls, model, **values):
        adjust = AdjustValues(tuple(float(values.get(n, 0.0)) for n in NAMES))
        try:
            arch, plan = adjust_plan(model, adjust)
        except (AdjustError, ValueError) as exc:
            raise ValueError(f"Elemental Adjust: {exc}") from None
        report = adjust_report(model_info.model_name(model), arch, adjust, plan)
        log.info("[Elemental Adjust]\n%s", report)
        if not plan:
            return io.NodeOutput(model, report, ui={"text": [report]})
        adjusted = model.clone()
        add_adjust_patches(adjusted, plan)
        recipe = model_info.recipe_of(adjusted)
        if recipe is not None:  # a merged model: a save keeps the adjustment in the recipe
            recipe[RECIPE_ENTRY] = recipe.get(RECIPE_ENTRY, []) + [adjust.text()]
        return io.NodeOutput(adjusted, report, ui={"text": [report]})


NODES = [ElementalAdjust]

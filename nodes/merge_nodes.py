"""The graph-facing merge nodes: thin V3 adapters over merge_core and nodes/engine/merge_patches.py.

What is decided where:
- merge_core: what a spec / weight string means, every key's ratio, the change report, each mode's patch steps.
- nodes/engine/merge_patches.py: how those steps become ModelPatcher patches (shapes, missing keys).
- here: ComfyUI types and widgets, queue-time validation, loading and saving files, the recipe.

Queue-time validation (`validate_inputs`) cannot see the models, so ElementalSpec and BlockWeights carry an
`architecture` choice: a named one is checked fully; `auto` accepts text that is valid for at least one
architecture. The full check, against the real models' architecture and keys, runs again when the merge
executes, before any patch is added.
"""
from __future__ import annotations

import folder_paths

from .engine import comfy_internals, model_info, runtime
from .sockets.common import (ARCH_CHOICES, AUTO, CATEGORY, BlockWeightsType, ElementalSpecType,
                     TextInput, io, log, text_of)
from .sockets.merge_inputs import MergeInputs, calc_sockets, merge_sockets, task_sockets
from ..merge_core.merge.methods import TASK_METHODS
from ..merge_core.merge.task_params import text_socket_names
from ..merge_core.merge.merge_checks import calc_queue_problem, model_count_queue_problem
from ..merge_core.merge.methods import MODEL_INPUTS
from .engine.merge_patches import MergeNotes, apply_merge
from ..merge_core import format_change_report, text_problem, validate_block_weights, validate_spec
from ..merge_core.arch.derived import is_derived
from ..merge_core.text.validation import spec_queue_warnings
from ..merge_core.plot.plot_labels import loaded_checkpoints, loaded_diffusion_models
from ..merge_core.recipes import recipe as recipes
from ..merge_core.merge.params import GAMMA, NORMAL


# ---- queue-time validation --------------------------------------------------------------------------------

def validate_text(kind: str, text: str, architecture: str, validate) -> bool | str:
    """True, or merge_core's message naming line and column (`auto`: valid for any architecture passes)."""
    return text_problem(kind, text, architecture, validate) or True


# ---- nodes --------------------------------------------------------------------------------------------------

class MergeCheckpointLoader(io.ComfyNode):
    """The stock checkpoint loader plus the checkpoint's name and architecture, for labels and recipes."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MergeCheckpointLoader", display_name="Load Checkpoint (Merge)", category=CATEGORY,
            description="Loads a checkpoint like Load Checkpoint and also outputs its name and architecture.",
            inputs=[io.Combo.Input("ckpt_name", options=folder_paths.get_filename_list("checkpoints"))],
            outputs=[io.Model.Output(display_name="MODEL"), io.Clip.Output(display_name="CLIP"),
                     io.Vae.Output(display_name="VAE"), io.String.Output(display_name="name"),
                     io.String.Output(display_name="architecture")],
        )

    @classmethod
    def execute(cls, ckpt_name):
        model, clip, vae = runtime.load_checkpoint(ckpt_name)
        model_info.set_source_name(model, ckpt_name)
        try:
            arch = model_info.architecture_of(model).name
        except ValueError:
            arch = "unknown"
        return io.NodeOutput(model, clip, vae, ckpt_name, arch)


class ElementalSpec(io.ComfyNode):
    """A SuperMerger elemental spec, checked when the prompt is queued."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ElementalSpec", display_name="Elemental Spec", category=CATEGORY,
            description="Elemental merge entries, one per line or comma-separated, e.g. "
                        "'IN04:NOT:attn1:0.3' or 'OUT03-OUT05::0'.",
            inputs=[io.String.Input("spec", multiline=True, default=""),
                    io.Combo.Input("architecture", options=ARCH_CHOICES, default=AUTO,
                                   tooltip="auto: accepted if valid for some architecture; the merge checks it "
                                           "against the real models.")],
            outputs=[ElementalSpecType.Output(display_name="ELEMENTAL_SPEC")],
        )

    @classmethod
    def validate_inputs(cls, spec=None, architecture=AUTO):
        # `spec` is None when it comes from a link: then only the merge can check it.
        if spec is None:
            return True
        for warning in spec_queue_warnings(spec, architecture or AUTO):  # a warning passes: logged only
            log.warning("[Elemental Merge] ElementalSpec: %s", warning)
        return validate_text("elemental spec", spec, architecture or AUTO, validate_spec)

    @classmethod
    def execute(cls, spec, architecture):
        return io.NodeOutput(TextInput(spec, architecture))


class BlockWeights(io.ComfyNode):
    """Per-block ratios: a preset name or a comma-separated weight string, checked when queued."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="BlockWeights", display_name="Block Weights", category=CATEGORY,
            description="A preset name or one weight per block (BASE first for SD1/SD2/SDXL).",
            inputs=[io.String.Input("weights", default=""),
                    io.Combo.Input("architecture", options=ARCH_CHOICES, default=AUTO)],
            outputs=[BlockWeightsType.Output(display_name="BLOCK_WEIGHTS")],
        )

    @classmethod
    def validate_inputs(cls, weights=None, architecture=AUTO):
        if weights is None:  # linked: checked by the merge
            return True
        if not weights.strip():
            return "block weights: empty (give a preset name or one weight per block)"
        return validate_text("block weights", weights, architecture or AUTO, validate_block_weights)

    @classmethod
    def execute(cls, weights, architecture):
        return io.NodeOutput(TextInput(weights, architecture))


class ElementalMerge(io.ComfyNode):
    """Merges models A, B (and C) with per-key ratios from alpha/beta, block weights and elemental specs."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ElementalMerge", display_name="Elemental Merge", category=CATEGORY,
            description="SuperMerger-style merge: Weight sum A(1-a)+Ba, Add difference A+(B-C)a, Triple sum "
                        "A(1-a-b)+Ba+Cb, Sum twice (A(1-a)+Ba)(1-b)+Cb; a and b per key from alpha/beta, "
                        "block weights and elemental specs. Text encoders merge at the BASE ratio. "
                        "Task-vector methods (" + ", ".join(TASK_METHODS) + ") take model_a as the base and "
                        "model_b..model_e as the fine-tunes; their parameters are set per key the same way "
                        "(docs/merge-methods.md).",
            inputs=merge_sockets() + [
                io.Boolean.Input("print_change", default=False,
                                 tooltip="log the change report and show it on the node"),
            ] + calc_sockets() + task_sockets(),
            outputs=[io.Model.Output(display_name="MODEL"), io.Clip.Output(display_name="CLIP"),
                     io.String.Output(display_name="report")],
            # The graph names the checkpoints the stock loader leaves unnamed: the recipe records them.
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, mode=None, calc_mode=None, calc_option=None, alpha=None, beta=None, input_types=None):
        # Declaring these makes ComfyUI skip its own range/choice checks for them: calc_queue_problem redoes
        # them, then refuses a calc mode that does not go with the mode, and out-of-range ratios. Declaring
        # input_types (the types of the linked inputs) tells which models are connected, so a method given too
        # few is refused at queue time; ComfyUI then leaves the link type check to the node.
        linked = input_types or {}
        return (calc_queue_problem(mode, calc_mode, calc_option, alpha, beta)
                or comfy_internals.linked_type_problem(cls, linked)
                or model_count_queue_problem(mode, [k for k in MODEL_INPUTS if k in linked]) or True)

    @classmethod
    def execute(cls, model_a, model_b, mode, alpha, beta, print_change, model_c=None, clip_a=None,
                clip_b=None, clip_c=None, block_weights_alpha=None, block_weights_beta=None,
                elemental_alpha=None, elemental_beta=None, calc_mode=NORMAL, calc_option=GAMMA.default,
                model_d=None, model_e=None, clip_d=None, clip_e=None, **task_inputs):
        hidden = getattr(cls, "hidden", None)
        prompt, unique_id = getattr(hidden, "prompt", None), getattr(hidden, "unique_id", None)
        inputs = MergeInputs(mode, model_a, model_b, model_c, clip_a, clip_b, clip_c, calc_mode, calc_option,
                             graph_names=loaded_checkpoints(prompt, unique_id), model_d=model_d, model_e=model_e,
                             clip_d=clip_d, clip_e=clip_e, graph_labels=loaded_diffusion_models(prompt, unique_id))
        method = inputs.method
        ratios = inputs.ratios(alpha, beta, block_weights_alpha, block_weights_beta, elemental_alpha,
                               elemental_beta)
        texts = {k: v for k, v in task_inputs.items() if k in text_socket_names()}
        values = {k: v for k, v in task_inputs.items() if k not in texts}
        task = inputs.task(values, texts)
        merged, clip_out, targets = inputs.targets()
        calc = inputs.calc(targets)
        notes = {t.name: apply_merge(t.patcher, t.shapes, t.sources, method, ratios.a, ratios.b, calc, task)
                 for t in targets}
        clip_text = notes["clip"].summary("text encoder") if "clip" in notes else "text encoder: " + inputs.clip_reason

        with_beta = inputs.uses_beta
        recipe = recipes.merge_node(
            method.name, alpha, beta if with_beta else None, inputs.arch.name, inputs.recipe_sources(),
            inputs.clip_merged, calc_mode=calc.mode, calc_option=calc.gamma,
            block_weights_alpha=text_of(block_weights_alpha),
            block_weights_beta=text_of(block_weights_beta) if with_beta else None,
            elemental_alpha=text_of(elemental_alpha), elemental_beta=text_of(elemental_beta) if with_beta else None,
            task=recipes.task_settings(method.name, values, {k: text_of(v) for k, v in texts.items()})
            if method.task else None)
        model_info.attach_recipe(merged, recipe)

        report = build_report(recipe, inputs.names, inputs.arch, ratios, notes["unet"], clip_text, task)
        if not print_change:
            return io.NodeOutput(merged, clip_out, report)
        log.info("[Elemental Merge]\n%s", report)
        return io.NodeOutput(merged, clip_out, report, ui={"text": [report]})


def derived_note(arch) -> str:
    """For a model no record describes: what its blocks were derived from ("" for a recorded architecture)."""
    return f"architecture {arch.label}: {arch.summary()}" if is_derived(arch) else ""


def build_report(recipe: dict, names: dict, arch, ratios, unet_notes: MergeNotes, clip_text: str | None,
                 task=None) -> str:
    models = ", ".join(f"{k}={v}" for k, v in names.items())
    head = f"{recipe['mode']} ({arch.label}) alpha={recipe['alpha']}"
    if recipe["beta"] is not None:
        head += f" beta={recipe['beta']}"
    settings = recipe.get("task") or {}
    plain = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items()
             if not k.startswith(("block_weights_", "elemental_")) and v not in (None, "")]
    if plain:
        head += " " + " ".join(plain)
    if not settings:  # a task-vector method takes no calc mode
        calc = recipe.get("calc_mode", NORMAL)
        if recipe.get("calc_option") is not None:
            calc += f" (calc_option {recipe['calc_option']:g})"
        head += f", calc mode: {calc}"
    parts = [head + f": {models}", derived_note(arch), format_change_report(ratios.resolution_a, title="alpha")]
    if ratios.resolution_b is not None:
        parts.append(format_change_report(ratios.resolution_b, title="beta"))
    for name, resolution in (task.values.resolutions.items() if task is not None else ()):
        if settings.get(f"block_weights_{name}") or settings.get(f"elemental_{name}"):
            parts.append(format_change_report(resolution, title=name))
    parts.append(unet_notes.summary("UNet"))
    if clip_text:
        parts.append(clip_text)
    return "\n".join(p for p in parts if p)


NODES = [MergeCheckpointLoader, ElementalSpec, BlockWeights, ElementalMerge]

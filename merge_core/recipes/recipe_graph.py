"""A recipe as the ComfyUI graph that makes it: the pack's own nodes, in ComfyUI's API prompt format.

One compiler, two uses: the web extension puts this graph on the canvas (the front end's `loadApiJson`), and
`Load Merge Recipe` runs the same nodes in order to rebuild the merge, so a rebuilt merge takes exactly the
code path of the live one. Node ids are strings "1", "2", ... in creation order, which is also an order
in which every node comes after its inputs. A checkpoint used twice is loaded once.

Node and input names are the pack's public ones (saved workflows depend on them):
MergeCheckpointLoader(ckpt_name) -> MODEL, CLIP, VAE; ElementalMerge(model_a.., clip_a.., mode, calc_mode,
calc_option, alpha, beta, block_weights_*, elemental_*, print_change) -> MODEL, CLIP, report;
BlockWeights(weights, architecture); ElementalSpec(spec, architecture); ElementalLoRA(model, clip, lora_name,
strength_model, strength_clip, block_weights, elemental, lbw_weights) -> MODEL, CLIP, report;
ElementalAdjust(model, IN..COL3) -> MODEL, report; SaveMergedCheckpoint(model, clip, vae, filename_prefix,
precision).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..merge.adjust import NAMES as ADJUST_NAMES
from ..merge.params import GAMMA, NORMAL

TEXT_NODES = (("block_weights", "BlockWeights", "weights"), ("elemental", "ElementalSpec", "spec"))
DEFAULT_BETA = 0.25        # ElementalMerge's widget default, for modes that do not use beta
SAVE_PREFIX = "checkpoints/ElementalMerge"


@dataclass
class Built:
    """Where a model node's outputs come from: (node id, output slot) or None."""
    model: tuple
    clip: tuple | None
    vae: tuple | None


@dataclass
class GraphBuilder:
    prompt: dict = field(default_factory=dict)
    loaders: dict = field(default_factory=dict)   # checkpoint name -> node id

    def add(self, class_type: str, inputs: dict, title: str | None = None) -> str:
        node_id = str(len(self.prompt) + 1)
        node = {"class_type": class_type, "inputs": inputs}
        if title:
            node["_meta"] = {"title": title}
        self.prompt[node_id] = node
        return node_id

    def text(self, class_type: str, field_name: str, text: str | None, arch: str):
        """A BlockWeights / ElementalSpec node for `text` (a link), or None when there is no text."""
        if text is None:
            return None
        return [self.add(class_type, {field_name: text, "architecture": arch}), 0]

    def checkpoint(self, node: dict) -> Built:
        name = node["name"]
        if name not in self.loaders:
            self.loaders[name] = self.add("MergeCheckpointLoader", {"ckpt_name": name})
        i = self.loaders[name]
        return Built((i, 0), (i, 1), (i, 2))

    def merge(self, node: dict) -> Built:
        built = {k: self.model(v) for k, v in node["sources"].items()}
        arch = node["architecture"]
        inputs = {f"model_{k.lower()}": list(b.model) for k, b in built.items()}
        if built["A"].clip is not None:
            inputs["clip_a"] = list(built["A"].clip)
        if node.get("text_encoder_merged"):
            inputs.update({f"clip_{k.lower()}": list(b.clip) for k, b in built.items() if b.clip is not None})
        inputs.update({
            "mode": node["mode"], "calc_mode": node.get("calc_mode") or NORMAL,
            "calc_option": GAMMA.default if node.get("calc_option") is None else node["calc_option"],
            "alpha": node["alpha"], "beta": DEFAULT_BETA if node.get("beta") is None else node["beta"],
            "print_change": False})
        for side in ("alpha", "beta"):
            for kind, cls, fld in (("block_weights", "BlockWeights", "weights"), ("elemental", "ElementalSpec", "spec")):
                link = self.text(cls, fld, node.get(f"{kind}_{side}"), arch)
                if link is not None:
                    inputs[f"{kind}_{side}"] = link
        for name, value in (node.get("task") or {}).items():  # a task-vector method's settings
            kind = next((k for k, _, _ in TEXT_NODES if name.startswith(k + "_")), None)
            if kind is None:
                inputs[name] = value
                continue
            cls, fld = next((c, f) for k, c, f in TEXT_NODES if k == kind)
            link = self.text(cls, fld, value, arch)
            if link is not None:
                inputs[name] = link
        i = self.add("ElementalMerge", inputs)
        return Built((i, 0), (i, 1) if "clip_a" in inputs else None, built["A"].vae)

    def lora(self, op: dict, arch: str | None, b: Built) -> Built:
        inputs = {"model": list(b.model), "lora_name": op["name"], "strength_model": op["strength_model"],
                  "strength_clip": 1.0 if op.get("strength_clip") is None else op["strength_clip"],
                  "lbw_weights": op.get("lbw_weights") or ""}
        use_clip = b.clip is not None and op.get("strength_clip") is not None
        if use_clip:
            inputs["clip"] = list(b.clip)
        for kind, cls, fld in (("block_weights", "BlockWeights", "weights"), ("elemental", "ElementalSpec", "spec")):
            link = self.text(cls, fld, op.get(kind), arch or "auto")
            if link is not None:
                inputs[kind] = link
        i = self.add("ElementalLoRA", inputs)
        return Built((i, 0), (i, 1) if use_clip else b.clip, b.vae)

    def adjust(self, op: dict, b: Built) -> Built:
        inputs = {"model": list(b.model), **{n: op["values"].get(n, 0.0) for n in ADJUST_NAMES}}
        return Built((self.add("ElementalAdjust", inputs), 0), b.clip, b.vae)

    def model(self, node: dict) -> Built:
        if node["kind"] == "unknown":
            raise ValueError(f"source '{node['label']}' was not loaded by a loader that records its file "
                             "(use Load Checkpoint (Merge)): this recipe cannot be rebuilt")
        b = self.merge(node) if node["kind"] == "merge" else self.checkpoint(node)
        arch = node.get("architecture")
        for op in node.get("apply") or []:
            b = self.lora(op, arch, b) if op["op"] == "lora" else self.adjust(op, b)
        return b


def recipe_graph(doc: dict, save: bool = True) -> tuple[dict, Built]:
    """(API prompt, where the final MODEL/CLIP/VAE come from) for a checked recipe document (`parse_recipe`).
    With `save`, a SaveMergedCheckpoint at the end writes it in the recipe's precision (fp16 when unknown)."""
    g = GraphBuilder()
    built = g.model(doc["model"])
    if save:
        inputs = {"model": list(built.model), "filename_prefix": SAVE_PREFIX,
                  "precision": (doc.get("save") or {}).get("precision", "fp16")}
        if built.clip is not None:
            inputs["clip"] = list(built.clip)
        if built.vae is not None:
            inputs["vae"] = list(built.vae)
        g.add("SaveMergedCheckpoint", inputs)
    return g.prompt, built

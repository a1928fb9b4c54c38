"""API-format graphs the GPU check queues: the pack's merge and plot nodes, and the stock ModelMergeBlocks."""
from __future__ import annotations

POSITIVE, NEGATIVE = "a red cube", "blurry"
SEED = 11

# Per-block spec of the Weight-sum merge (alpha 0.5 elsewhere) and the Add-difference merge's ratios.
WEIGHT_SUM = {"alpha": 0.5, "spec": "IN00-IN05::0.2\nM00::0.8\nOUT06-OUT11::0.65\nBASE::0.3"}
ADD_DIFFERENCE = {"alpha": 0.35, "spec": "OUT00-OUT05::0.7"}


def loaders(c: bool = False) -> dict:
    out = {"A": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "test_A.safetensors"}},
           "B": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "test_B.safetensors"}}}
    if c:
        out["C"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "test_C.safetensors"}}
    return out


def elemental_merge(tag: str, mode: str, alpha: float, spec: str = "", block_weights: str | None = None,
                    with_c: bool = False) -> dict:
    """ElementalMerge of A and B (and C); its MODEL is [f"M{tag}", 0] and its CLIP [f"M{tag}", 1]."""
    inputs = {"model_a": ["A", 0], "model_b": ["B", 0], "clip_a": ["A", 1], "clip_b": ["B", 1], "mode": mode,
              "alpha": alpha, "beta": 0.25, "print_change": False}
    nodes = {}
    if spec:
        nodes[f"S{tag}"] = {"class_type": "ElementalSpec", "inputs": {"spec": spec, "architecture": "auto"}}
        inputs["elemental_alpha"] = [f"S{tag}", 0]
    if block_weights is not None:
        nodes[f"W{tag}"] = {"class_type": "BlockWeights", "inputs": {"weights": block_weights, "architecture": "sd1"}}
        inputs["block_weights_alpha"] = [f"W{tag}", 0]
    if with_c:
        inputs.update(model_c=["C", 0], clip_c=["C", 1])
    nodes[f"M{tag}"] = {"class_type": "ElementalMerge", "inputs": inputs}
    return nodes


def save_merged(tag: str, model, clip, prefix: str) -> dict:
    return {f"V{tag}": {"class_type": "SaveMergedCheckpoint", "inputs": {
        "model": model, "clip": clip, "vae": ["A", 2], "filename_prefix": f"checkpoints/{prefix}",
        "precision": "fp32"}}}


def stock_blocks_merge(tag: str, a_in: float, a_mid: float, a_out: float) -> dict:
    """ComfyUI's ModelMergeBlocks of A and B; its ratios are model1's (A's) shares, so B's share a is 1 - ratio.
    Its prefixes: `input` (input_blocks, and the default for time_embed), `middle`, `out` (output_blocks, out.)."""
    return {f"N{tag}": {"class_type": "ModelMergeBlocks", "inputs": {
        "model1": ["A", 0], "model2": ["B", 0], "input": 1.0 - a_in, "middle": 1.0 - a_mid, "out": 1.0 - a_out}}}


def blocks_as_weights(a_in: float, a_mid: float, a_out: float) -> str:
    """The same per-block ratios as a BlockWeights string (BASE 0: the stock node leaves the text encoder A's;
    time_embed is in IN00 and out. in OUT11, where ModelMergeBlocks puts them too)."""
    return ",".join(str(v) for v in [0.0] + [a_in] * 12 + [a_mid] + [a_out] * 12)


def sample(tag: str, model, clip, size: int, steps: int, prefix: str) -> dict:
    """1 image of `model`; the SaveImage node is f"I{tag}"."""
    return {
        f"P{tag}": {"class_type": "CLIPTextEncode", "inputs": {"text": POSITIVE, "clip": clip}},
        f"Q{tag}": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": clip}},
        f"E{tag}": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        f"K{tag}": {"class_type": "KSampler", "inputs": {
            "model": model, "positive": [f"P{tag}", 0], "negative": [f"Q{tag}", 0], "latent_image": [f"E{tag}", 0],
            "seed": SEED, "steps": steps, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0}},
        f"D{tag}": {"class_type": "VAEDecode", "inputs": {"samples": [f"K{tag}", 0], "vae": ["A", 2]}},
        f"I{tag}": {"class_type": "SaveImage", "inputs": {"images": [f"D{tag}", 0], "filename_prefix": f"gpu/{prefix}"}},
    }


# The plot: x over alpha, y appends one elemental spec to the (empty) base spec.
PLOT_X = ["0.25", "0.75"]
PLOT_Y = ["OUT00-OUT11::0.9", "IN00-IN11::0.1"]


def xy_plot(size: int, steps: int) -> dict:
    return {**loaders(), "X": {"class_type": "ElementalXYPlot", "inputs": {
        "model_a": ["A", 0], "model_b": ["B", 0], "clip_a": ["A", 1], "clip_b": ["B", 1], "vae": ["A", 2],
        "mode": "Weight sum", "alpha": 0.5, "beta": 0.25, "positive": POSITIVE, "negative": NEGATIVE,
        "width": size, "height": size, "batch_size": 1, "seed": SEED, "steps": steps, "cfg": 5.0,
        "sampler_name": "euler", "scheduler": "normal",
        "x_type": "alpha", "x_values": ", ".join(PLOT_X), "y_type": "elemental", "y_values": "\n\n".join(PLOT_Y),
        "filename_prefix": "gpu/xy"}},
        "XI": {"class_type": "SaveImage", "inputs": {"images": ["X", 1], "filename_prefix": "gpu/xycells"}}}


def plot_cells() -> list[tuple[float, str]]:
    """Row-major (y outer, as the plot returns its cells): each cell's alpha and spec."""
    return [(float(x), y) for y in PLOT_Y for x in PLOT_X]

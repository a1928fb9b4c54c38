"""Readable plot labels: names taken from the graph, and wrapping that breaks between words, not inside them.

Names: ComfyUI hands an output node the whole API-format prompt and its own node id (hidden inputs), so the
plot can walk from each model input to the loader upstream and use the checkpoint's name, where the stock
loader gives the MODEL no name at all ("unnamed model"). Merges and other model nodes in between are followed
through their model inputs.

Wrapping: an axis label such as "OUT05:attn2.to_k" or a weight string "0.1,0.2,..." has no spaces, so a
word wrap cuts it anywhere. Here a line may break after a space, a colon or a comma; only a single piece
wider than the line is cut, preferably after a dot or underscore. Pure Python, with the caller's `measure`
(text -> width), so it works with any font.
"""
from __future__ import annotations

import re

# class_type -> the input holding the file name, for loaders of a MODEL.
LOADER_NAME_INPUTS = {
    "CheckpointLoaderSimple": "ckpt_name", "CheckpointLoader": "ckpt_name", "MergeCheckpointLoader": "ckpt_name",
    "UNETLoader": "unet_name", "unCLIPCheckpointLoader": "ckpt_name", "ImageOnlyCheckpointLoader": "ckpt_name",
}
# Model inputs followed through other nodes, in the order tried; two-model merges are named "(A + B)".
MERGE_INPUTS = (("model_a", "model_b"), ("model1", "model2"))
FOLLOW_INPUTS = ("model", "model_a", "model1")
MAX_DEPTH = 12


def _stem(name: str) -> str:
    base = re.split(r"[\\/]", str(name))[-1]
    return re.sub(r"\.(safetensors|ckpt|pt|pth|bin|sft|gguf)$", "", base, flags=re.IGNORECASE)


def _linked(node: dict, name: str):
    value = (node.get("inputs") or {}).get(name)
    return str(value[0]) if isinstance(value, list) and len(value) == 2 else None


def upstream_name(prompt: dict, node_id, depth: int = 0) -> str | None:
    """A readable name of the MODEL that node `node_id` outputs, or None when no loader is found."""
    node = (prompt or {}).get(str(node_id))
    if node is None or depth > MAX_DEPTH:
        return None
    cls = node.get("class_type", "")
    if cls in LOADER_NAME_INPUTS:
        value = node.get("inputs", {}).get(LOADER_NAME_INPUTS[cls])
        return _stem(value) if isinstance(value, str) else None
    for a, b in MERGE_INPUTS:
        la, lb = _linked(node, a), _linked(node, b)
        if la and lb:
            na, nb = upstream_name(prompt, la, depth + 1), upstream_name(prompt, lb, depth + 1)
            if na or nb:
                return f"({na or '?'} + {nb or '?'})"
    for name in FOLLOW_INPUTS:
        link = _linked(node, name)
        if link:
            return upstream_name(prompt, link, depth + 1)
    return None


def input_names(prompt: dict, unique_id, inputs=("model_a", "model_b", "model_c")) -> dict:
    """input name -> readable name of the model linked there (only inputs with a name found)."""
    node = (prompt or {}).get(str(unique_id)) if unique_id is not None else None
    if node is None:
        return {}
    out = {}
    for name in inputs:
        link = _linked(node, name)
        if link:
            found = upstream_name(prompt, link)
            if found:
                out[name] = found
    return out


CHECKPOINT_LOADERS = ("CheckpointLoaderSimple", "CheckpointLoader", "MergeCheckpointLoader")


MODEL_INPUT_NAMES = ("model_a", "model_b", "model_c", "model_d", "model_e")  # a merging node's model inputs


def loaded_checkpoints(prompt: dict, unique_id, inputs=MODEL_INPUT_NAMES) -> dict:
    """input name -> checkpoint file name, for inputs wired straight to a checkpoint loader's MODEL output:
    the model there is that file as loaded, so a model axis naming the same file can reuse it rather than load
    a second copy (the stock loader does not name its MODEL; only the graph tells)."""
    return _wired_files(prompt, unique_id, inputs, dict.fromkeys(CHECKPOINT_LOADERS, "ckpt_name"))


DIFFUSION_MODEL_LOADERS = {"UNETLoader": "unet_name"}  # Load Diffusion Model: class_type -> its file input


def loaded_diffusion_models(prompt: dict, unique_id, inputs=MODEL_INPUT_NAMES) -> dict:
    """input name -> diffusion-model file name (models/diffusion_models), for inputs wired straight to Load
    Diffusion Model's MODEL output: the name reports and errors give that model, which ComfyUI leaves unnamed.
    A name only: such a file is not a checkpoint, so no recipe is read from it."""
    return _wired_files(prompt, unique_id, inputs, DIFFUSION_MODEL_LOADERS)


def _wired_files(prompt: dict, unique_id, inputs, loaders: dict) -> dict:
    """input name -> the file name input of the loader (class_type -> input) whose output 0 is wired into it."""
    node = (prompt or {}).get(str(unique_id)) if unique_id is not None else None
    out = {}
    for name in inputs if node else ():
        value = (node.get("inputs") or {}).get(name)
        if not (isinstance(value, list) and len(value) == 2 and value[1] == 0):
            continue
        source = prompt.get(str(value[0])) or {}
        field = loaders.get(source.get("class_type"))
        file_name = (source.get("inputs") or {}).get(field) if field else None
        if isinstance(file_name, str):
            out[name] = file_name
    return out


_PIECES = re.compile(r"[^ :,]*[ :,]+|[^ :,]+$")


def _pieces(text: str) -> list[str]:
    """The text split after each run of spaces, colons and commas (each piece keeps its break chars)."""
    return [p for p in _PIECES.findall(text) if p]


def _cut(piece: str, measure, width: float) -> list[str]:
    """A piece wider than the line: cut after a dot/underscore/hyphen when one fits, else by characters."""
    out = []
    while measure(piece) > width and len(piece) > 1:
        fit = len(piece)
        while fit > 1 and measure(piece[:fit]) > width:
            fit -= 1
        soft = max(piece.rfind(ch, 0, fit) for ch in "._-")
        cut = soft + 1 if soft > 0 else fit
        out.append(piece[:cut])
        piece = piece[cut:]
    out.append(piece)
    return out


def wrap_label(text: str, measure, width: float) -> list[str]:
    """Lines of `text` no wider than `width` (by `measure`), breaking after spaces, colons and commas;
    trailing spaces are dropped at a break. Existing newlines are kept."""
    lines: list[str] = []
    for para in str(text).split("\n"):
        line = ""
        for piece in _pieces(para):
            if measure((line + piece).rstrip()) <= width:
                line += piece
                continue
            if line.strip():
                lines.append(line.rstrip())
            parts = _cut(piece, measure, width)
            lines.extend(p.rstrip() for p in parts[:-1])
            line = parts[-1]
        lines.append(line.rstrip())
    return [l for l in lines if l] or [""]


def fits_without_cuts(text: str, measure, width: float) -> bool:
    """Whether every piece fits a line (so wrapping never has to cut inside one): the test for shrinking the
    type, which is the last resort."""
    return all(measure(p.rstrip()) <= width for para in str(text).split("\n") for p in _pieces(para))


def display_name(name: str) -> str:
    """A checkpoint name for titles: no folders, no extension."""
    return _stem(name) if name else name


"""Independent expectations for the unit tests: hand-written, not derived from merge_core's tables."""
from __future__ import annotations

U = "model.diffusion_model."


def _unet_block(u: str, last_out: str) -> str | None:
    parts = u.split(".")
    if parts[0] == "input_blocks":
        return "IN%02d" % int(parts[1])
    if parts[0] in ("time_embed", "label_emb"):
        return "IN00"
    if parts[0] == "middle_block":
        return "M00"
    if parts[0] == "output_blocks":
        return "OUT%02d" % int(parts[1])
    if parts[0] == "out":
        return last_out
    return None


def expected_block(arch: str, key: str) -> str | None:
    """Hand-written, independent of merge_core's regex tables."""
    if arch in ("sd1", "sd2"):
        if key.startswith("cond_stage_model."):
            return "BASE"
        return _unet_block(key[len(U):], "OUT11") if key.startswith(U) else None
    if arch == "sdxl":
        if key.startswith("conditioner.embedders.0.") or key.startswith("conditioner.embedders.1."):
            return "BASE"
        return _unet_block(key[len(U):], "OUT08") if key.startswith(U) else None
    if key.startswith("text_encoders."):
        enc = key.split(".")[1]
        return {"clip_l": "CLIP", "clip_g": "CLIP", "t5xxl": "T5"}[enc]
    parts = key[len(U):].split(".")
    head = parts[0]
    if arch == "flux":
        if head == "double_blocks":
            return "D%02d" % int(parts[1])
        if head == "single_blocks":
            return "S%02d" % int(parts[1])
        if head in ("img_in", "txt_in", "time_in", "vector_in", "guidance_in"):
            return "IN"
        if head == "final_layer":
            return "OUT"
    if arch == "sd3":
        if head == "joint_blocks":
            return "J%02d" % int(parts[1])
        if head in ("x_embedder", "pos_embed", "t_embedder", "y_embedder", "context_embedder"):
            return "IN"
        if head == "final_layer":
            return "OUT"
    return None

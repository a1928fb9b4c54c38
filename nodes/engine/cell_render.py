"""One XY cell's picture: encode the prompts, sample, decode; the same computation as the stock graph
CLIPTextEncode x2 + EmptyLatentImage + KSampler + VAEDecode, so that a cell is bit-identical to that graph
run on the same merge. Only the progress reporting differs: one bar for the whole plot (cells x steps)
instead of one per KSampler, and an interrupt check between cells.
"""
from __future__ import annotations

import comfy.model_management
import comfy.sample
import comfy.utils
import torch


def encode(clip, text: str):
    """CONDITIONING of `text`, as CLIPTextEncode makes it."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def empty_latent(width: int, height: int, batch_size: int) -> dict:
    """EmptyLatentImage's output (4 channels; the sampler widens it for models with more)."""
    device = comfy.model_management.intermediate_device()
    return {"samples": torch.zeros([batch_size, 4, height // 8, width // 8], device=device)}


def sample(model, latent: dict, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
           positive, negative, on_step=None) -> dict:
    """KSampler at denoise 1: same noise (seed, batch_index), same noise mask, same sampler call.

    `on_step(step)` is called after each step (0-based), for the plot's progress bar."""
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))

    def callback(step, x0, x, total_steps):
        if on_step is not None:
            on_step(step)

    samples = comfy.sample.sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative,
                                  latent_image, denoise=1.0, disable_noise=False, start_step=None,
                                  last_step=None, force_full_denoise=False, noise_mask=latent.get("noise_mask"),
                                  callback=callback, disable_pbar=True, seed=seed)
    out = dict(latent)
    out["samples"] = samples
    return out


def decode(vae, latent: dict) -> torch.Tensor:
    """IMAGE (B, H, W, C) as VAEDecode makes it (video latents flattened into the batch)."""
    images = vae.decode(latent["samples"])
    if images.ndim == 5:
        images = images.reshape(-1, images.shape[-3], images.shape[-2], images.shape[-1])
    return images


class PlotProgress:
    """One ComfyUI progress bar over `cells` x `steps`, advanced by each sampling step."""

    def __init__(self, cells: int, steps: int):
        self.steps = max(1, steps)
        self.bar = comfy.utils.ProgressBar(max(1, cells) * self.steps)
        self.cell = 0

    def start_cell(self, index: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        self.cell = index
        self.bar.update_absolute(index * self.steps)

    def on_step(self, step: int) -> None:
        self.bar.update_absolute(self.cell * self.steps + step + 1)


class CellRenderer:
    """Renders cells of an IncrementalMerge, re-encoding the prompts only when the text encoder or the
    positive prompt changed. A cell may give its own seed and positive prompt (the XY plot's seed and prompt
    axes): those re-sample without re-merging anything."""

    def __init__(self, merge, vae, positive: str, negative: str, latent: dict, seed: int, steps: int,
                 cfg: float, sampler_name: str, scheduler: str):
        self.merge, self.vae = merge, vae
        self.texts = (positive, negative)
        self.latent, self.seed, self.steps, self.cfg = latent, seed, steps, cfg
        self.sampler_name, self.scheduler = sampler_name, scheduler
        self._conds = None
        self._conds_for = None  # (clip object, texts) the cached conds were encoded with
        self.encodes = 0

    def use_merge(self, merge) -> None:
        """Renders from another merge from now on (a model axis: another checkpoint, merged afresh)."""
        self.merge = merge
        self._conds = None

    def conds(self, changed_keys, texts=None) -> tuple:
        texts = texts or self.texts
        if (self._conds is None or self.merge.changed_in("clip", changed_keys)
                or self._conds_for != (id(self.merge.clip), texts)):
            if self.merge.clip is None:
                raise ValueError("a CLIP (clip_a) is needed to encode the prompts")
            self._conds = tuple(encode(self.merge.clip, t) for t in texts)
            self._conds_for = (id(self.merge.clip), texts)
            self.encodes += 1
        return self._conds

    def render(self, changed_keys, on_step=None, seed: int | None = None, positive: str | None = None):
        texts = (positive if positive is not None else self.texts[0], self.texts[1])
        positive_c, negative_c = self.conds(changed_keys, texts)
        out = sample(self.merge.model, self.latent, self.seed if seed is None else seed, self.steps, self.cfg,
                     self.sampler_name, self.scheduler, positive_c, negative_c, on_step)
        return decode(self.vae, out)

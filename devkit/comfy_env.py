"""Importing ComfyUI in-process (for the checkpoint generator and in-process tests).

ComfyUI's model_management picks its device at import time from its command-line args; in-process we
must set `--cpu` (or leave the GPU) before anything imports it.
"""
from __future__ import annotations

import os
import sys


def comfyui_dir() -> str:
    d = os.environ.get("COMFYUI_DIR")
    if not d or not os.path.isfile(os.path.join(d, "main.py")):
        raise RuntimeError("COMFYUI_DIR must point at a ComfyUI tree (run scripts/provision.sh)")
    return d


def import_comfy(cpu: bool | None = None) -> None:
    """Makes `import comfy...` work in this process; `cpu` defaults to True unless CUDA is usable."""
    d = comfyui_dir()
    if d not in sys.path:
        sys.path.insert(0, d)
    if "comfy.model_management" in sys.modules:
        return
    import torch
    from comfy.cli_args import args

    if cpu is None:
        cpu = not torch.cuda.is_available()
    args.cpu = cpu

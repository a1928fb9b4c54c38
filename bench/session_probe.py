"""A debug route for bench_session_growth: what a live ComfyUI server holds between prompts.

This file is not part of the pack: the bench copies it into its scratch server's custom_nodes/ folder (as
elemental_session_probe/__init__.py), where ComfyUI imports it at start and it adds GET /elemental_probe. It
only reads (no gc.collect, no cache change) unless asked: `?trim=1` runs glibc's malloc_trim(0) first and says
how much RSS that gave back (free heap the allocator kept, not live objects).

Answer (JSON): rss/anon bytes; counts of the objects that hold merge state (MergePatch, ModelPatcher, CLIP, ...); the pack's own caches (interned patches,
cosine statistics, LoRA file cache, merge_core memos); ComfyUI's output caches (entries and what their outputs
are, with the RAM-pressure cache's own size estimate of each); the loaded models; glibc's heap figures.
"""
import ctypes
import gc
import sys
import warnings

from aiohttp import web
from server import PromptServer

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}

COUNTED = ("MergePatch", "MergeParams", "ModelPatcher", "ModelPatcherDynamic", "CLIP", "LoadedModel", "CacheEntry",
           "LowVramPatch", "BaseModel", "SD1ClipModel")


def _status_kib(name):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    return None


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]


def _heap():
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _Mallinfo2
    m = libc.mallinfo2()
    return {"arena": m.arena, "mmapped": m.hblkhd, "in_use": m.uordblks, "free": m.fordblks}


def _module(suffix):
    return next((m for name, m in list(sys.modules.items()) if name.endswith(suffix) and m is not None), None)


def _pack_caches():
    out = {}
    mp = _module("nodes.engine.merge_adapter")
    if mp is not None and hasattr(mp, "_INTERNED"):
        out["interned_patches"] = len(mp._INTERNED)
    cm = _module("merge_core.merge.calc_modes")
    if cm is not None and hasattr(cm, "STAT_CACHE"):
        out["cosine_stats"] = len(cm.STAT_CACHE._items)
    le = _module("nodes.engine.lora_patches")
    if le is not None and hasattr(le, "_FILE_CACHE"):
        out["lora_files"] = len(le._FILE_CACHE)
    mc = _module("merge_core.cache")
    if mc is not None and hasattr(mc, "cache_info"):
        out["merge_core_memo_entries"] = sum(info[3] for info in mc.cache_info().values())
    return out


def _walk_outputs(outputs, into):
    import torch

    for o in outputs or ():
        if isinstance(o, (list, tuple)):
            _walk_outputs(o, into)
        else:
            into["types"].append(type(o).__name__)
            if isinstance(o, torch.Tensor) and o.device.type == "cpu":
                into["tensor_bytes"] += o.numel() * o.element_size()


def _output_caches(objects):
    found = []
    for o in objects:
        name = type(o).__name__
        if name in ("RAMPressureCache", "LRUCache", "HierarchicalCache", "BasicCache") and hasattr(o, "cache"):
            entries = []
            for key, entry in list(o.cache.items()):
                into = {"types": [], "tensor_bytes": 0}
                _walk_outputs(getattr(entry, "outputs", None), into)
                entries.append({"generation": getattr(o, "used_generation", {}).get(key), **into})
            found.append({"class": name, "generation": getattr(o, "generation", None), "entries": entries})
    return found


def snapshot(trim=False):
    out = {}
    if trim:
        before = _status_kib("VmRSS")
        libc = _libc()
        if libc is not None:
            libc.malloc_trim(0)
        out["trim_gave_back"] = before - _status_kib("VmRSS")
    out["rss"], out["anon"] = _status_kib("VmRSS"), _status_kib("RssAnon")
    out["heap"] = _heap()
    objects = gc.get_objects()
    counts = dict.fromkeys(COUNTED, 0)
    for o in objects:
        n = type(o).__name__
        if n in counts:
            counts[n] += 1
    out["objects"] = counts
    out["gc_objects"] = len(objects)
    out["pack_caches"] = _pack_caches()
    out["output_caches"] = _output_caches(objects)
    try:
        import comfy.model_management as mm

        out["loaded_models"] = [type(getattr(m, "model", None)).__name__ for m in mm.current_loaded_models]
    except Exception as err:  # noqa: BLE001 - a debug route reports what it could not read
        out["loaded_models"] = repr(err)
    del objects
    return out


@PromptServer.instance.routes.get("/elemental_probe")
async def elemental_probe(request):
    return web.json_response(snapshot(trim=request.query.get("trim") == "1"))

"""The spec editor's HTTP routes (under ``/elemental/``): thin aiohttp glue.

The web extension calls these while the user types (validation, matched-key preview, completion lists) and
to learn a connected checkpoint's architecture. What they answer is decided in `route_logic`; this module
only reads the request, runs the answer off the event loop (a preview of a large spec takes milliseconds to
tens of milliseconds, which must not stall ComfyUI's websocket), and turns `RequestError` into a 4xx JSON
``{"error": message}``. Any other exception is logged and answered 500 with a message, never a traceback page.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os

import folder_paths  # ComfyUI's checkpoint folders (this module only runs inside ComfyUI's server)
from aiohttp import web

from ...merge_core.files.checkpoint_header import detect_file
from ...merge_core.files.safetensors_stream import read_header
from ..engine import header_model
from ...merge_core.editor import model_blocks, route_logic
from ...merge_core.editor.route_logic import RequestError

log = logging.getLogger("elemental_merge")
PREFIX = "/elemental"


def _json(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


async def _read_body(request: web.Request) -> dict:
    """The JSON object of the body; refuses an oversized one from its Content-Length before reading it."""
    limit = route_logic.MAX_BODY_BYTES
    if request.content_length is not None and request.content_length > limit:
        raise RequestError(413, f"request body of {request.content_length} bytes is over the limit of {limit}")
    raw = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        raw.extend(chunk)
        if len(raw) > limit:
            raise RequestError(413, f"request body is over the limit of {limit} bytes")
    return route_logic.parse_body(bytes(raw))


def _handler(fn):
    """Wraps a coroutine handler: RequestError -> its 4xx, anything else -> a logged 500 with a message."""
    @functools.wraps(fn)
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return _json(await fn(request))
        except RequestError as e:
            return _error(e.status, e.message)
        except ConnectionError:  # the editor went away mid-request (page closed, newer keystroke): no answer
            log.debug("[Elemental Merge] %s %s: client disconnected", request.method, request.path)
            raise
        except Exception as e:  # a bug must answer, not hang the editor or print a traceback page
            log.exception("[Elemental Merge] %s %s failed", request.method, request.path)
            return _error(500, f"internal error: {type(e).__name__}: {e}")
    return wrapped


async def _off_loop(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _query(request: web.Request) -> dict:
    return {k: request.query.get(k) for k in request.query}


@_handler
async def architectures(request):
    return route_logic.list_architectures()


@_handler
async def architecture(request):
    return await _off_loop(route_logic.architecture_info, request.match_info["name"])


@_handler
async def elements(request):
    return await _off_loop(route_logic.elements, _query(request))


@_handler
async def presets(request):
    return route_logic.presets(_query(request))


@_handler
async def validate(request):
    return await _off_loop(route_logic.validate, await _read_body(request))


@_handler
async def preview(request):
    return await _off_loop(route_logic.preview, await _read_body(request))


@_handler
async def detect(request):
    """GET /elemental/detect?ckpt_name=...[&folder=diffusion_models]: a model file's architecture from its
    safetensors header (`_detect`): {arch, label, reason, blocks, derived}; for a model with no record, the
    derived architecture the merge will use. `folder` is the ComfyUI model folder the name is listed in:
    `checkpoints` (default) or `diffusion_models` (UNETLoader's files, e.g. Flux)."""
    name = request.query.get("ckpt_name", "")
    folder = request.query.get("folder", "checkpoints")
    if folder not in DETECT_FOLDERS:
        raise RequestError(400, f"'folder' must be one of {', '.join(DETECT_FOLDERS)}, not {folder[:60]!r}")
    if not name or len(name) > route_logic.MAX_NAME_CHARS:
        raise RequestError(400, "'ckpt_name' must be a checkpoint name of 1 to "
                                f"{route_logic.MAX_NAME_CHARS} characters")
    missing = f"no checkpoint named {name[:120]!r}" + ("" if folder == "checkpoints" else f" in {folder}")
    if name not in folder_paths.get_filename_list(folder):
        raise RequestError(404, missing)
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        raise RequestError(404, missing)
    out = await _off_loop(_detect_cached, path)
    return {"ckpt_name": name, "folder": folder, **out}


_DETECTED: dict[tuple, dict] = {}  # (path, size, mtime) -> answer: the editors ask for every connected model


def _detect_cached(path: str) -> dict:
    try:
        st = os.stat(path)
        key = (path, st.st_size, st.st_mtime_ns)
    except OSError:
        return detect_file(path)
    if key not in _DETECTED:
        if len(_DETECTED) > 256:
            _DETECTED.clear()
        _DETECTED[key] = _detect(path)
    return _DETECTED[key]


def _detect(path: str) -> dict:
    """A model file's architecture as the merge will find it (`model_blocks.file_architecture`): a record from
    the header's keys when it holds every diffusion-model key; else ComfyUI's own detection on the header's
    shapes (`header_model`) says the config class and, for a model with no record, the key order its blocks
    are derived from."""
    if not path.lower().endswith(".safetensors"):
        return detect_file(path)
    try:
        header, _ = read_header(path)
    except (OSError, ValueError):
        return detect_file(path)  # its reason, which never names the path
    record = model_blocks.record_of_keys(header)
    if record is not None:
        return {"arch": record.name, "label": record.label, "reason": f"{len(header)} keys",
                "blocks": list(record.blocks), "derived": False}
    try:
        config_class, model_keys = header_model.model_keys(header)
    except Exception as e:  # a layout ComfyUI's detection cannot read from shapes alone: say so, never fail
        log.debug("[Elemental Merge] detect %s: %s", os.path.basename(path), e)
        config_class, model_keys = None, None
    return model_blocks.file_architecture(header, model_keys, config_class)


DETECT_FOLDERS = ("checkpoints", "diffusion_models")


ROUTES = (
    ("GET", "/architectures", architectures),
    ("GET", "/architectures/{name}", architecture),
    ("GET", "/elements", elements),
    ("GET", "/presets", presets),
    ("POST", "/validate", validate),
    ("POST", "/preview", preview),
    ("GET", "/detect", detect),
)

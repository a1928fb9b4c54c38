"""The pack's HTTP routes on ComfyUI's own server, all under ``/elemental/``: the spec editor's
(`editor_routes`) and the recipe loader's (`recipe_routes`). Each module declares `PREFIX` and `ROUTES`;
`register()` is the one place they are added to ComfyUI's route table."""
from __future__ import annotations

from . import editor_routes, recipe_routes

ROUTE_MODULES = (editor_routes, recipe_routes)


def register() -> None:
    """Adds every route to ComfyUI's route table; a route already there is not added again, so a second call
    (a reloaded extension) changes nothing. Outside ComfyUI's server (in-process tests) it does nothing."""
    try:
        from server import PromptServer
    except ImportError:
        return
    if getattr(PromptServer, "instance", None) is None:
        return
    table = PromptServer.instance.routes
    present = {(getattr(r, "method", None), getattr(r, "path", None)) for r in table}
    for module in ROUTE_MODULES:
        for method, path, handler in module.ROUTES:
            if (method, module.PREFIX + path) not in present:
                table.route(method, module.PREFIX + path)(handler)

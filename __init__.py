"""ComfyUI Elemental Merge: block- and element-wise checkpoint merging for ComfyUI.

ComfyUI imports this file as the pack's entry point. Registration uses the V3 node API
(`comfy_api.latest`, ComfyUI >= 0.3.75): every module under `nodes/` that defines `NODES` (a list of
`io.ComfyNode` classes) contributes them, and one that defines `register_routes()` adds its HTTP routes.
Node modules are found from a table, so a new node module is one line here.
"""
from __future__ import annotations

import importlib
import logging

WEB_DIRECTORY = "./web"

# The node modules of the pack, in the order their nodes appear in the menu.
NODE_MODULES = (
    "merge_nodes",
    "xy_plot",
    "diff_checker",
    "adjust_node",
    "routes",
)

_log = logging.getLogger("elemental_merge")


def _node_modules():
    for name in NODE_MODULES:
        try:
            yield importlib.import_module(f".nodes.{name}", __name__)
        except ModuleNotFoundError as exc:
            # A module that is not written yet is not an import failure; anything else missing is.
            if exc.name != f"{__name__}.nodes.{name}":
                raise


def _collect():
    nodes = []
    for module in _node_modules():
        nodes.extend(getattr(module, "NODES", ()))
        register = getattr(module, "register_routes", None)
        if register is not None:
            register()
    return nodes


try:
    from comfy_api.latest import ComfyExtension
except ImportError:  # imported outside ComfyUI (unit tests, the CLI): nothing to register
    ComfyExtension = None

if ComfyExtension is not None:

    class ElementalMergeExtension(ComfyExtension):
        async def get_node_list(self):
            nodes = _collect()
            _log.info("[Elemental Merge] registered %d nodes", len(nodes))
            return nodes

    async def comfy_entrypoint() -> ComfyExtension:
        return ElementalMergeExtension()

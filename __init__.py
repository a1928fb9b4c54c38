"""ComfyUI Elemental Merge: block- and element-wise checkpoint merging for ComfyUI.

ComfyUI imports this file as the pack's entry point. Registration uses the V3 node API from its versioned
module (`comfy_api.v0_0_2`, ComfyUI >= 0.3.75; `latest` follows the version under development). Every module
of `NODE_MODULES` defines `NODES` (a list of `io.ComfyNode` classes); the HTTP routes are added in the
extension's `on_load`. A new node module is one line in the table.
"""
from __future__ import annotations

import importlib
import logging

WEB_DIRECTORY = "./web"

# The node modules of the pack, in the order their nodes appear in the menu.
NODE_MODULES = (
    "merge_nodes",
    "save_nodes",
    "file_merge_nodes",
    "recipe_nodes",
    "xy_plot",
    "diff_checker",
    "adjust_nodes",
    "lora_nodes",
)

_log = logging.getLogger("elemental_merge")


def _collect() -> list:
    nodes = []
    for name in NODE_MODULES:
        nodes.extend(importlib.import_module(f".nodes.{name}", __name__).NODES)
    return nodes


try:
    from comfy_api.v0_0_2 import ComfyExtension
except ImportError:  # imported outside ComfyUI (unit tests, the CLI): nothing to register
    ComfyExtension = None

if ComfyExtension is not None:

    class ElementalMergeExtension(ComfyExtension):
        _loaded = False

        async def on_load(self) -> None:
            importlib.import_module(".nodes.http_routes", __name__).register()
            self._loaded = True

        async def get_node_list(self):
            if not self._loaded:  # ComfyUI 0.3.75 does not call on_load; later releases call it first
                await self.on_load()
            nodes = _collect()
            _log.info("[Elemental Merge] registered %d nodes", len(nodes))
            return nodes

    async def comfy_entrypoint() -> ComfyExtension:
        return ElementalMergeExtension()

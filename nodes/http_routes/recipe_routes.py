"""HTTP routes behind the web extension's "Load merge recipe as workflow" menu entry (under /elemental/recipe).

- GET  /elemental/recipe/files: the files a recipe can be read from (saved merges first), with a label.
- POST /elemental/recipe/graph {"file": name} or {"recipe": text}: the graph that produced the merge, as an
  API prompt the front end puts on the canvas (`app.loadApiJson`), plus a readable summary. A bad recipe or
  file answers 400 with every problem listed.
"""
from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from ...merge_core.recipes import recipe as recipes
from ...merge_core.recipes.recipe_graph import recipe_graph
from ..engine.recipe_rebuild import recipe_from_file, saved_merge_names

log = logging.getLogger("elemental_merge")
PREFIX = "/elemental/recipe"
MAX_BODY = 8 * 1024 * 1024


def graph_for(body: dict) -> dict:
    """{"prompt", "summary"} for a request body; ValueError (its message for the user) otherwise."""
    if not isinstance(body, dict) or not (("file" in body) ^ ("recipe" in body)):
        raise ValueError('send {"file": <name from /elemental/recipe/files>} or {"recipe": <recipe JSON>}')
    doc = recipe_from_file(str(body["file"])) if "file" in body else recipes.parse_recipe(body["recipe"])
    prompt, _ = recipe_graph(doc, save=True)
    return {"prompt": prompt, "summary": recipes.describe(doc["model"])}


async def files(request: web.Request) -> web.Response:
    names = await asyncio.get_running_loop().run_in_executor(None, saved_merge_names)
    return web.json_response({"files": names})


async def graph(request: web.Request) -> web.Response:
    if request.content_length is not None and request.content_length > MAX_BODY:
        return web.json_response({"error": "request body too large"}, status=413)
    try:
        body = json.loads(await request.text())
        out = await asyncio.get_running_loop().run_in_executor(None, graph_for, body)
    except (ValueError, OSError) as e:  # RecipeError and JSONDecodeError are ValueErrors
        return web.json_response({"error": str(e)}, status=400)
    return web.json_response(out)


ROUTES = (("GET", "/files", files), ("POST", "/graph", graph))

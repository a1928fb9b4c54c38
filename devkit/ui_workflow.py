"""The UI-format twin of an API-format workflow, from a server's /object_info (for writing example workflows).

The front end saves a graph as LiteGraph JSON: nodes with their socket inputs (in the schema's order, linked
or not), outputs with the links leaving them, and the widget values positionally (a seed's widget is followed
by its "control after generate" choice). This writes exactly that from the API prompt, so an example workflow
is authored once, as the API prompt CI queues, and its template is derived from it
(tests/e2e/test_merge_nodes.py::test_ui_workflow_matches_api_twin checks the pair).

Run as a script against a running server:
    python -m devkit.ui_workflow URL NAME [NAME ...]     (reads example_workflows/api/NAME.json, writes
                                                          example_workflows/NAME.json; positions in a grid)
"""
from __future__ import annotations

import json
import os
import sys
import urllib.request

from devkit.workflows import API_WORKFLOW_DIR, WORKFLOW_DIR

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def _inputs(info: dict) -> list[tuple[str, object, dict]]:
    """(name, type, options) of every input in schema order."""
    order = info.get("input_order", {})
    every = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    names = order.get("required", []) + order.get("optional", [])
    return [(n, every[n][0], every[n][1] if len(every[n]) > 1 else {}) for n in names]


def _is_widget(kind, opts: dict) -> bool:
    """Whether the front end draws the input as a widget (a forced input is a socket only)."""
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not opts.get("forceInput")


def _order(api: dict) -> list[str]:
    """Node ids in an order where every node comes after the nodes it reads from."""
    done: list[str] = []

    def visit(nid):
        if nid in done:
            return
        for v in api[nid]["inputs"].values():
            if isinstance(v, list):
                visit(str(v[0]))
        done.append(nid)

    for nid in sorted(api, key=int):
        visit(nid)
    return done


def api_to_ui(api: dict, object_info: dict, positions: dict | None = None, titles: dict | None = None) -> dict:
    order = _order(api)
    links, nodes = [], []
    out_links: dict[tuple[str, int], list[int]] = {}
    for nid in sorted(api, key=int):
        node = api[nid]
        info = object_info[node["class_type"]]
        inputs, widgets = [], []
        for name, kind, opts in _inputs(info):
            value = node["inputs"].get(name)
            if _is_widget(kind, opts):
                if name in node["inputs"]:
                    widgets.append(value)
                    if opts.get("control_after_generate"):
                        widgets.append("fixed")
                continue
            link = None
            if isinstance(value, list):
                link = len(links) + 1
                links.append([link, int(value[0]), value[1], int(nid), len(inputs), kind])
                out_links.setdefault((str(value[0]), value[1]), []).append(link)
            inputs.append({"name": name, "type": kind, "link": link})
        x, y = (positions or {}).get(nid, (40 + 360 * (order.index(nid) % 4), 40 + 320 * (order.index(nid) // 4)))
        entry = {"id": int(nid), "type": node["class_type"], "pos": [x, y], "size": [320, 90 + 26 * len(widgets)],
                 "flags": {}, "order": order.index(nid), "mode": 0, "inputs": inputs, "outputs": [],
                 "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets}
        title = (titles or {}).get(nid) or info.get("display_name")
        if title:
            entry["title"] = title
        nodes.append(entry)
    for entry in nodes:
        info = object_info[entry["type"]]
        for slot, (kind, name) in enumerate(zip(info["output"], info.get("output_name", info["output"]))):
            entry["outputs"].append({"name": name, "type": kind,
                                     "links": out_links.get((str(entry["id"]), slot)), "slot_index": slot})
    return {"last_node_id": max(int(n) for n in api), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """The API prompt a UI-format workflow queues, read back the way the front end does: links become
    [node, slot]; widget values are taken in schema order (a seed's "control after generate" choice skipped;
    a widget turned into a linked input keeps its slot; widgets past the saved values, added to the node after
    the workflow was saved, are left out, so the node's defaults apply). Refuses a link whose target is not the socket it is
    listed on and widget values left over, so a template that drifted from its schema fails by name."""
    links = {lk[0]: lk for lk in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
        values, inputs = list(node.get("widgets_values", [])), {}
        linked = {}
        for slot, socket in enumerate(node.get("inputs", [])):
            if socket.get("link") is not None:
                lk = links[socket["link"]]
                assert lk[3] == node["id"] and lk[4] == slot, f"node {node['id']}: link {lk[0]} is not slot {slot}"
                linked[socket["name"]] = [str(lk[1]), lk[2]]
        for name, kind, opts in _inputs(object_info[node["type"]]):
            if _is_widget(kind, opts) and name not in linked and not values:
                continue  # a widget added after the workflow was saved: the node's default applies
            if _is_widget(kind, opts) and (name not in linked or values):
                value = values.pop(0)
                if opts.get("control_after_generate"):
                    values.pop(0)
                if name not in linked:
                    inputs[name] = value
            if name in linked:
                inputs[name] = linked[name]
        assert not values, f"node {node['id']} ({node['type']}): widget values left over {values}"
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def main() -> None:
    url, names = sys.argv[1], sys.argv[2:]
    with urllib.request.urlopen(url.rstrip("/") + "/object_info", timeout=120) as r:
        info = json.load(r)
    for name in names:
        with open(os.path.join(API_WORKFLOW_DIR, f"{name}.json")) as f:
            api = json.load(f)
        with open(os.path.join(WORKFLOW_DIR, f"{name}.json"), "w") as f:
            json.dump(api_to_ui(api, info), f, indent=2)
            f.write("\n")
        print(os.path.join(WORKFLOW_DIR, f"{name}.json"))


if __name__ == "__main__":
    main()

"""Every example workflow is a UI-format template with an API-format twin, and an e2e test queues it.

The e2e tests check that each twin matches its UI file node by node; this keeps the set of files honest
without a server: a new template without a twin, or one that no test runs, fails here.
"""
import glob
import json
import os

from devkit.workflows import API_WORKFLOW_DIR, WORKFLOW_DIR

E2E_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e")


def _names(folder):
    return {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(folder, "*.json"))}


def test_every_template_has_an_api_twin_and_nothing_else_is_listed():
    ui, api = _names(WORKFLOW_DIR), _names(API_WORKFLOW_DIR)
    assert ui, "no example workflows"
    assert ui == api, f"UI without API twin: {sorted(ui - api)}; API without UI: {sorted(api - ui)}"


def test_templates_are_ui_format_and_twins_are_api_format():
    for name in _names(WORKFLOW_DIR):
        ui = json.load(open(os.path.join(WORKFLOW_DIR, f"{name}.json")))
        assert {"nodes", "links"} <= set(ui), name
        api = json.load(open(os.path.join(API_WORKFLOW_DIR, f"{name}.json")))
        assert all("class_type" in node and "inputs" in node for node in api.values()), name
        assert sorted(n["type"] for n in ui["nodes"]) == sorted(n["class_type"] for n in api.values()), name


def test_every_workflow_is_queued_by_an_e2e_test():
    sources = "\n".join(open(p).read() for p in glob.glob(os.path.join(E2E_DIR, "test_*.py")))
    missing = [n for n in sorted(_names(WORKFLOW_DIR)) if f'"{n}"' not in sources]
    assert not missing, f"example workflows that no e2e test names: {missing}"

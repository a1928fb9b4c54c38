// "Load merge recipe as workflow": puts the graph that produced a saved merge on the canvas.
//
// The recipe in a saved merge's metadata (or pasted JSON) is enough to rebuild it; the server compiles it to
// the pack's nodes (POST /elemental/recipe/graph, merge_core/recipes/recipe_graph.py) and the front end's own API-JSON
// loader lays it out. The menu entry lives under Extensions > Elemental Merge; the command can also be run
// from the command palette.
import { app } from "../../scripts/app.js";
import { callRoute } from "./elemental_common.js";

const COMMAND = "Elemental.LoadRecipeWorkflow";
const PASTE = "(paste a recipe below)";

function el(tag, attrs = {}, children = []) {
  const e = document.createElement(tag);
  Object.assign(e, attrs);
  for (const c of children) e.append(c);
  return e;
}

/** Loads the graph of a recipe ({file} or {recipe}) onto the canvas; rejects with the server's message. */
export async function loadRecipeGraph(body) {
  const { prompt, summary } = await callRoute("/recipe/graph", body);
  await app.loadApiJson(prompt, "merge recipe");
  return summary;
}

/** A small modal: a saved merge to read the recipe from, or pasted recipe JSON. */
async function openDialog() {
  const { files } = await callRoute("/recipe/files");
  const select = el("select", { className: "elemental-recipe-file" },
    [PASTE, ...files].map((f) => el("option", { value: f, textContent: f })));
  if (files.length) select.value = files[0];
  const text = el("textarea", { className: "elemental-recipe-text", rows: 8, cols: 70,
    placeholder: "recipe JSON (the elemental_merge_recipe entry of a saved merge's metadata)" });
  const message = el("div", { className: "elemental-recipe-message" });
  const load = el("button", { className: "elemental-recipe-load", textContent: "Load workflow" });
  const cancel = el("button", { textContent: "Cancel" });
  const box = el("div", { className: "elemental-recipe-dialog" }, [
    el("h3", { textContent: "Load merge recipe as workflow" }), select, text, message,
    el("div", {}, [load, cancel])]);
  Object.assign(box.style, { position: "fixed", top: "15%", left: "50%", transform: "translateX(-50%)",
    zIndex: 10000, background: "var(--comfy-menu-bg, #222)", color: "var(--fg-color, #ddd)", padding: "12px",
    border: "1px solid #666", borderRadius: "6px", display: "flex", flexDirection: "column", gap: "8px" });
  document.body.append(box);
  cancel.onclick = () => box.remove();
  load.onclick = async () => {
    const body = select.value === PASTE ? { recipe: text.value } : { file: select.value };
    message.textContent = "loading…";
    try {
      await loadRecipeGraph(body);
      box.remove();
    } catch (err) {
      message.textContent = String(err.message ?? err);  // every problem of the recipe, from the server
    }
  };
}

app.registerExtension({
  name: "elemental.merge.recipe",
  commands: [{ id: COMMAND, label: "Load merge recipe as workflow", menubarLabel: "Load merge recipe as workflow",
               function: openDialog }],
  menuCommands: [{ path: ["Extensions", "Elemental Merge"], commands: [COMMAND] }],
});

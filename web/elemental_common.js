// Shared by the Elemental Merge editors: the server routes (/elemental/...), cached per architecture, and
// how a node finds the architecture it is written for.
//
// Why the graph walk: a spec's meaning depends on the models it will be applied to (block names, element
// names, key counts), and in the graph those models are known from the loaders upstream of the merge node
// the spec feeds, not from the spec node itself. The loader's checkpoint is asked to the server
// (/elemental/detect reads only the safetensors header), so no model has to be loaded to edit a spec; for a
// model with no record the server derives its blocks from its keys as the merge will (IN, T00.., OUT), and
// the editors show those.
import { api } from "../../scripts/api.js";

export const PACK_NODES = new Set([
  "MergeCheckpointLoader", "ElementalSpec", "BlockWeights", "ElementalMerge", "SaveMergedCheckpoint",
  "ElementalXYPlot", "ElementalDiffChecker",
]);

export function isPackNode(nodeData) {
  return PACK_NODES.has(nodeData?.name) || String(nodeData?.python_module ?? "").includes("elemental");
}

/** JSON from a pack route; rejects with the route's own error message on a 4xx/5xx. */
export async function callRoute(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" },
  };
  const resp = await api.fetchApi("/elemental" + path, options);
  let data = null;
  try { data = await resp.json(); } catch { /* not JSON */ }
  if (!resp.ok) throw new Error(data?.error ?? `${path}: HTTP ${resp.status}`);
  return data;
}

const infoCache = new Map();
/** Blocks, elements per block and presets of an architecture (one request per architecture per page). */
export function archInfo(name) {
  if (!infoCache.has(name)) {
    const p = callRoute("/architectures/" + encodeURIComponent(name));
    p.catch(() => infoCache.delete(name));
    infoCache.set(name, p);
  }
  return infoCache.get(name);
}

const detectCache = new Map();
/** Forgets every file's answer: after a server restart a derived architecture's name is unknown there until
 * the file is asked again (the server derives and registers it when it answers /detect). */
export function forgetDetected() {
  detectCache.clear();
  infoCache.clear();
}

/** The architecture of a model file ({name, folder}: "checkpoints" or "diffusion_models"), from its header:
 * {arch, label, reason, blocks, derived}. For a model with no record, `arch` is the architecture derived from
 * its keys (`derived-…`, blocks IN, T00.., OUT), the one the merge will use. */
function detectCheckpoint(source) {
  const key = `${source.folder}/${source.name}`;
  if (!detectCache.has(key)) {
    const folder = source.folder === "checkpoints" ? "" : "&folder=" + encodeURIComponent(source.folder);
    const p = callRoute("/detect?ckpt_name=" + encodeURIComponent(source.name) + folder).catch(() => ({ arch: null }));
    detectCache.set(key, p);
  }
  return detectCache.get(key);
}

// Loader widgets that name a model file, and the ComfyUI folder each lists (Load Diffusion Model: Flux, SD3).
const MODEL_FILE_WIDGETS = [["ckpt_name", "checkpoints"], ["unet_name", "diffusion_models"]];

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

export function widget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

/** Calls `after(value)` whenever the widget's value is set (typing, loading a workflow, code). */
export function onWidgetChange(w, after) {
  if (!w) return;
  const previous = w.callback;
  w.callback = function (...args) {
    const r = previous?.apply(this, args);
    after(w.value);
    return r;
  };
}

function linkOf(graph, id) {
  if (id == null || !graph) return null;
  return graph.getLink?.(id) ?? graph.links?.get?.(id) ?? graph.links?.[id] ?? null;
}

/** Model files ({name, folder}) of the loaders that feed the MODEL inputs of `node`, walking up. */
function upstreamCheckpoints(node, depth = 0, seen = new Set()) {
  if (!node || depth > 12 || seen.has(node.id)) return [];
  seen.add(node.id);
  for (const [name, folder] of MODEL_FILE_WIDGETS) {
    const w = widget(node, name);
    if (w?.value) return [{ name: String(w.value), folder }];
  }
  const found = [];
  for (const [i, input] of (node.inputs ?? []).entries()) {
    if (input.link == null) continue;
    if (input.type !== "MODEL" && input.type !== "*" && node.type !== "Reroute") continue;
    found.push(...upstreamCheckpoints(node.getInputNode?.(i), depth + 1, seen));
  }
  return found;
}

/** Nodes that consume any output of `node`. */
function downstreamNodes(node) {
  const out = [];
  for (const output of node.outputs ?? []) {
    for (const id of output.links ?? []) {
      const link = linkOf(node.graph, id);
      const target = link && node.graph.getNodeById?.(link.target_id);
      if (target) out.push(target.type === "Reroute" ? downstreamNodes(target) : [target]);
    }
  }
  return out.flat();
}

/**
 * The architecture `node` is edited for: {arch, label, source, note}. Order: the checkpoint of a model
 * connected to the node or to the merge node it feeds (the models decide at merge time); then the node's
 * `architecture` widget; else "auto" (the server picks the first architecture the text is valid for).
 */
export async function resolveArchitecture(node) {
  const chosen = widget(node, "architecture")?.value;
  const ckpts = [...upstreamCheckpoints(node)];
  if (!ckpts.length) {
    for (const target of downstreamNodes(node)) ckpts.push(...upstreamCheckpoints(target));
  }
  for (const ckpt of ckpts) {
    const found = await detectCheckpoint(ckpt);
    if (found?.arch) {
      const note = chosen && chosen !== "auto" && chosen !== found.arch
        ? `the architecture widget says ${chosen} but the connected model is ${found.label}: the merge will refuse it`
        : "";
      return { arch: found.arch, label: found.label, source: `from ${ckpt.name}`, note,
        derived: Boolean(found.derived), detail: found.derived ? found.reason : "" };
    }
  }
  if (chosen && chosen !== "auto") return { arch: chosen, label: chosen, source: "from the architecture widget", note: "" };
  return { arch: "auto", label: "auto", source: "no model connected", note: "" };
}

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

/** Adds a DOM widget that is never saved in the workflow nor sent with the prompt. */
export function addPanelWidget(node, name, element, minHeight, maxHeight) {
  const w = node.addDOMWidget(name, "elemental_panel", element, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => minHeight,
    getMaxHeight: () => maxHeight,
  });
  w.serialize = false;
  // Keep pointer and wheel events for the panel (scrolling a key list must not zoom the canvas).
  element.addEventListener("wheel", (e) => e.stopPropagation());
  return w;
}

let cssLoaded = false;
export function loadCss() {
  if (cssLoaded) return;
  cssLoaded = true;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = new URL("./elemental.css", import.meta.url).href;
  document.head.append(link);
}

/** Grows a node that a saved workflow made too small for its widgets (never shrinks it). */
export function fitNode(node, minWidth = 0, minHeight = 0) {
  const min = node.computeSize?.();
  if (!min) return;
  const w = Math.max(node.size[0], min[0], minWidth);
  const h = Math.max(node.size[1], min[1], minHeight);
  if (w !== node.size[0] || h !== node.size[1]) node.setSize([w, h]);
  node.setDirtyCanvas?.(true, true);
}

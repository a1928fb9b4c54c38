// The block-weight editor of BlockWeights: one slider per block of the architecture and a preset menu,
// kept in sync with the node's `weights` text, which stays the value that is saved and queued.
//
// Text -> sliders goes through the server (/elemental/validate with kind "block_weights"), which parses
// presets, SD1 lists given for SDXL and missing BASE exactly as the merge will; sliders and presets ->
// text write one number per block, so what the sliders show is what the text says.
import {
  addPanelWidget, archInfo, fitNode, callRoute, debounce, el, forgetDetected, onWidgetChange, resolveArchitecture,
  widget,
} from "./elemental_common.js";

/** A weight as text: up to 10 significant digits, no trailing zeros ("0.9166666667", "1", "0.25"). */
export function formatWeight(v) {
  return String(parseFloat(Number(v).toPrecision(10)));
}

class WeightsEditor {
  constructor(node, textWidget) {
    this.node = node;
    this.textWidget = textWidget;
    this.weights = null;
    this.info = null;
    this.seq = 0;
    this.writing = false;
    this.presetSelect = el("select", { class: "elemental-preset", title: "preset", onchange: () => this.pickPreset() });
    this.archLabel = el("span", { class: "elemental-arch" });
    this.status = el("div", { class: "elemental-status" });
    this.sliders = el("div", { class: "elemental-sliders" });
    this.panel = el("div", { class: "elemental-panel elemental-weights-panel" },
      el("div", { class: "elemental-row" }, this.presetSelect, this.archLabel), this.sliders, this.status);
    this.panelWidget = addPanelWidget(node, "weights_editor", this.panel, 150, 220);
    this.schedule = debounce(() => this.refresh(), 250);
    onWidgetChange(textWidget, () => { if (!this.writing) this.schedule(); });
    onWidgetChange(widget(node, "architecture"), () => this.schedule());
    node.elementalWeightsEditor = this;
  }

  async refresh() {
    if (!this.node.graph) return;
    this.panel.dataset.node = this.node.id;
    const seq = ++this.seq;
    const arch = await resolveArchitecture(this.node);
    const text = String(this.textWidget.value ?? "");
    let result;
    try {
      result = await callRoute("/validate", { text, arch: arch.arch === "auto" ? (text.trim() ? "auto" : "sd1") : arch.arch,
        kind: "block_weights" });
    } catch (err) {
      if (seq === this.seq) this.status.textContent = `cannot check: ${err.message}`;
      if (/unknown architecture 'derived-/.test(err.message)) forgetDetected(); // the server restarted
      return;
    }
    const info = await archInfo(result.arch).catch(() => null);
    if (seq !== this.seq || !info) return;
    const archChanged = this.info?.name !== info.name;
    this.info = info;
    this.archLabel.textContent = `${info.label} ${arch.arch === "auto" ? "(auto)" : arch.source}`;
    this.archLabel.title = arch.detail || "";
    if (archChanged) this.buildSliders();
    if (!this.fitted) { this.fitted = true; fitNode(this.node, 360); }
    const errors = result.diagnostics.filter((d) => d.severity === "error");
    this.panel.dataset.state = errors.length ? "error" : "ok";
    this.panel.dataset.arch = info.name;
    this.panel.dataset.derived = arch.derived ? "true" : "false";
    this.status.replaceChildren(...errors.map((d) => el("div", {
      class: "elemental-diag error", dataset: { line: d.line, column: d.column }, text: d.text,
    })));
    if (!text.trim()) this.status.textContent = "empty: pick a preset or move a slider";
    if (result.weights) {
      this.weights = info.blocks.map((b) => result.weights[b]);
      this.showValues();
    }
    this.syncPresetSelect(text);
    this.node.setDirtyCanvas?.(true, true); // the text widget is drawn on the canvas
  }

  buildSliders() {
    const names = Object.keys(this.info.presets);
    this.presetSelect.replaceChildren(el("option", { value: "", text: names.length ? "preset…" : "no presets" }),
      ...names.map((n) => el("option", { value: n, text: n })));
    this.sliders.replaceChildren(...this.info.blocks.map((b, i) => {
      const input = el("input", {
        type: "range", min: "0", max: "1", step: "any", class: "elemental-slider", title: b,
        dataset: { block: b }, oninput: () => this.sliderMoved(i, input),
      });
      return el("label", { class: "elemental-slot" }, el("span", { class: "elemental-value" }), input,
        el("span", { class: "elemental-block", text: b.replace(/^(IN|OUT)0?(?=\d)/, (m, g) => g[0]) }));
    }));
    this.node.setDirtyCanvas?.(true, true);
  }

  showValues() {
    if (!this.weights) return;
    const lo = Math.min(0, ...this.weights);
    const hi = Math.max(1, ...this.weights);
    [...this.sliders.children].forEach((slot, i) => {
      const input = slot.querySelector("input");
      input.min = String(lo);
      input.max = String(hi);
      input.value = String(this.weights[i]);
      slot.querySelector(".elemental-value").textContent = formatWeight(Math.round(this.weights[i] * 100) / 100);
      slot.title = `${this.info.blocks[i]}: ${formatWeight(this.weights[i])}`;
    });
  }

  syncPresetSelect(text) {
    const names = Object.keys(this.info?.presets ?? {});
    const exact = names.find((n) => n.toUpperCase() === text.trim().toUpperCase());
    const same = names.find((n) => this.info.presets[n].map(formatWeight).join(",") === text.trim());
    this.presetSelect.value = exact ?? same ?? "";
  }

  writeText(values) {
    this.writing = true;
    try {
      this.textWidget.value = values.map(formatWeight).join(",");
    } finally {
      this.writing = false;
    }
    this.node.setDirtyCanvas?.(true, true);
  }

  sliderMoved(i, input) {
    if (!this.weights) this.weights = this.info.blocks.map(() => 0.5);
    this.weights[i] = Number(input.value);
    this.writeText(this.weights);
    this.showValues();
    this.presetSelect.value = "";
    this.status.textContent = `${this.info.blocks[i]} = ${formatWeight(this.weights[i])}`;
  }

  pickPreset() {
    const name = this.presetSelect.value;
    const values = this.info?.presets?.[name];
    if (!values) return;
    this.weights = [...values];
    this.writeText(values);
    this.showValues();
    this.presetSelect.value = name;
    this.status.textContent = `preset ${name}`;
    this.schedule();
  }
}

export function attachWeightsEditor(node, textWidget) {
  const editor = new WeightsEditor(node, textWidget);
  setTimeout(() => editor.refresh(), 0);
  return editor;
}

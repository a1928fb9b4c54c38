// The spec editor: live validation marked in the text, a per-entry key-count panel with key lists on demand,
// and completion of block and element names. Attached to every multiline spec input of the pack's nodes.
//
// The text stays ComfyUI's own textarea (so copy/paste, undo, workflow saving behave as everywhere); the
// marks are drawn on a backdrop behind it that mirrors its text, and the panel is a separate DOM widget.
// Validation and counts come from the server (/elemental/preview), so the editor can never disagree with
// what the merge will do.
import {
  addPanelWidget, archInfo, fitNode, callRoute, debounce, el, forgetDetected, onWidgetChange, resolveArchitecture,
  widget,
} from "./elemental_common.js";

const DEBOUNCE_MS = 300;
export const editors = new Set();

function escapeHtml(s) {
  return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
}

/** [start, end) of the token a diagnostic points at, on one line (0-based columns). */
function tokenSpan(lineText, column) {
  const start = Math.max(0, Math.min(column - 1, lineText.length));
  let end = start;
  while (end < lineText.length && !/[\s,:#]/.test(lineText[end])) end++;
  if (end === start) end = Math.min(lineText.length, start + 1);
  return [start, end];
}

/** HTML of `text` with every diagnostic's token wrapped in a mark, and a caret marker at `caret`. */
function markedHtml(text, diagnostics, caret) {
  const lines = text.split("\n");
  const byLine = new Map();
  for (const d of diagnostics) {
    if (!byLine.has(d.line)) byLine.set(d.line, []);
    byLine.get(d.line).push(d);
  }
  let offset = 0;
  const out = [];
  lines.forEach((line, i) => {
    const marks = (byLine.get(i + 1) ?? []).map((d) => ({ d, span: tokenSpan(line, d.column) }))
      .sort((a, b) => a.span[0] - b.span[0]);
    let html = "";
    let pos = 0;
    const caretCol = caret >= offset && caret <= offset + line.length ? caret - offset : -1;
    const piece = (from, to) => {
      if (caretCol >= from && caretCol < to) {
        return escapeHtml(line.slice(from, caretCol)) + '<span class="elemental-caret"></span>' +
          escapeHtml(line.slice(caretCol, to));
      }
      return escapeHtml(line.slice(from, to));
    };
    for (const { d, span } of marks) {
      if (span[0] < pos) continue; // overlapping marks: the first one wins
      html += piece(pos, span[0]);
      html += `<mark class="elemental-mark ${d.severity}" data-line="${d.line}" data-column="${d.column}"` +
        ` title="${escapeHtml(d.text)}">${piece(span[0], span[1])}</mark>`;
      pos = span[1];
    }
    html += piece(pos, line.length);
    if (caretCol === line.length) html += '<span class="elemental-caret"></span>';
    out.push(html);
    offset += line.length + 1;
  });
  return out.join("\n") + "\n";
}

class SpecEditor {
  constructor(node, textWidget) {
    this.node = node;
    this.textWidget = textWidget;
    this.textarea = textWidget.inputEl ?? textWidget.element;
    this.seq = 0;
    this.lastKey = null;
    this.result = null;
    this.arch = null;
    this.info = null;
    this.openEntry = null;
    this.buildPanel();
    this.schedule = debounce(() => this.refresh(), DEBOUNCE_MS);
    onWidgetChange(textWidget, () => this.schedule());
    onWidgetChange(widget(node, "architecture"), () => this.schedule());
    this.textarea?.addEventListener("input", () => this.schedule());
    this.textarea?.addEventListener("scroll", () => this.syncScroll());
    this.textarea?.addEventListener("keydown", (e) => this.onKeyDown(e), true);
    this.textarea?.addEventListener("input", () => this.complete(false));
    this.textarea?.addEventListener("blur", () => setTimeout(() => this.closeCompletion(), 150));
    this.textarea?.addEventListener("click", () => this.closeCompletion());
    node.elementalSpecEditor = this;
    editors.add(this);
  }

  // ---- panel ------------------------------------------------------------------------------------------
  buildPanel() {
    this.status = el("div", { class: "elemental-status", text: "checking…" });
    this.diagList = el("div", { class: "elemental-diags" });
    this.entryList = el("div", { class: "elemental-entries" });
    this.panel = el("div", { class: "elemental-panel elemental-spec-panel" }, this.status, this.diagList, this.entryList);
    this.panelWidget = addPanelWidget(this.node, `${this.textWidget.name}_check`, this.panel, 70, 320);
  }

  /** The backdrop that mirrors the textarea's text behind it, so marks line up with the typed text. */
  ensureBackdrop() {
    const ta = this.textarea;
    if (!ta?.parentElement) return null;
    if (this.backdrop?.parentElement === ta.parentElement) return this.backdrop;
    this.backdrop?.remove();
    this.backdrop = el("div", { class: "elemental-backdrop", "aria-hidden": "true" });
    ta.parentElement.insertBefore(this.backdrop, ta);
    ta.classList.add("elemental-marked-input");
    return this.backdrop;
  }

  syncBackdropStyle() {
    const ta = this.textarea;
    const bd = this.backdrop;
    if (!ta || !bd) return;
    const cs = getComputedStyle(ta);
    for (const p of ["fontFamily", "fontSize", "fontWeight", "lineHeight", "letterSpacing", "paddingTop",
      "paddingRight", "paddingBottom", "paddingLeft", "borderTopWidth", "borderRightWidth",
      "borderBottomWidth", "borderLeftWidth", "borderRadius", "tabSize", "boxSizing", "textIndent"]) {
      bd.style[p] = cs[p];
    }
    bd.style.left = ta.offsetLeft + "px";
    bd.style.top = ta.offsetTop + "px";
    bd.style.width = ta.offsetWidth + "px";
    bd.style.height = ta.offsetHeight + "px";
    bd.style.backgroundColor = cs.backgroundColor === "rgba(0, 0, 0, 0)" ? "" : cs.backgroundColor;
  }

  syncScroll() {
    if (this.backdrop && this.textarea) {
      this.backdrop.scrollTop = this.textarea.scrollTop;
      this.backdrop.scrollLeft = this.textarea.scrollLeft;
    }
  }

  renderMarks(caret = -1) {
    const bd = this.ensureBackdrop();
    if (!bd) return;
    this.syncBackdropStyle();
    bd.innerHTML = markedHtml(this.textarea.value, this.result?.diagnostics ?? [], caret);
    this.syncScroll();
  }

  text() {
    return String(this.textWidget.value ?? "");
  }

  async refresh(force = false) {
    if (!this.node.graph) return;
    // Stable hooks for people's CSS and for the browser tests.
    this.panel.dataset.node = this.node.id;
    if (this.textarea) this.textarea.dataset.elementalSpec = this.node.id;
    const arch = await resolveArchitecture(this.node);
    const text = this.text();
    const key = JSON.stringify([text, arch.arch]);
    this.arch = arch;
    if (!force && key === this.lastKey) {
      this.renderMarks();
      return;
    }
    this.lastKey = key;
    const seq = ++this.seq;
    this.panel.dataset.state = "checking";
    let result;
    try {
      result = await callRoute("/preview", { spec: text, arch: arch.arch });
    } catch (err) {
      if (seq !== this.seq) return;
      this.result = null;
      this.lastKey = null; // try again on the next check
      if (/unknown architecture 'derived-/.test(err.message)) forgetDetected(); // the server restarted
      this.status.textContent = `cannot check: ${err.message}`;
      this.panel.dataset.state = "failed";
      return;
    }
    if (seq !== this.seq) return; // a newer edit is on its way
    this.result = result;
    this.checkedText = text;
    this.info = await archInfo(result.arch).catch(() => null);
    this.render();
    if (!this.fitted) { this.fitted = true; fitNode(this.node, 360, 250); }
  }

  render() {
    const r = this.result;
    const a = this.arch;
    const errors = r.diagnostics.filter((d) => d.severity === "error").length;
    const warnings = r.diagnostics.length - errors;
    const archText = a.arch === "auto" ? `${r.label} (auto: first architecture the text fits)` : `${r.label} ${a.source}`;
    const counts = errors ? `${errors} error${errors > 1 ? "s" : ""}` : `${r.entries.length} entr${r.entries.length === 1 ? "y" : "ies"}`;
    this.status.textContent = `${archText} · ${counts}` + (warnings ? ` · ${warnings} warning${warnings > 1 ? "s" : ""}` : "");
    this.status.title = a.note || "";
    if (a.detail) this.status.append(el("div", { class: "elemental-derived", text: a.detail }));
    if (a.note) this.status.append(el("div", { class: "elemental-note", text: a.note }));
    Object.assign(this.panel.dataset, {
      state: errors ? "error" : "ok", arch: r.arch, errors, warnings, checked: this.checkedText,
      derived: a.derived ? "true" : "false",
    });

    const lines = this.text().split("\n");
    this.diagList.replaceChildren(...r.diagnostics.map((d) => {
      const line = lines[d.line - 1] ?? "";
      const [s, e] = tokenSpan(line, d.column);
      const excerpt = el("code", { class: "elemental-excerpt" }, line.slice(0, s),
        el("span", { class: `elemental-excerpt-mark ${d.severity}`, text: line.slice(s, e) || " " }), line.slice(e));
      return el("div", {
        class: `elemental-diag ${d.severity}`,
        dataset: { line: d.line, column: d.column, severity: d.severity },
        title: "click to select it in the text",
        onclick: () => this.select(d.line, d.column),
      }, el("span", { class: "elemental-loc", text: `${d.line}:${d.column}` }),
      el("span", { class: "elemental-msg", text: d.message + (d.hint ? ` (${d.hint})` : "") }), excerpt);
    }));

    this.entryList.replaceChildren(...r.entries.map((entry) => this.entryRow(entry)));
    if (!r.entries.length && !errors) {
      this.entryList.append(el("div", { class: "elemental-empty", text: "no entries: every key merges at alpha" }));
    }
    this.renderMarks();
  }

  entryRow(entry) {
    const keysBox = el("div", { class: "elemental-keys", hidden: "" });
    const button = el("button", {
      class: "elemental-keys-button", text: "keys",
      onclick: (ev) => { ev.stopPropagation(); this.toggleKeys(entry, keysBox); },
    });
    const blocks = Object.entries(entry.blocks).map(([b, n]) => `${b} ${n}`).join(", ");
    return el("div", {
      class: "elemental-entry" + (entry.count ? "" : " empty"),
      dataset: { index: entry.index, line: entry.line, count: entry.count, effective: entry.effective },
      title: blocks,
    }, el("span", { class: "elemental-loc", text: `L${entry.line}` }),
    el("code", { class: "elemental-source", text: entry.source }),
    el("span", { class: "elemental-count", text: `${entry.count} key${entry.count === 1 ? "" : "s"}` +
      (entry.effective !== entry.count ? ` (${entry.effective} final)` : "") }),
    button, keysBox);
  }

  async toggleKeys(entry, box) {
    if (!box.hidden) { box.hidden = true; return; }
    box.hidden = false;
    box.textContent = "loading…";
    try {
      const r = await callRoute("/preview", {
        spec: this.text(), arch: this.result.arch, include_keys: true, entry: entry.index,
      });
      const e = r.entries[entry.index];
      box.replaceChildren(...Object.entries(e.keys ?? {}).map(([block, keys]) => el("details", { open: "" },
        el("summary", { text: `${block} (${keys.length})` }),
        ...keys.map((k) => el("div", { class: "elemental-key", text: `${k.key} → ${k.ratio}` })))));
    } catch (err) {
      box.textContent = err.message;
    }
  }

  select(line, column) {
    const ta = this.textarea;
    if (!ta) return;
    const lines = ta.value.split("\n");
    let pos = 0;
    for (let i = 0; i < line - 1 && i < lines.length; i++) pos += lines[i].length + 1;
    const [s, e] = tokenSpan(lines[line - 1] ?? "", column);
    ta.focus();
    ta.setSelectionRange(pos + s, pos + e);
  }

  // ---- completion ---------------------------------------------------------------------------------------
  /** What is being typed at the caret: {field: "blocks"|"elements"|"ratio", token, start, blocks}. */
  context() {
    const ta = this.textarea;
    const caret = ta.selectionStart;
    const before = ta.value.slice(0, caret);
    const lineStart = before.lastIndexOf("\n") + 1;
    const line = before.slice(lineStart);
    if (line.includes("#")) return null;
    const entryStart = line.lastIndexOf(",") + 1;
    const entry = line.slice(entryStart);
    const fields = entry.split(":");
    const field = ["blocks", "elements", "ratio"][fields.length - 1] ?? "ratio";
    let token = /[^\s:,]*$/.exec(entry)[0];
    if (field === "blocks" && token.includes("-")) token = token.slice(token.lastIndexOf("-") + 1);
    return { field, token, start: caret - token.length, end: caret, blocks: fields.length > 1 ? fields[0] : "" };
  }

  candidates(ctx) {
    if (!this.info || !ctx) return [];
    const t = ctx.token;
    if (ctx.field === "blocks") {
      const up = t.toUpperCase();
      return ["NOT", ...this.info.blocks].filter((b) => b.startsWith(up) && b !== up).slice(0, 40);
    }
    if (ctx.field === "elements") {
      if (!t) return [];
      let pool = this.info.element_names;
      const named = ctx.blocks.toUpperCase().split(/\s+/).filter((b) => this.info.elements[b]);
      if (named.length && !/^\s*NOT\b/i.test(ctx.blocks)) pool = [...new Set(named.flatMap((b) => this.info.elements[b]))];
      const starts = pool.filter((e) => e.startsWith(t) && e !== t);
      const inside = pool.filter((e) => !e.startsWith(t) && e.includes(t));
      return [...starts, ...inside].slice(0, 40);
    }
    return [];
  }

  complete(force) {
    if (!this.textarea) return;
    const ctx = this.context();
    const items = ctx && (force || ctx.token.length > 0) ? this.candidates(ctx) : [];
    if (!items.length) { this.closeCompletion(); return; }
    this.completion = { ctx, items, index: 0 };
    this.renderCompletion();
  }

  renderCompletion() {
    const { items, index } = this.completion;
    if (!this.popup) {
      this.popup = el("div", { class: "elemental-complete", role: "listbox" });
      document.body.append(this.popup);
    }
    this.popup.replaceChildren(...items.map((item, i) => el("div", {
      class: "elemental-complete-item" + (i === index ? " active" : ""), text: item, dataset: { value: item },
      onmousedown: (e) => { e.preventDefault(); this.completion.index = i; this.accept(); },
    })));
    this.renderMarks(this.textarea.selectionStart);
    const caret = this.backdrop?.querySelector(".elemental-caret");
    const r = (caret ?? this.textarea).getBoundingClientRect();
    const lineHeight = parseFloat(getComputedStyle(this.textarea).lineHeight) || 16;
    this.popup.style.left = `${Math.round(r.left)}px`;
    this.popup.style.top = `${Math.round((caret ? r.top + lineHeight : r.bottom))}px`;
    this.popup.hidden = false;
  }

  closeCompletion() {
    this.completion = null;
    if (this.popup) this.popup.hidden = true;
  }

  accept() {
    const { ctx, items, index } = this.completion;
    const ta = this.textarea;
    const value = items[index];
    ta.value = ta.value.slice(0, ctx.start) + value + ta.value.slice(ctx.end);
    const caret = ctx.start + value.length;
    ta.setSelectionRange(caret, caret);
    this.closeCompletion();
    ta.dispatchEvent(new Event("input", { bubbles: true }));
    this.closeCompletion();
  }

  onKeyDown(e) {
    if (e.key === " " && e.ctrlKey) { e.preventDefault(); this.complete(true); return; }
    if (!this.completion || this.popup?.hidden) return;
    const n = this.completion.items.length;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      this.completion.index = (this.completion.index + (e.key === "ArrowDown" ? 1 : n - 1)) % n;
      this.renderCompletion();
    } else if (e.key === "Enter" || e.key === "Tab") {
      this.accept();
    } else if (e.key === "Escape") {
      this.closeCompletion();
    } else {
      return;
    }
    e.preventDefault();
    e.stopPropagation();
  }

  dispose() {
    editors.delete(this);
    this.popup?.remove();
    this.backdrop?.remove();
  }
}

export function attachSpecEditor(node, textWidget) {
  const editor = new SpecEditor(node, textWidget);
  const removed = node.onRemoved;
  node.onRemoved = function (...args) {
    editor.dispose();
    return removed?.apply(this, args);
  };
  setTimeout(() => editor.refresh(), 0);
  return editor;
}

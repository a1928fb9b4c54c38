// What a pack node reports after it runs (ElementalMerge's change report with print_change, the XY plot and
// diff checker summaries, the saved file name): shown read-only on the node, since the log is out of sight.
import { addPanelWidget, el } from "./elemental_common.js";

export function showReport(node, lines) {
  const text = (Array.isArray(lines) ? lines : [lines]).join("\n");
  if (!node.elementalReport) {
    const area = el("textarea", { class: "elemental-report", readonly: "", spellcheck: "false" });
    area.addEventListener("keydown", (e) => e.stopPropagation());
    const w = addPanelWidget(node, "elemental_report", el("div", { class: "elemental-panel elemental-report-panel" }, area),
      120, 420);
    node.elementalReport = { area, widget: w };
    const size = node.computeSize?.();
    if (size) node.setSize?.([Math.max(node.size[0], size[0]), Math.max(node.size[1], size[1])]);
  }
  node.elementalReport.area.value = text;
  node.elementalReport.area.title = `${text.split("\n").length} lines`;
  node.setDirtyCanvas?.(true, true);
}

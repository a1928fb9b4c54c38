// Elemental Merge web extension: the spec editor (live validation, matched keys, completion) on every
// multiline spec input of the pack's nodes, the block-weight editor on BlockWeights, the text a node reports
// after execution (change report, XY and diff summaries) shown on the node, and periodic re-checks so that
// connecting another checkpoint re-validates the specs against its architecture.
import { app } from "../../scripts/app.js";
import { isPackNode, loadCss, widget } from "./elemental_common.js";
import { attachSpecEditor, editors } from "./elemental_spec_editor.js";
import { attachWeightsEditor } from "./elemental_weights_editor.js";
import { showReport } from "./elemental_report.js";

const SPEC_INPUT = /spec/i;
const RECHECK_MS = 1500;

/** Names of the multiline STRING inputs of a node definition that hold elemental specs. */
function specInputs(nodeData) {
  const inputs = { ...(nodeData.input?.required ?? {}), ...(nodeData.input?.optional ?? {}) };
  return Object.entries(inputs)
    .filter(([name, spec]) => spec?.[0] === "STRING" && spec?.[1]?.multiline && SPEC_INPUT.test(name))
    .map(([name]) => name);
}

app.registerExtension({
  name: "elemental.merge.editors",

  setup() {
    loadCss();
    // A connection or a loader's checkpoint may have changed: re-resolve the architecture. A refresh whose
    // text and architecture are unchanged sends no request.
    setInterval(() => { for (const e of editors) if (e.node.graph) e.refresh(); }, RECHECK_MS);
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!isPackNode(nodeData)) return;
    const specs = specInputs(nodeData);
    const isWeights = nodeData.name === "BlockWeights";
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function (...args) {
      const r = created?.apply(this, args);
      for (const name of specs) {
        const w = widget(this, name);
        if (w) attachSpecEditor(this, w);
      }
      if (isWeights) {
        const w = widget(this, "weights");
        if (w) attachWeightsEditor(this, w);
      }
      return r;
    };
    const executed = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const r = executed?.apply(this, arguments);
      if (message?.text?.length) showReport(this, message.text);
      return r;
    };
  },
});

"""The HTML report of an inspection: one self-contained file (no network needed to open it).

The text coloured by surprisal, each character's alternatives on hover or click, a layer and a cell
to colour the text by its activation (with the cell's trace under the text), the cells that follow
each feature of `keras_chargen.cell_features` most closely (click one to show it), and the gate
saturation plots of Karpathy et al. (for every gate and cell: the fraction of positions where it is
below 0.1 against the fraction above 0.9).
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

import numpy as np

from keras_chargen.inspect_view import LEGEND_HTML, VIEW_CSS, VIEW_JS
from keras_chargen.inspection import Inspection


def activation_payload(inspection: Inspection) -> dict[str, Any]:
    """The shown positions' `h` (and `c`) as int8 per cell, scaled by each cell's largest |value|:
    `{"scales": [layer][kind][unit], "int8": base64 of (layer, kind, unit, position) bytes}`."""
    states = len(inspection.state_kinds)
    values = inspection.activations[:, :, :states, :].astype(np.float64)  # (n, layers, kinds, units)
    scales = np.maximum(np.abs(values).max(axis=0) if len(values) else np.zeros(values.shape[1:]), 1e-6)
    quantized = np.round(values / scales * 127).astype(np.int8)
    ordered = np.ascontiguousarray(np.transpose(quantized, (1, 2, 3, 0)))  # a cell's series is contiguous
    return {
        "scales": np.round(scales, 6).tolist(),
        "int8": base64.b64encode(ordered.tobytes()).decode("ascii"),
    }


def report_data(inspection: Inspection, title: str) -> dict[str, Any]:
    """Everything the page shows, as JSON."""
    summary = inspection.to_json()
    positions = summary.pop("positions")
    return {
        "title": title,
        "summary": summary,
        "tokens": inspection.tokens,
        "prob": [p["prob"] for p in positions],
        "top": [p["top"] for p in positions],
        "state_kinds": list(inspection.state_kinds),
        "activations": activation_payload(inspection),
    }


def render_html(inspection: Inspection, title: str = "inspection") -> str:
    """The report as one HTML string (inline CSS, JavaScript and data)."""
    data = json.dumps(report_data(inspection, title), ensure_ascii=False, allow_nan=False)
    data = data.replace("</", "<\\/")  # cannot close the <script> element early
    return (
        _PAGE.replace("__TITLE__", html.escape(title))
        .replace("__VIEW_CSS__", VIEW_CSS)
        .replace("__LEGEND__", LEGEND_HTML)
        .replace("__VIEW_JS__", VIEW_JS)
        .replace("__DATA__", data)
    )


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>keras-chargen inspect: __TITLE__</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 64rem; margin: 1.5rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.3rem; margin-bottom: .2rem; }
  h2 { font-size: 1.05rem; margin: 1.2rem 0 .4rem; }
  .meta { color: #555; font-size: .9rem; }
  .controls { display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; margin: .6rem 0; font-size: .9rem; }
  .controls input[type=number] { width: 5rem; }
  table.cells { border-collapse: collapse; font-size: .9rem; }
  table.cells td, table.cells th { padding: .15rem .6rem; border-bottom: 1px solid #eee; text-align: left; }
  table.cells tr.pick { cursor: pointer; }
  table.cells tr.pick:hover { background: #f0f4ff; }
  table.cells tr.chosen { background: #dde7ff; }
  #text { max-height: 24rem; overflow-y: auto; }
  #trace { width: 100%; height: 90px; display: block; }
  .plots { display: flex; gap: 1rem; flex-wrap: wrap; }
  .plots figure { margin: 0; font-size: .8rem; text-align: center; }
__VIEW_CSS__
</style>
</head>
<body>
<h1>keras-chargen inspect: __TITLE__</h1>
<div class="meta" id="summary"></div>
<div class="controls">
  <label><input type="radio" name="colour" value="surprisal" checked> colour by surprisal</label>
  <label><input type="radio" name="colour" value="cell"> colour by cell:</label>
  <label>layer <select id="layer"></select></label>
  <label><select id="kind"></select></label>
  <label>cell <input id="cell" type="number" min="0" value="0"></label>
  <span id="cell-info" class="meta"></span>
</div>
<div id="legend">__LEGEND__</div>
<div id="text" class="iv-text"></div>
<svg id="trace" viewBox="0 0 1000 90" preserveAspectRatio="none" aria-label="the chosen cell along the text"></svg>
<h2>Cells that follow a feature of the text</h2>
<div class="meta">Pearson correlation of each feature with each cell's activation over all
<span id="npos"></span> positions (click a row to colour the text by that cell).</div>
<table class="cells" id="cells"><thead><tr><th>feature</th><th>layer</th><th>state</th><th>cell</th>
<th>correlation</th></tr></thead><tbody></tbody></table>
<div class="meta" id="constant"></div>
<h2 id="saturation-title">Gate saturation</h2>
<div class="meta" id="saturation-note">Each dot is one cell: the fraction of positions where its gate is below 0.1
(left-saturated, x) and above 0.9 (right-saturated, y), as in Karpathy, Johnson &amp; Fei-Fei (2015).</div>
<div class="plots" id="plots"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
__VIEW_JS__
</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const $ = (id) => document.getElementById(id);
const s = data.summary, n = data.tokens.length;
const raw = Uint8Array.from(atob(data.activations.int8), (c) => c.charCodeAt(0));
const int8 = new Int8Array(raw.buffer);
const kinds = data.state_kinds, units = s.units;
const unit = s.level === "word" ? "word" : "char";

$("summary").textContent = `${s.positions_total.toLocaleString()} ${unit}s, ` +
  `${s.bits_per_char.toFixed(4)} bits/${unit} over the ${s.positions_scored.toLocaleString()} predicted ones; ` +
  `${s.layers} layer(s) of ${units} cells` +
  (s.positions_shown < s.positions_total ? `; the first ${s.positions_shown.toLocaleString()} positions shown` : "");
$("npos").textContent = s.positions_total.toLocaleString();

function series(layer, kind, cell) {
  const start = ((layer * kinds.length + kind) * units + cell) * n;
  const scale = data.activations.scales[layer][kind][cell];
  return Array.from(int8.subarray(start, start + n), (q) => (q / 127) * scale);
}

for (let i = 0; i < s.layers; i++) $("layer").add(new Option(`${i}`, i));
kinds.forEach((k, i) => $("kind").add(new Option(k === "c" ? "c (cell state)" : "h (output)", i)));
$("cell").max = units - 1;

const view = { tokens: data.tokens, prob: data.prob, top: data.top };
const chosen = () => ({ layer: Number($("layer").value), kind: Number($("kind").value),
                        cell: Math.max(0, Math.min(units - 1, Number($("cell").value) || 0)) });
const byCell = () => document.querySelector("input[name=colour]:checked").value === "cell";
let values = null;

function draw() {
  const c = chosen();
  values = series(c.layer, c.kind, c.cell);
  const colours = byCell() ? InspectView.activationColours(values) : InspectView.surprisalColours(view.prob);
  InspectView.render($("text"), view, colours);
  $("legend").style.visibility = byCell() ? "hidden" : "visible";
  const r = (s.candidates.find((m) => m.layer === c.layer && m.kind === kinds[c.kind] && m.cell === c.cell) || {});
  $("cell-info").textContent = `layer ${c.layer} ${kinds[c.kind]}[${c.cell}]` +
    (r.feature ? `: follows ${r.feature} (r = ${r.correlation.toFixed(3)})` : "");
  drawTrace(values);
  const same = (row) => Number(row.dataset.layer) === c.layer && row.dataset.kind === kinds[c.kind] &&
    Number(row.dataset.cell) === c.cell;
  document.querySelectorAll("#cells tr.pick").forEach((row) => row.classList.toggle("chosen", same(row)));
}

function drawTrace(v) {
  const top = Math.max(1e-6, ...v.map(Math.abs));
  const points = v.map((x, i) => `${(i / Math.max(1, n - 1)) * 1000},${45 - (x / top) * 40}`).join(" ");
  $("trace").innerHTML = `<line x1="0" y1="45" x2="1000" y2="45" stroke="#bbb" stroke-width="1"/>` +
    `<polyline fill="none" stroke="#c03030" stroke-width="1.2" vector-effect="non-scaling-stroke" points="${points}"/>`;
}

const cellLine = (i) => `${kinds[chosen().kind]}[${chosen().cell}] = ${values[i].toFixed(3)}`;
InspectView.tooltip($("text"), () => view, cellLine);
for (const id of ["layer", "kind", "cell"]) $(id).addEventListener("input", draw);
document.querySelectorAll("input[name=colour]").forEach((r) => r.addEventListener("change", draw));

const body = $("cells").querySelector("tbody");
for (const m of s.candidates) {
  const row = body.insertRow();
  row.className = "pick";
  Object.assign(row.dataset, { layer: m.layer, kind: m.kind, cell: m.cell });
  for (const text of [m.feature, m.layer, m.kind, m.cell, m.correlation.toFixed(3)]) {
    row.insertCell().textContent = text;
  }
  row.addEventListener("click", () => {
    $("layer").value = m.layer; $("kind").value = kinds.indexOf(m.kind); $("cell").value = m.cell;
    document.querySelector("input[name=colour][value=cell]").checked = true;
    draw();
  });
}
if (s.constant_features.length) {
  $("constant").textContent = `Not in this text (constant): ${s.constant_features.join(", ")}.`;
}

const gates = Object.keys(s.saturation);
if (!gates.length) { $("saturation-title").remove(); $("saturation-note").remove(); }
const gateNames = { i: "input gate", f: "forget gate", o: "output gate", z: "update gate", r: "reset gate" };
for (let layer = 0; layer < s.layers; layer++) {
  for (const gate of gates) {
    const size = 170, pad = 22;
    let dots = "";
    for (const [left, right] of s.saturation[gate][layer]) {
      const x = pad + left * (size - pad), y = size - pad - right * (size - pad);
      dots += `<circle cx="${x}" cy="${y}" r="2.2" fill="#4a7bd0" fill-opacity=".6"/>`;
    }
    const svg = `<svg width="${size}" height="${size}" viewBox="0 0 ${size} ${size}">` +
      `<rect x="${pad}" y="0" width="${size - pad}" height="${size - pad}" fill="none" stroke="#999"/>` +
      `<line x1="${pad}" y1="${size - pad}" x2="${size}" y2="0" stroke="#ddd"/>` +
      `<text x="${pad}" y="${size - 6}" font-size="10">0</text>` +
      `<text x="${size - 8}" y="${size - 6}" font-size="10">1</text>` +
      `<text x="2" y="10" font-size="10">1</text>${dots}</svg>`;
    const figure = document.createElement("figure");
    figure.innerHTML = `${svg}<figcaption>layer ${layer} ${gateNames[gate] || gate}</figcaption>`;
    $("plots").appendChild(figure);
  }
}

if (s.cells.length) {  // start on the surprisal view, with the best-correlated cell chosen
  const best = s.cells.reduce((a, b) => (Math.abs(b.correlation) > Math.abs(a.correlation) ? b : a));
  $("layer").value = best.layer; $("kind").value = kinds.indexOf(best.kind); $("cell").value = best.cell;
}
draw();
</script>
</body>
</html>
"""

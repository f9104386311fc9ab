"""The playground page served at `GET /`: one self-contained HTML file, no external assets.

It posts to the `:stream` extension and shows the text as the server-sent events arrive; for a
model version without the `step` signature it falls back to one `:predict` call. When the version has a
web export (`BASE/web/<version>/`, `keras_chargen.serving.web_files`), "in this browser" runs the same
request in the page instead (its `chargen.js` on onnxruntime-web, served at `/web/<version>/`): the same
settings and seed give the same text. Every sampling
setting of `keras_chargen.settings` has a control. The inspect view colours the text by the
model's confidence or by a chosen cell (the `inspect` signature), and "sampling explained" draws the
next-character distribution at the cursor before and after each setting (the `explain_sampling`
signature); both are plain `:predict` calls, so the server runs no model code for them.
"""

from __future__ import annotations

import html
import json

from keras_chargen import contract
from keras_chargen.inspect_view import LEGEND_HTML, VIEW_CSS, VIEW_JS
from keras_chargen.serving.config import ServingConfig
from keras_chargen.settings import BY_NAME

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>keras-chargen playground: __TITLE__</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.3rem; margin-bottom: .2rem; }
  .meta { color: #666; font-size: .9rem; margin-bottom: 1rem; }
  label { display: block; margin: .6rem 0 .2rem; font-weight: 600; }
  textarea { width: 100%; height: 5rem; font-family: ui-monospace, monospace; font-size: .95rem; }
  .row { display: flex; gap: 1.5rem; align-items: end; flex-wrap: wrap; }
  input[type=number] { width: 7rem; }
  button { font-size: 1rem; padding: .4rem 1.2rem; margin-top: .8rem; }
  pre#output { white-space: pre-wrap; background: #f6f6f4; border: 1px solid #ddd; padding: .8rem;
               min-height: 8rem; font-size: .95rem; }
  #status { color: #555; margin-left: 1rem; }
  #status.error { color: #b00020; }
  h2 { font-size: 1.05rem; margin: 1.4rem 0 .3rem; }
  .note { color: #666; font-size: .85rem; }
  .error { color: #b00020; }
  #sampling input[type=text] { width: 7rem; }
  #inspect-controls { display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; font-size: .9rem; }
  #inspect-controls input[type=number] { width: 5rem; }
  #inspect-controls label { display: inline; margin: 0; font-weight: normal; }
  #explain-chart { width: 100%; display: block; }
  #where label { display: inline; font-weight: normal; margin: 0 .8rem 0 0; }
__VIEW_CSS__
</style>
</head>
<body>
<h1>keras-chargen playground</h1>
<div class="meta">model <b id="model-name"></b>, version <span id="model-version"></span>;
streams <code>POST /v1/models/NAME:stream</code> (server-sent events)</div>
<label for="prompt">Prompt</label>
<textarea id="prompt" placeholder="ROMEO:"></textarea>
<div class="row">
  <div><label for="temperature">Temperature <span id="temperature-value"></span></label>
    <input id="temperature" type="range" min="0" max="2" step="0.05" value="0.8"></div>
  <div><label for="length">Length (characters)</label><input id="length" type="number" min="1" value="200"></div>
  <div><label for="seed">Seed (blank: random)</label><input id="seed" type="number" min="0"></div>
</div>
<div class="row" id="sampling"></div>
<div id="where" hidden>Run:
  <label><input type="radio" name="where" value="server" checked> on the server</label>
  <label><input type="radio" name="where" value="browser"> in this browser</label>
  <span class="note">(this version has a web export: the model runs in the page, with the same settings)</span></div>
<button id="generate">Generate</button><button id="stop" disabled>Stop</button><span id="status"></span>
<label for="output">Output</label>
<pre id="output"></pre>
<section id="inspect-panel">
<h2>Inspect</h2>
<div class="note">The text above (or the prompt), coloured by how sure the model was of each character, or
by one cell's activation; hover or click a character for the alternatives the model expected there.</div>
<div id="inspect-controls">
  <button id="inspect">Inspect</button>
  <label><input type="radio" name="inspect-colour" value="confidence" checked> confidence</label>
  <label><input type="radio" name="inspect-colour" value="cell"> cell:</label>
  <label>layer <select id="inspect-layer"><option value="0">0</option></select></label>
  <label><select id="inspect-kind"><option value="0">h</option></select></label>
  <label>cell <input id="inspect-cell" type="number" min="0" value="0"></label>
  <span id="inspect-status" class="note"></span>
</div>
<div id="inspect-legend">__LEGEND__</div>
<div id="inspected" class="iv-text"></div>
</section>
<section id="explain-panel">
<h2>Sampling explained</h2>
<div class="note">The next character after the cursor in the prompt (or before the character you click in the
inspected text): as the model gives it, then after each setting, in the order generation applies them.</div>
<div id="explain-status" class="note"></div>
<svg id="explain-chart" role="img" aria-label="next-character distribution per sampling stage"></svg>
</section>
<script id="config" type="application/json">__CONFIG__</script>
<script>
__VIEW_JS__
</script>
<script>
"use strict";
const config = JSON.parse(document.getElementById("config").textContent);
const $ = (id) => document.getElementById(id);
const base = `/v1/models/${encodeURIComponent(config.model)}`;
let controller = null;

$("model-name").textContent = config.model;
$("model-version").textContent = `${config.version} (newest of ${config.versions.join(", ")})`;
$("length").max = config.max_new_chars;
const showTemperature = () => { $("temperature-value").textContent = Number($("temperature").value).toFixed(2); };
$("temperature").addEventListener("input", showTemperature);
showTemperature();

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function request() {
  const seed = $("seed").value === "" ? -1 : Number($("seed").value);
  return { prompt: $("prompt").value, temperature: Number($("temperature").value),
           max_new_chars: Number($("length").value), seed: seed, ...samplingSettings() };
}

function* parseEvents(buffer) {  // complete "event:/data:" blocks; the caller keeps the tail
  let end;
  while ((end = buffer.text.indexOf("\\n\\n")) >= 0) {
    const block = buffer.text.slice(0, end);
    buffer.text = buffer.text.slice(end + 2);
    let event = "message", data = "";
    for (const line of block.split("\\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trim();
    }
    yield { event, data: data ? JSON.parse(data) : null };
  }
}

async function errorOf(response) {
  try { return (await response.json()).error; } catch (e) { return `HTTP ${response.status}`; }
}

async function predictOnce(body) {  // fallback for versions exported without decode_start / decode_chunk
  const response = await fetch(`${base}:predict`, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ instances: [body] }), signal: controller.signal });
  if (!response.ok) throw new Error(await errorOf(response));
  $("output").textContent = (await response.json()).predictions[0].text;
}

// --- "in this browser": the version's web export (chargen.js on onnxruntime-web) ---
let browserGenerator = null, chargenModule = null;
if (config.web) $("where").hidden = false;
const inBrowser = () => config.web && document.querySelector("input[name=where]:checked").value === "browser";

function loadInBrowser() {
  if (!browserGenerator) {
    browserGenerator = import(`${config.web}chargen.js`).then((module) => {
      chargenModule = module;
      return module.load(config.web);
    });
    browserGenerator.catch(() => { browserGenerator = null; });  // try again next time
  }
  return browserGenerator;
}

async function generateInBrowser(body) {
  setStatus("loading the model into this page…");
  const generator = await loadInBrowser();
  setStatus("generating in this browser…");
  const options = { prompt: body.prompt, signal: controller.signal,
                    onText: (piece) => { $("output").textContent += piece; } };
  for (const name of Object.keys(generator.settings)) options[chargenModule.optionName(name)] = body[name];
  return generator.generateWithSeed(options);
}

async function generate() {
  const body = request();
  const started = performance.now();
  controller = new AbortController();
  $("generate").disabled = true; $("stop").disabled = false;
  $("output").textContent = body.prompt;
  setStatus("generating…");
  try {
    if (inBrowser()) { await generateInBrowser(body); } else { await generateOnServer(body); }
    const chars = $("output").textContent.length - body.prompt.length;
    const where = inBrowser() ? " in this browser" : "";
    setStatus(`done: ${chars} characters in ${((performance.now() - started) / 1000).toFixed(2)} s${where}`);
  } catch (error) {
    setStatus(error.name === "AbortError" ? "stopped" : `error: ${error.message}`, error.name !== "AbortError");
  } finally {
    $("generate").disabled = false; $("stop").disabled = true;
  }
}

async function generateOnServer(body) {
  const response = await fetch(`${base}:stream`, { method: "POST", signal: controller.signal,
    headers: { "Content-Type": "application/json", "Accept": "text/event-stream" }, body: JSON.stringify(body) });
  if (!response.ok) {
    const message = await errorOf(response);
    if (response.status === 400 && message.includes("cannot stream")) { await predictOnce(body); }
    else { throw new Error(message); }
  } else {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const buffer = { text: "" };
    let done = false;
    while (!done) {
      const chunk = await reader.read();
      if (chunk.done) break;
      buffer.text += decoder.decode(chunk.value, { stream: true });
      for (const { event, data } of parseEvents(buffer)) {
        if (event === "text") $("output").textContent += data.text;
        else if (event === "error") throw new Error(data.error);
        else if (event === "done") { $("output").textContent = data.text; done = true; }
      }
    }
    if (!done) throw new Error("the stream ended early");
  }
}

$("generate").addEventListener("click", generate);
$("stop").addEventListener("click", () => controller && controller.abort());

// --- every sampling setting of keras_chargen.settings (blank = off) ---
const unescapeText = (t) => t.replace(/\\\\(n|t|\\\\)/g, (m, c) => ({ n: "\\n", t: "\\t", "\\\\": "\\\\" })[c]);
for (const s of config.sampling) {
  const box = document.createElement("div");
  const label = document.createElement("label");
  label.htmlFor = `setting-${s.name}`;
  label.textContent = s.label;
  label.title = `${s.meaning}: ${s.rule}`;
  const input = document.createElement("input");
  input.id = `setting-${s.name}`;
  input.type = s.dtype === "string" ? "text" : "number";
  if (s.dtype !== "string") { input.step = s.dtype === "int32" ? "1" : "any"; input.min = s.min; }
  if (s.max !== null) input.max = s.max;
  input.placeholder = "off";
  input.title = label.title;
  box.append(label, input);
  $("sampling").appendChild(box);
}

function samplingSettings() {  // blank inputs send the off value
  const values = {};
  for (const s of config.sampling) {
    const raw = $(`setting-${s.name}`).value;
    values[s.name] = raw === "" ? s.off : s.dtype === "string" ? unescapeText(raw) : Number(raw);
  }
  return values;
}

async function callSignature(signature, inputs) {  // one :predict call of a named signature (columnar format)
  const response = await fetch(`${base}:predict`, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ signature_name: signature, inputs }) });
  if (!response.ok) throw new Error(await errorOf(response));
  return (await response.json()).outputs;
}

// --- inspect view: the `inspect` signature ---
const alternatives = (tokens, probs, i) => (i === 0 ? [] : tokens.map((t, j) => [t, probs[j]]));
let inspected = null, inspectedText = "";
const inspectChoice = () => ({ layer: Number($("inspect-layer").value), kind: Number($("inspect-kind").value),
                               cell: Math.max(0, Number($("inspect-cell").value) || 0) });
const byCell = () => document.querySelector("input[name=inspect-colour]:checked").value === "cell";

async function inspect() {
  const text = $("output").textContent || $("prompt").value;
  if (!text) { $("inspect-status").textContent = "nothing to inspect: type a prompt or generate first"; return; }
  const choice = inspectChoice();
  $("inspect-status").className = "note";
  $("inspect-status").textContent = "inspecting…";
  try {
    const out = await callSignature(config.inspect, { text: [text], layer: [choice.layer], cell: [choice.cell] });
    const n = out.lengths[0];
    inspectedText = text;
    inspected = {
      tokens: out.tokens[0].slice(0, n),
      prob: out.prob[0].slice(0, n).map((p, i) => (i === 0 ? null : p)),
      top: out.top_tokens[0].slice(0, n).map((row, i) => alternatives(row, out.top_probs[0][i], i)),
      activations: out.activations[0].slice(0, n),  // [position][kind][1]: the chosen cell
      names: out.activation_names[0],
    };
    const layers = out.num_layers[0];
    if ($("inspect-layer").options.length !== layers) {
      $("inspect-layer").textContent = "";
      for (let i = 0; i < layers; i++) $("inspect-layer").add(new Option(`${i}`, i));
      $("inspect-layer").value = Math.min(choice.layer, layers - 1);
    }
    if ($("inspect-kind").options.length !== inspected.names.length) {
      $("inspect-kind").textContent = "";
      inspected.names.forEach((name, i) => $("inspect-kind").add(new Option(name, i)));
    }
    $("inspect-cell").max = out.num_cells[0] - 1;
    paintInspected();
    const known = inspected.prob.filter((p) => p !== null);
    const bits = known.reduce((sum, p) => sum - Math.log2(p), 0) / Math.max(1, known.length);
    $("inspect-status").textContent = `${n} positions, ${bits.toFixed(3)} bits each on average`;
  } catch (error) {
    $("inspect-status").className = "error";
    $("inspect-status").textContent = `error: ${error.message}`;
  }
}

function paintInspected() {
  if (!inspected) return;
  const kind = Math.min(inspectChoice().kind, inspected.names.length - 1);
  const colours = byCell() ? InspectView.activationColours(inspected.activations.map((a) => a[kind][0]))
                           : InspectView.surprisalColours(inspected.prob);
  InspectView.render($("inspected"), inspected, colours);
  $("inspect-legend").style.visibility = byCell() ? "hidden" : "visible";
}

const cellLine = (i) => {
  const kind = Math.min(inspectChoice().kind, inspected.names.length - 1);
  return `${inspected.names[kind]}[${inspectChoice().cell}] = ${inspected.activations[i][kind][0].toFixed(3)}`;
};
InspectView.tooltip($("inspected"), () => inspected, cellLine,
  (i) => explain(inspected.tokens.slice(0, i).join(""), inspected.tokens[i]));
$("inspect").addEventListener("click", inspect);
for (const id of ["inspect-layer", "inspect-cell"]) $(id).addEventListener("change", () => inspected && inspect());
$("inspect-kind").addEventListener("change", paintInspected);
document.querySelectorAll("input[name=inspect-colour]").forEach((r) => r.addEventListener("change", paintInspected));

// --- sampling explained: the `explain_sampling` signature ---
const STAGE_LABELS = { model: "the model", repetition_penalty: "after the repetition penalty",
  temperature: "after the temperature", top_k: "after top-k", top_p: "after top-p (what is sampled)" };
let explainTimer = null, explainRequest = 0;

async function explain(context, actual) {
  const body = request();
  const ticket = ++explainRequest;
  try {
    const out = await callSignature(config.explain, { prompt: [context], temperature: [body.temperature],
      top_k: [body.top_k], top_p: [body.top_p], repetition_penalty: [body.repetition_penalty] });
    if (ticket !== explainRequest) return;  // a newer request is on its way
    drawExplained(out, context, actual);
    $("explain-status").className = "note";
  } catch (error) {
    $("explain-status").className = "error";
    $("explain-status").textContent = `error: ${error.message}`;
  }
}

function drawExplained(out, context, actual) {
  const tokens = out.tokens[0], stages = out.stages[0], probs = out.probs[0], other = out.other[0];
  const shown = (t) => InspectView.shown(t);
  const tail = context.slice(-24);
  const next = actual !== undefined ? `; the text has “${shown(actual)}”` : "";
  $("explain-status").textContent = `after “${shown(tail)}”${next}`;
  const width = 760, rowHeight = 64, left = 190, barArea = width - left - 10;
  const columns = tokens.length + 1, step = barArea / columns, bar = Math.max(4, step * 0.7);
  const peak = Math.max(1e-6, ...probs.flat(), ...other);  // every row on one scale: the tallest bar is 44 px
  let svg = `<text x="${width - 10}" y="12" font-size="11" text-anchor="end" fill="#666">` +
            `tallest bar: p = ${peak.toFixed(3)}</text>`;
  stages.forEach((stage, r) => {
    const y0 = r * rowHeight + 50;
    svg += `<text x="4" y="${y0 - 18}" font-size="12">${STAGE_LABELS[stage] || stage}</text>`;
    svg += `<line x1="${left}" y1="${y0}" x2="${width - 10}" y2="${y0}" stroke="#bbb"/>`;
    [...probs[r], other[r]].forEach((p, i) => {
      const h = Math.max(p > 0 ? 1 : 0, (p / peak) * 44), x = left + i * step;
      const colour = i === tokens.length ? "#bbb" : tokens[i] === actual ? "#d0822a" : "#4a7bd0";
      svg += `<rect class="bar" data-stage="${stage}" x="${x}" y="${y0 - h}" width="${bar}" height="${h}" ` +
             `fill="${colour}">` +
             `<title>${p.toFixed(4)}</title></rect>`;
    });
  });
  const y = stages.length * rowHeight + 30;
  tokens.forEach((t, i) => {
    const label = shown(t).replace(/[&<>]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;" })[c]);
    svg += `<text x="${left + i * step + bar / 2}" y="${y - 14}" font-size="12" text-anchor="middle">${label}</text>`;
  });
  const restX = left + tokens.length * step + bar / 2;
  svg += `<text x="${restX}" y="${y - 14}" font-size="10" text-anchor="middle">rest</text>`;
  $("explain-chart").setAttribute("viewBox", `0 0 ${width} ${y}`);
  $("explain-chart").innerHTML = svg;
}

function explainAtCursor() {  // debounced: the prompt up to the cursor, with the settings as they are now
  clearTimeout(explainTimer);
  explainTimer = setTimeout(() => explain($("prompt").value.slice(0, $("prompt").selectionStart)), 200);
}
for (const event of ["input", "click", "keyup"]) $("prompt").addEventListener(event, explainAtCursor);
for (const id of ["temperature", ...config.sampling.map((s) => `setting-${s.name}`)]) {
  $(id).addEventListener("input", explainAtCursor);
}
if (config.signatures.includes(config.explain)) explainAtCursor();
else $("explain-panel").hidden = true;
if (!config.signatures.includes(config.inspect)) $("inspect-panel").hidden = true;
</script>
</body>
</html>
"""


def playground_html(
    model: str,
    versions: list[int],
    config: ServingConfig,
    signatures: tuple[str, ...] = tuple(contract.SIGNATURES),
    web: str | None = None,
) -> str:
    """The page for `model`, with the server's caps baked in (the length box's maximum); `signatures` are those of
    the newest version (the inspect view and the sampling chart need theirs); `web`: the URL of its web export
    (`/web/<version>/`), which turns on "in this browser", or None."""
    settings = {
        "model": model,
        "version": max(versions),
        "versions": versions,
        "max_new_chars": config.max_new_chars,
        "max_prompt_chars": config.max_prompt_chars,
        "sampling": sampling_controls(),
        "signatures": list(signatures),
        "inspect": contract.INSPECT,  # the signatures the inspect view and the sampling chart call
        "explain": contract.EXPLAIN_SAMPLING,
        "web": web,
    }
    data = json.dumps(settings).replace("</", "<\\/")  # cannot close the <script> element early
    page = _PAGE.replace("__VIEW_CSS__", VIEW_CSS).replace("__VIEW_JS__", VIEW_JS).replace("__LEGEND__", LEGEND_HTML)
    return page.replace("__TITLE__", html.escape(model)).replace("__CONFIG__", data)


SAMPLING_CONTROLS = ("top_k", "top_p", "repetition_penalty", "stop")  # beside temperature, length and seed
_LABELS = {
    "top_k": "Top-k",
    "top_p": "Top-p",
    "repetition_penalty": "Repetition penalty",
    "stop": "Stop (\\n: newline)",
}


def sampling_controls() -> list[dict[str, object]]:
    """The page's controls for the settings beyond temperature, length and seed, from `keras_chargen.settings`."""
    controls = []
    for name in SAMPLING_CONTROLS:
        spec = BY_NAME[name]
        low = spec.low if spec.low is not None else None
        controls.append(
            {
                "name": name,
                "label": _LABELS[name],
                "dtype": spec.dtype,
                "off": spec.off,
                "rule": spec.rule,
                "meaning": spec.meaning,
                "min": (1 if spec.integer else low) if low is not None else None,
                "max": spec.high if spec.high is not None and name != "top_k" else None,
            }
        )
    return controls

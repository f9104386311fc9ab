"""The playground page served at `GET /`: one self-contained HTML file, no external assets.

It posts to the `:stream` extension and shows the text as the server-sent events arrive; for a
model version without the `step` signature it falls back to one `:predict` call.
"""

from __future__ import annotations

import html
import json

from keras_chargen.serving.config import ServingConfig

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
<button id="generate">Generate</button><button id="stop" disabled>Stop</button><span id="status"></span>
<label for="output">Output</label>
<pre id="output"></pre>
<script id="config" type="application/json">__CONFIG__</script>
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
           max_new_chars: Number($("length").value), seed: seed };
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

async function generate() {
  const body = request();
  const started = performance.now();
  controller = new AbortController();
  $("generate").disabled = true; $("stop").disabled = false;
  $("output").textContent = body.prompt;
  setStatus("generating…");
  try {
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
    const chars = $("output").textContent.length - body.prompt.length;
    setStatus(`done: ${chars} characters in ${((performance.now() - started) / 1000).toFixed(2)} s`);
  } catch (error) {
    setStatus(error.name === "AbortError" ? "stopped" : `error: ${error.message}`, error.name !== "AbortError");
  } finally {
    $("generate").disabled = false; $("stop").disabled = true;
  }
}

$("generate").addEventListener("click", generate);
$("stop").addEventListener("click", () => controller && controller.abort());
</script>
</body>
</html>
"""


def playground_html(model: str, versions: list[int], config: ServingConfig) -> str:
    """The page for `model`, with the server's caps baked in (the length box's maximum)."""
    settings = {
        "model": model,
        "version": max(versions),
        "versions": versions,
        "max_new_chars": config.max_new_chars,
        "max_prompt_chars": config.max_prompt_chars,
    }
    data = json.dumps(settings).replace("</", "<\\/")  # cannot close the <script> element early
    return _PAGE.replace("__TITLE__", html.escape(model)).replace("__CONFIG__", data)

/**
 * chargen.js: a keras-chargen model in the browser (onnxruntime-web, WebAssembly), written by
 * `keras-chargen export MODEL --format web`. The same prompt, seed and settings give the same text as the
 * SavedModel's `serving_default` (`generated`), the server and every other export.
 *
 *   import { load } from "./chargen.js";
 *   const generator = await load("./");  // the exported folder (a URL; relative to the page)
 *   const text = await generator.generate({ prompt: "ROMEO:", length: 200, temperature: 0.8, seed: 1 });
 *   for await (const piece of generator.stream({ prompt: "ROMEO:", length: 200 })) out.textContent += piece;
 *   await generator.generate({ prompt: "ROMEO:", onText: (piece) => { out.textContent += piece; } });
 *   const { generated, seed } = await generator.generateWithSeed({ prompt: "ROMEO:", seed: -1 });
 *
 * Options (serving_default's inputs, by their JavaScript names; null or undefined = the default / off):
 *   prompt             string, the text to continue ("" = from the start of a line)
 *   length             tokens to generate (characters, or words for a word-level model); default 500
 *   temperature        >= 0, 0 = greedy; default 0.8
 *   seed               0..2147483647 gives the same text on every runtime; negative or null = a random seed,
 *                      which `generateWithSeed` returns (and `generator.lastSeed` holds) to reproduce the text
 *   topK               k >= 1 (0 or null = off); topP in (0, 1] (1 or null = off)
 *   repetitionPenalty  > 0 (1 or null = off)
 *   stop               a string or an array of strings: a row stops once its text ends with one (included);
 *                      "" or null = off; at the word level the match is on whole words
 *   signal             an AbortSignal: aborting stops between two chunks (an AbortError)
 *   onText             generate/generateWithSeed only: called with each new piece of text as it is produced
 * Unknown prompt characters are skipped (unknown words are fed as [UNK]), as the SavedModel does.
 * Bad options reject with a one-line Error naming the option.
 */

/** The JavaScript option of a setting (settings.SETTINGS, listed in chargen.json): `top_k` → `topK`; `length`. */
export const optionName = (setting) =>
  setting === "max_new_chars" ? "length" : setting.replace(/_(.)/g, (m, c) => c.toUpperCase());
const TYPED = { float32: Float32Array, int32: Int32Array };
const WORD_SPACE = /[\t\f\r\v\p{Z}]/gu;  // every non-newline space separates words (keras_chargen.tokenizer)
const NOT_WORD = /([^\p{L}\p{N}\p{M}_'\- ])/gu;  // punctuation, symbols and "\n" are tokens of their own
const ENDS_IN_SPACE = /[\t\n\f\r ]$/;  // RE2's \s, as WordCodec.finish

/** Load the exported folder at `baseUrl`: resolves to a `Generator`. */
export async function load(baseUrl = "./", { numThreads } = {}) {
  const base = new URL(baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`, globalThis.location?.href);
  const manifest = await fetchJson(new URL("chargen.json", base));
  const vocab = await fetchJson(new URL(manifest.vocabulary, base));
  const runtime = new URL(`${manifest.runtime.dir}/`, base);
  const ort = await import(new URL(manifest.runtime.module, runtime).href);
  ort.env.wasm.wasmPaths = runtime.href;
  // threads need a cross-origin isolated page (COOP/COEP headers); a plain static server gives one thread
  ort.env.wasm.numThreads = numThreads ?? (globalThis.crossOriginIsolated ? ort.env.wasm.numThreads : 1);
  let session;
  try {
    session = await ort.InferenceSession.create(new URL(manifest.model, base).href, { executionProviders: ["wasm"] });
  } catch (error) {
    throw new Error(`cannot load ${manifest.model}: ${firstLine(error)}`);
  }
  return new Generator(ort, session, manifest, new Codec(manifest, vocab.tokens));
}

async function fetchJson(url) {
  let response;
  try { response = await fetch(url); } catch (error) { throw new Error(`cannot fetch ${url}: ${firstLine(error)}`); }
  if (!response.ok) throw new Error(`cannot fetch ${url}: HTTP ${response.status}`);
  return response.json();
}

const firstLine = (error) => String(error && error.message ? error.message : error).split("\n")[0];

/** Prompts and stop strings to ids, ids to text: the Python twin is keras_chargen.export.runtimes.TextCodec. */
export class Codec {
  constructor(manifest, tokens) {
    this.level = manifest.level;
    this.lowercase = manifest.lowercase;
    this.tokens = tokens;
    this.ids = new Map(tokens.map((token, i) => [token, i + 1]));
    this.markers = new Set([manifest.document_start, manifest.document_end].filter((m) => m !== null));
    this.documentStart = manifest.document_start;
    this.startId = manifest.start_id;
    this.noSpaceBefore = new Set(manifest.no_space_before);  // keras_chargen.tokenizer's detokenizing rules
    this.noSpaceAfter = new Set(manifest.no_space_after);
  }

  split(text) {
    if (this.level === "char") return Array.from(text);
    if (this.lowercase) text = text.toLowerCase();
    return text.replace(WORD_SPACE, " ").replace(NOT_WORD, " $1 ").split(" ").filter((t) => t.length > 0);
  }

  /** The ids fed for `prompt`: unknown characters dropped, unknown words -1 ([UNK]). */
  promptIds(prompt) {
    const ids = this.split(prompt).map((t) => this.ids.get(t) ?? 0);
    return this.level === "char" ? ids.filter((i) => i > 0) : ids.map((i) => (i > 0 ? i : -1));
  }

  /** The last id a row is primed on (the first generated token follows it). */
  primedLast(promptIds) {
    if (promptIds.length) return Math.max(promptIds[promptIds.length - 1], 0);
    return this.documentStart ?? this.startId;
  }

  /** A stop string's ids; [] (unused) when it is empty or holds a token outside the vocabulary. */
  stopSequence(stop) {
    const ids = this.split(stop).map((t) => this.ids.get(t) ?? 0);
    return ids.length && ids.every((i) => i > 0) ? ids : [];
  }

  spacing(id) {
    if (this.markers.has(id)) return "\n";
    return id > 0 ? this.tokens[id - 1] : "[UNK]";
  }

  /** The text token `id` adds after `prevId` (markers add nothing; words get a space where one belongs). */
  piece(prevId, id) {
    if (this.markers.has(id)) return "";
    const token = this.tokens[id - 1];
    if (this.level === "char" || this.noSpaceBefore.has(token) || this.noSpaceAfter.has(this.spacing(prevId))) return token;
    return ` ${token}`;
  }
}

/** Runs `decode.onnx` a chunk at a time; see the module comment for the options. */
export class Generator {
  constructor(ort, session, manifest, codec) {
    this.ort = ort;
    this.session = session;
    this.manifest = manifest;
    this.codec = codec;
    this.settings = Object.fromEntries(manifest.settings.map((s) => [s.name, s]));
    this.lastSeed = null;
    this.chunks = manifest.chunks;  // tokens per decode call, in turn (the last repeats); any gives the same text
    this.queue = Promise.resolve();  // one session.run at a time
  }

  get level() { return this.manifest.level; }

  /** The continuation of `options.prompt` (as serving_default's `generated`). */
  async generate(options = {}) {
    return (await this.generateWithSeed(options)).generated;
  }

  /** `{generated, seed}`: the continuation and the seed it used. */
  async generateWithSeed(options = {}) {
    const pieces = [];
    let seed = null;
    for await (const piece of this.pieces(options, (s) => { seed = s; })) {
      pieces.push(piece);
      if (options.onText) options.onText(piece);
    }
    return { generated: pieces.join(""), seed };
  }

  /** An async iterator over the pieces of text as they are produced. */
  stream(options = {}) {
    return this.pieces(options, () => {});
  }

  async *pieces(options, onSeed) {
    const request = this.check(options);
    const codec = this.codec;
    const promptIds = codec.promptIds(request.prompt);
    let prev = codec.primedLast(promptIds);
    let feeds = this.startFeeds(request, promptIds);
    const outputs = this.manifest.outputs;
    const chunks = this.chunks;
    let written = false;  // word level: no second space after a prompt that ends in one
    for (let call = 0; ; call++) {
      if (options.signal?.aborted) throw new DOMException("stopped", "AbortError");
      feeds.steps = new this.ort.Tensor("int32", Int32Array.of(chunks[Math.min(call, chunks.length - 1)]), []);
      const out = await this.run(feeds);
      if (call === 0) { this.lastSeed = out[outputs.seed].data[0]; onSeed(this.lastSeed); }
      let text = "";
      for (const id of out[outputs.ids].data) {
        if (id === 0) break;  // the row stopped
        text += codec.piece(prev, id);
        prev = id;
      }
      if (!written && this.level === "word" && ENDS_IN_SPACE.test(request.prompt) && text.startsWith(" ")) {
        text = text.slice(1);
      }
      if (text) { written = true; yield text; }
      if (out[outputs.done].data[0] || out[outputs.ids].dims[1] === 0) return;
      feeds = this.carry(feeds, out);
    }
  }

  run(feeds) {
    const result = this.queue.then(() => this.session.run(feeds));
    this.queue = result.catch(() => {});
    return result;
  }

  /** The options checked against the settings' rules (chargen.json), as serving_default's values. */
  check(options) {
    const names = Object.keys(this.settings);
    const known = new Set(["prompt", "signal", "onText", ...names.map(optionName)]);
    const unknown = Object.keys(options).filter((k) => !known.has(k));
    if (unknown.length) throw new Error(`unknown option ${unknown[0]}; the options are ${[...known].join(", ")}`);
    const prompt = options.prompt ?? "";
    if (typeof prompt !== "string") throw new Error(`prompt must be a string; got ${typeof prompt}`);
    const values = { prompt };
    for (const name of names) {
      const spec = this.settings[name];
      const value = options[optionName(name)];
      const off = value === null || value === undefined;
      values[name] = off ? (spec.default ?? spec.off) : checked(optionName(name), spec, value);
    }
    const stops = Array.isArray(values.stop) ? values.stop : [values.stop];
    values.stop_ids = stops.map((s) => this.codec.stopSequence(s));
    return values;
  }

  startFeeds(request, promptIds) {
    const T = this.ort.Tensor;
    const vocab = this.manifest.vocab_size;
    const width = Math.max(1, ...request.stop_ids.map((s) => s.length));
    const stopIds = new Int32Array(request.stop_ids.length * width);
    request.stop_ids.forEach((seq, i) => stopIds.set(seq, i * width));
    const prompt = new Int32Array(Math.max(1, promptIds.length));
    prompt.set(promptIds);
    const feeds = {
      start: new T("bool", Uint8Array.of(1), []),
      prompt_ids: new T("int32", prompt, [1, prompt.length]),
      stop_ids: new T("int32", stopIds, [1, request.stop_ids.length, width]),  // the string setting `stop`
      logits: new T("float32", new Float32Array(vocab), [1, vocab]),
      prev_ids: new T("int32", new Int32Array(1), [1]),
      seen: new T("float32", new Float32Array(vocab), [1, vocab]),
      count: new T("int32", new Int32Array(1), [1]),
      done: new T("bool", new Uint8Array(1), [1]),
      recent: new T("int32", new Int32Array(1), [1, 1]),
    };
    for (const s of this.manifest.settings) {  // every numeric setting: one value for the row
      if (s.dtype !== "string") feeds[s.name] = new T(s.dtype, TYPED[s.dtype].of(request[s.name]), [1]);
    }
    for (const { name, size } of this.manifest.states) feeds[name] = new T("float32", new Float32Array(size), [1, size]);
    return feeds;
  }

  /** The next call's inputs: the carried state from `out`, the seed as used, `start` false. */
  carry(feeds, out) {
    const next = { ...feeds, start: new this.ort.Tensor("bool", Uint8Array.of(0), []) };
    const carried = ["logits", "prev_ids", "seen", "count", "done", "recent", "seed",
                     ...this.manifest.states.map((s) => s.name)];
    for (const name of carried) next[name] = out[`new_${name}`];
    return next;
  }
}

/** `value` of the JavaScript `option` checked by its setting's rule; a one-line Error otherwise. */
function checked(option, spec, value) {
  const fail = () => { throw new Error(`${option} must be ${spec.rule}; got ${JSON.stringify(value)}`); };
  if (spec.dtype === "string") {
    const all = Array.isArray(value) ? value : [value];
    if (!all.length || all.some((s) => typeof s !== "string")) fail();
    return value;
  }
  if (typeof value !== "number" || Number.isNaN(value)) fail();
  if (spec.dtype.startsWith("int") && !Number.isInteger(value)) fail();
  if (spec.finite && !Number.isFinite(value)) fail();
  if (spec.low !== null && (spec.low_open ? value <= spec.low : value < spec.low)) fail();
  if (spec.high !== null && value > spec.high) fail();
  return value;
}

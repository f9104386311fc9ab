"""One model, every embedded runtime side by side in one run: native program, Python LiteRT, page, Python onnxruntime.

One model (by default an untrained 1x256 LSTM, the README quick start's architecture, over tiny-shakespeare's
characters: the speed does not depend on the weights' values; `--model-dir` takes a trained one) is exported as
TFLite (float32 and dynamic-range int8), ONNX and the web page. Then, in rounds whose order rotates so that all
share the host's load alike, each runtime generates the same `--chars` characters for the same prompt and seed,
batch 1, one thread each (the page's onnxruntime-web runs one):

- the native program `examples/c/chargen` on `generate_fixed.tflite` (one process per run, and one that generates
  1 character: its start-up, loading and compiling the model), float32 and int8;
- Python LiteRT, `TFLiteGenerator.generate_text` on `generate.tflite`, warm, float32 and int8;
- the page in headless Chromium: `chargen.js`'s `stream()` with its default chunks (time to the first piece and
  to the last), warm;
- Python onnxruntime: `OnnxGenerator.generate_text` on `generate.onnx`, and `decode.onnx` (the page's graph) in one
  call, warm.

Every round's texts must be equal across the runtimes of one weight type (the run stops otherwise). After the
rounds: the page's chunk schedules (one call, a step loop, fixed chunks, the default), the int8 variant of
`decode.onnx`, the file sizes (the page's download in all and gzip-compressed), the native program's peak RSS.
The medians go into docs/embed_bench.json and the marked tables of docs/export.md.

    make -C examples/c && npm ci --prefix web && python scripts/bench_embed.py
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # browser_support, web_support: the tests' Chromium and static server

from keras_chargen import contract  # noqa: E402
from keras_chargen.export.runtimes import OnnxGenerator, TextCodec, TFLiteGenerator, generate_inputs, onnx_session  # noqa: E402
from keras_chargen.vocab import Vocabulary  # noqa: E402

PROGRAM = REPO / "examples" / "c" / "chargen"
TEXT = REPO / "keras_chargen" / "corpora" / "tinyshakespeare.txt"
DOC = REPO / "docs" / "export.md"
JSON_OUT = REPO / "docs" / "embed_bench.json"
BEGIN, END = "<!-- bench_embed: written by scripts/bench_embed.py -->", "<!-- end of bench_embed -->"
PROMPT = "ROMEO:\nWhat light through yonder window breaks?\n"
TEMPERATURE = 0.8
SCHEDULES = {  # tokens per decode call in the page, in turn (the last repeats); None: the generator's default
    "one call (no streaming)": [0],  # 0: replaced by the whole length
    "step loop (1 per call)": [1],
    "16 per call": [16],
    "64 per call": [64],
    "1, 4, 16, 64 (default)": None,
}
INT8_PROMPTS = ["ROMEO:", "", "the ", "First Citizen:\n", "é€x", "KING", "\n\n", "to be, or not", "日本語", "O, "]
INT8_MIXES: list[dict[str, Any]] = [{}, {"top_k": 5, "top_p": 0.9, "repetition_penalty": 1.3}, {"stop": "e "}]


def cpu_name() -> str:
    """`lscpu`'s model name."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def make_model(out: Path, units: int, layers: int, train_minutes: float) -> Path:
    """A model directory at `out` (kept if it has weights): untrained, or trained for `train_minutes` on the corpus."""
    from keras_chargen import ChargenConfig, FileSource, Vocabulary, build_model, train

    if (out / "model.keras").exists():
        return out
    config = ChargenConfig(units=units, num_layers=layers, max_minutes=train_minutes)
    if train_minutes:
        train(config, FileSource((TEXT,)), out, verbose=0, sample_every_epoch=False)
        return out
    vocab = Vocabulary(sorted(set(TEXT.read_text(encoding="utf-8"))))
    out.mkdir(parents=True)
    config.save(out / "config.json")
    vocab.save(out / "vocab.json")
    build_model(config, vocab.size).save(out / "model.keras")
    return out


def native_args(directory: Path, chars: int, seed: int) -> list[str]:
    """The native program's command line for one run (one thread, LiteRT's default)."""
    return [str(PROGRAM), str(directory), "--prompt", PROMPT, "--length", str(chars), "--seed", str(seed)] + [
        "--temperature", str(TEMPERATURE), "--threads", "1"
    ]  # fmt: skip


def run_native(directory: Path, chars: int, seed: int) -> tuple[float, str]:
    """One process: (wall seconds, its text)."""
    start = time.perf_counter()
    result = subprocess.run(native_args(directory, chars, seed), capture_output=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"chargen failed: {result.stderr.decode().strip()}")
    return elapsed, result.stdout.decode()


# A fresh, small Python (no site packages: a few MB) forks and execs the program and reads its peak RSS: a child
# forked straight from this process would count this process's memory (TensorFlow's) as its own, since the kernel
# keeps the larger of the RSS before and after exec.
LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss if status == 0 else -1)
"""


def peak_rss(args: list[str]) -> int:
    """Peak RSS (KiB) of one run of `args`, from the kernel's accounting of the child."""
    result = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, *args], capture_output=True, text=True)
    kib = int(result.stdout.strip() or -1)
    if kib < 0:
        raise SystemExit(f"{args[0]} failed while measuring its memory")
    return kib


class PythonDecode:
    """`decode.onnx` in Python onnxruntime, a chunk schedule at a time (the page's loop, in Python)."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.session = onnx_session(path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.states = json.loads(meta[contract.ONNX_STATE_NAMES])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.sizes = {n: int(inputs[n].shape[1]) for n in self.states}
        self.vocab = Vocabulary.load(path.parent / contract.VOCAB_FILE)
        self.codec = TextCodec(self.vocab)
        self.outputs = [o.name for o in self.session.get_outputs()]

    def ids(self, prompt: str, length: int, seed: int, chunk: int, **settings: Any) -> list[int]:
        """The generated ids for `prompt` (temperature `TEMPERATURE` unless given), `chunk` tokens per call."""
        stop = settings.pop("stop", None)
        temperature = settings.pop("temperature", TEMPERATURE)
        stops = [[self.codec.stop_sequence(stop)]] if stop else None
        feeds = generate_inputs([self.codec.prompt_ids(prompt)], length, temperature, seed, stops, **settings)
        size = self.vocab.size
        feeds.update(
            max_new_chars=np.array([length], np.int32),
            start=np.array(True),
            logits=np.zeros((1, size), np.float32),
            seen=np.zeros((1, size), np.float32),
            prev_ids=np.zeros(1, np.int32),
            count=np.zeros(1, np.int32),
            done=np.zeros(1, bool),
            recent=np.zeros((1, 1), np.int32),
            **{n: np.zeros((1, s), np.float32) for n, s in self.sizes.items()},
        )
        out: list[int] = []
        while True:
            feeds["steps"] = np.array(chunk, np.int32)
            result = dict(zip(self.outputs, self.session.run(self.outputs, feeds)))
            row = result["ids"][0]
            out += row[: int(np.argmax(row == 0)) if (row == 0).any() else len(row)].tolist()
            if result["new_done"][0] or row.size == 0:
                return out
            feeds["start"] = np.array(False)
            for name in ("logits", "prev_ids", "seen", "count", "done", "recent", "seed", *self.states):
                feeds[name] = result["new_" + name]

    def text(self, prompt: str, length: int, seed: int) -> str:
        """The continuation, in one call (as `generate_text` gives it)."""
        ids = self.ids(prompt, length, seed, length)
        return self.codec.text(self.codec.primed_last(self.codec.prompt_ids(prompt)), ids, prompt)


def quantized_variant(decode: Path, out: Path) -> dict[str, int]:
    """Dynamic int8 weights (onnxruntime.quantization): size, and on how many rows its text equals float32's."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(decode), str(out), weight_type=QuantType.QInt8, extra_options={"EnableSubgraph": True})
    (out.parent / contract.VOCAB_FILE).write_bytes((decode.parent / contract.VOCAB_FILE).read_bytes())
    fp32, int8 = PythonDecode(decode), PythonDecode(out)
    same = 0
    for m, mix in enumerate(INT8_MIXES):
        for p, prompt in enumerate(INT8_PROMPTS):
            seed = 100 + 10 * m + p
            same += fp32.ids(prompt, 200, seed, 200, **dict(mix)) == int8.ids(prompt, 200, seed, 200, **dict(mix))
    return {"bytes": out.stat().st_size, "fp32_bytes": decode.stat().st_size, "same_text": same, "rows": 30}


# Runs in the page: one request through window.chargen.stream with `chunks` tokens per call (null: the
# generator's default), timed in the page; comes back as JSON (ms to the last piece and to the first, the text).
PAGE_RUN = """
const [request, chunks, done] = arguments;
(async () => {
  const g = window.chargen;
  if (!g.defaultChunks) g.defaultChunks = g.chunks;
  g.chunks = chunks || g.defaultChunks;
  const pieces = [];
  const start = performance.now();
  let first = null;
  for await (const piece of g.stream(request)) {
    if (first === null) first = performance.now() - start;
    pieces.push(piece);
  }
  done(JSON.stringify({ms: performance.now() - start, first_ms: first, text: pieces.join("")}));
})();
"""


@contextlib.contextmanager
def open_page(folder: Path) -> Iterator[tuple[Any, float]]:
    """The exported page in headless Chromium from a local static server: (driver, seconds until its generator is
    loaded)."""
    from browser_support import chromium
    from web_support import static_server

    with tempfile.TemporaryDirectory() as profile, static_server(folder) as url:
        driver = chromium(Path(profile))
        try:
            start = time.perf_counter()
            driver.get(url)
            driver.set_script_timeout(600)
            driver.execute_async_script(
                "const done = arguments[0]; (async () => { while (!window.chargen) "
                "await new Promise((r) => setTimeout(r, 5)); done(); })();"
            )
            yield driver, time.perf_counter() - start
        finally:
            driver.quit()


def page_run(driver: Any, chars: int, seed: int, chunks: list[int] | None = None) -> dict[str, Any]:
    """One timed stream in the page: {"ms", "first_ms", "text"}."""
    request = {"prompt": PROMPT, "length": chars, "temperature": TEMPERATURE, "seed": seed}
    return json.loads(driver.execute_async_script(PAGE_RUN, request, chunks))


def folder_bytes(folder: Path) -> dict[str, Any]:
    """Every file's size, the total and the total gzip-compressed (level 6, as static servers send it)."""
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    return {
        "files": {name: len(data) for name, data in files.items()},
        "total": sum(map(len, files.values())),
        "total_gzip": sum(len(gzip.compress(data, 6)) for data in files.values()),
    }


def timed(fn: Callable[[], str]) -> tuple[float, str]:
    """(seconds, text) of one call."""
    start = time.perf_counter()
    text = fn()
    return time.perf_counter() - start, text


def side_by_side(folders: dict[str, Path], driver: Any, chars: int, rounds: int) -> dict[str, list[float]]:
    """`rounds` rounds of every runtime, the order rotating each round; seconds per run, by runtime. Every round's
    texts must agree across the runtimes of one weight type (float32: all; int8: native and Python LiteRT)."""
    tflite, int8, onnx, web = folders["tflite"], folders["int8"], folders["onnx"], folders["web"]
    lite = TFLiteGenerator(tflite / "generate.tflite", num_threads=1)
    lite8 = TFLiteGenerator(int8 / "generate.tflite", num_threads=1)
    ort_generate = OnnxGenerator(onnx / contract.ONNX_FILES["generate"], num_threads=1)
    decode = PythonDecode(web / contract.WEB_DECODE)

    def python(generator: TFLiteGenerator | OnnxGenerator, seed: int) -> Callable[[], str]:
        return lambda: generator.generate_text([PROMPT], chars, temperature=TEMPERATURE, seed=seed)[0]

    firsts: list[float] = []

    def page(seed: int) -> tuple[float, str]:
        result = page_run(driver, chars, seed)
        firsts.append(result["first_ms"] / 1000)
        return result["ms"] / 1000, result["text"]

    runs: dict[str, Callable[[int], tuple[float, str]]] = {
        "native": lambda s: run_native(tflite, chars, s),
        "native start-up": lambda s: run_native(tflite, 1, s),
        "Python LiteRT": lambda s: timed(python(lite, s)),
        "page": page,
        "Python onnxruntime generate.onnx": lambda s: timed(python(ort_generate, s)),
        "Python onnxruntime decode.onnx": lambda s: timed(lambda: decode.text(PROMPT, chars, s)),
        "native int8": lambda s: run_native(int8, chars, s),
        "native int8 start-up": lambda s: run_native(int8, 1, s),
        "Python LiteRT int8": lambda s: timed(python(lite8, s)),
    }
    for run in runs.values():  # warm-up: interpreters allocated, the page's graph run once, files cached
        run(0)
    firsts.clear()
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        seed = 1000 + r
        texts = {}
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append((result := runs[name](seed))[0])
            texts[name] = result[1]
        float32 = {n: t for n, t in texts.items() if "int8" not in n and "start-up" not in n}
        quantized = {n: texts[n] for n in ("native int8", "Python LiteRT int8")}
        for group in (float32, quantized):
            if len(set(group.values())) != 1:
                raise SystemExit(f"round {r}, seed {seed}: the texts differ: {json.dumps(group, ensure_ascii=False)}")
        print(f"round {r + 1}/{rounds}: texts equal;", {n: round(t[-1], 4) for n, t in times.items()}, flush=True)
    return {**times, "page first character": firsts}


def schedules(driver: Any, chars: int, repeats: int) -> dict[str, dict[str, Any]]:
    """The page's chunk schedules, best of `repeats` after a warm-up each; all must give the default's text."""
    out, texts = {}, set()
    for name, chunks in SCHEDULES.items():
        chunks = [chars] if chunks == [0] else chunks
        page_run(driver, chars, 7, chunks)
        best = min((page_run(driver, chars, 7, chunks) for _ in range(repeats)), key=lambda r: r["ms"])
        texts.add(best["text"])
        out[name] = {"chars_per_s": chars / (best["ms"] / 1000), "first_char_ms": best["first_ms"]}
    if len(texts) != 1:
        raise SystemExit("the page's chunk schedules gave different texts")
    return out


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def runtime_rows(record: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """The side-by-side table's rows: (runtime, file it runs, chars/s, first character, memory)."""
    m, s, chars = record["medians_s"], record["sizes"], record["chars"]

    def speed(name: str, minus: str | None = None) -> str:
        return f"{chars / max(m[name] - (m[minus] if minus else 0), 1e-9):,.0f}"

    whole, native_mib = "with the whole text", f"peak RSS {record['native_peak_rss_kib'] / 1024:.0f} MiB"
    page_first = (
        f"{m['page first character'] * 1000:.1f} ms (the first request after loading: "
        f"{record['page_first_request_first_char_ms']:.0f} ms)"
    )
    fixed, fixed8 = _mb(s["generate_fixed.tflite"]), _mb(s["int8 generate_fixed.tflite"])
    return [
        ("native `examples/c/chargen` (LiteRT C API, XNNPACK), generating", f"`generate_fixed.tflite` ({fixed})",
         speed("native", "native start-up"), "with the whole text (printed at the end)", native_mib),
        (f"native, whole process (start-up {m['native start-up'] * 1000:.0f} ms included)", "〃",
         speed("native"), "–", "–"),
        ("Python LiteRT `TFLiteGenerator.generate_text`, warm", f"`generate.tflite` ({_mb(s['generate.tflite'])})",
         speed("Python LiteRT"), whole, "–"),
        (f"page: `chargen.js` `stream()`, headless Chromium, onnxruntime-web {record['onnxruntime_web']} "
         "(WebAssembly), warm", f"`decode.onnx` ({_mb(s['decode.onnx'])})", speed("page"), page_first, "–"),
        (f"Python onnxruntime {record['onnxruntime']}, `OnnxGenerator.generate_text`, warm",
         f"`generate.onnx` ({_mb(s['generate.onnx'])})", speed("Python onnxruntime generate.onnx"), whole, "–"),
        ("Python onnxruntime, the page's `decode.onnx` in one call, warm", "`decode.onnx`",
         speed("Python onnxruntime decode.onnx"), whole, "–"),
        ("native, int8 weights (dynamic range), generating", f"`generate_fixed.tflite` ({fixed8})",
         speed("native int8", "native int8 start-up"), "–",
         f"peak RSS {record['native_int8_peak_rss_kib'] / 1024:.0f} MiB"),
        ("Python LiteRT, int8 weights", f"`generate.tflite` ({_mb(s['int8 generate.tflite'])})",
         speed("Python LiteRT int8"), "–", "–"),
    ]  # fmt: skip


def table(record: dict[str, Any]) -> str:
    """The marked block of docs/export.md: the side-by-side table, the sizes, the page's schedules, the note."""
    head = "| runtime (batch 1, one thread; one model, prompt, seeds) | file | chars/s | first character | memory |"
    rows = [head, "| --- | --- | ---: | --- | --- |"] + ["| " + " | ".join(row) + " |" for row in runtime_rows(record)]
    page, wasm = record["sizes"]["page"], "ort/ort-wasm-simd-threaded.wasm"
    rest = page["total"] - page["files"][wasm] - page["files"]["decode.onnx"]
    download = (
        f"Page download: {_mb(page['total'])} in all, {_mb(page['total_gzip'])} gzip-compressed (`{wasm}` "
        f"{_mb(page['files'][wasm])}, `decode.onnx` {_mb(page['files']['decode.onnx'])}, the rest {_mb(rest)}); the "
        f"page was ready {record['page_ready_s']:.1f} s after navigation (local server: fetching and compiling the "
        f"WebAssembly and the model). Native: the {record['native_program_bytes'] / 1e3:.0f} KB program plus "
        f"`libLiteRt.so` ({_mb(record['libLiteRt_bytes'])}); peak RSS is the whole process's `ru_maxrss`, read by a "
        f"small launcher (/bin/true reads {record['rss_floor_kib'] / 1024:.0f} MiB there)."
    )
    sched = [
        "| the page's chunks (tokens per `decode.onnx` call) | chars/s | first character |",
        "| --- | ---: | ---: |",
    ]
    sched += [
        f"| {n} | {r['chars_per_s']:,.0f} | {r['first_char_ms']:.1f} ms |" for n, r in record["page_schedules"].items()
    ]
    q = record["onnx_int8"]
    int8 = (
        f"int8 `decode.onnx` (`onnxruntime.quantization.quantize_dynamic`, subgraphs included): {_mb(q['bytes'])} "
        f"against {_mb(q['fp32_bytes'])} in float32; its text equals float32's on {q['same_text']}/{q['rows']} rows "
        "(10 prompts × 3 setting mixes, 200 characters)."
    )
    load, busy = (
        record["load_average"],
        " — **a busy host**: other jobs ran beside it, so single figures move by up to 2×",
    )
    note = (
        f"Measured by `{record['command']}` in one run on {record['cpu']} ({record['cores']} cores), load average "
        f"{load[0]:.1f} at the start and {load[1]:.1f} at the end{busy if record['busy_host'] else ''}. Model: "
        f"{record['model']}, characters of tiny-shakespeare. {record['chars']:,} characters after a "
        f"{len(PROMPT)}-character prompt, temperature {TEMPERATURE}; medians of {record['rounds']} rounds in which "
        "every runtime ran once (the order rotating; after a warm-up), each round with its own seed; every round's "
        "texts were equal across all float32 runtimes, and across the two int8 ones. 'generating' subtracts the "
        "native program's start-up (a 1-character run: loading and compiling the model). The page's chunks: best of "
        f"{record['repeats']} after a warm-up, all the same text. All figures in [{JSON_OUT.name}]({JSON_OUT.name})."
    )
    return "\n\n".join(["\n".join(rows), download, "\n".join(sched), int8, note])


def write_doc(text: str) -> None:
    """Replace the marked block of docs/export.md (atomically)."""
    from keras_chargen.io import atomic_write_text

    doc = DOC.read_text(encoding="utf-8")
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOC} lacks the markers {BEGIN} ... {END}")
    head, rest = doc.split(BEGIN, 1)
    atomic_write_text(DOC, head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1])


def export_all(model: Path, base: Path) -> dict[str, Path]:
    """TFLite (float32, int8), ONNX and web exports of `model` under `base`: version folders by name."""
    from keras_chargen.export import export_model

    (tflite,) = export_model(model, base, "tflite")
    (int8,) = export_model(model, base, "tflite", quantize="dynamic")
    (onnx,) = export_model(model, base, "onnx")
    (web,) = export_model(model, base, "web")
    return {"tflite": tflite, "int8": int8, "onnx": onnx, "web": web}


def how_trained(minutes: float) -> str:
    return f"trained {minutes:g} minutes" if minutes else "untrained"


def describe(model: Path, how: str) -> str:
    """What the model is, for the doc: its architecture, parameters and `how` it was made."""
    import keras

    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    params = keras.saving.load_model(model / "model.keras", compile=False).count_params()
    cell = config.get("cell", "lstm").upper()
    return f"{config['num_layers']}×{config['units']} {cell} ({params:,} parameters, {how})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="a model to use (or build); default: a temporary one")
    parser.add_argument("--units", type=int, default=256, help="LSTM units of a built model (default 256)")
    parser.add_argument("--layers", type=int, default=1, help="LSTM layers of a built model (default 1)")
    parser.add_argument("--train-minutes", type=float, default=0, help="train a built model this long (default 0)")
    parser.add_argument("--chars", type=int, default=5000, help="characters per timed run (default 5000)")
    parser.add_argument("--rounds", type=int, default=9, help="rounds of every runtime (default 9)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per page schedule (default 3)")
    parser.add_argument("--quiet-host", action="store_true", help="say in the doc that nothing else ran")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/ as they are")
    args = parser.parse_args()
    if not PROGRAM.exists():
        raise SystemExit(f"{PROGRAM} is missing: make -C examples/c")
    import ai_edge_litert
    import onnxruntime

    from keras_chargen.export.web import runtime_dir
    from keras_chargen.quiet import quiet_tensorflow_start

    ort_web = runtime_dir()[1]
    quiet_tensorflow_start()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        given = bool(args.model_dir) and (args.model_dir / "model.keras").exists()
        model = make_model(args.model_dir or Path(tmp) / "model", args.units, args.layers, args.train_minutes)
        folders = export_all(model, Path(tmp) / "exported")
        with open_page(folders["web"]) as (driver, ready):
            first_request = page_run(driver, args.chars, 0)
            times = side_by_side(folders, driver, args.chars, args.rounds)
            page_schedules = schedules(driver, args.chars, args.repeats)
        onnx_int8 = quantized_variant(folders["web"] / contract.WEB_DECODE, Path(tmp) / "int8" / contract.WEB_DECODE)
        sizes = {
            "generate.tflite": (folders["tflite"] / "generate.tflite").stat().st_size,
            "generate_fixed.tflite": (folders["tflite"] / "generate_fixed.tflite").stat().st_size,
            "int8 generate.tflite": (folders["int8"] / "generate.tflite").stat().st_size,
            "int8 generate_fixed.tflite": (folders["int8"] / "generate_fixed.tflite").stat().st_size,
            "generate.onnx": (folders["onnx"] / contract.ONNX_FILES["generate"]).stat().st_size,
            "decode.onnx": (folders["web"] / contract.WEB_DECODE).stat().st_size,
            "page": folder_bytes(folders["web"]),
        }
        rss = peak_rss(native_args(folders["tflite"], args.chars, 1))
        rss8 = peak_rss(native_args(folders["int8"], args.chars, 1))
        model_name = describe(model, f"from {args.model_dir}" if given else how_trained(args.train_minutes))
    command = "python scripts/bench_embed.py " + " ".join(sys.argv[1:])
    record = {
        "command": command.strip(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_average": [load_before, os.getloadavg()[0]],
        "busy_host": not args.quiet_host,
        "model": model_name,
        "chars": args.chars,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_web": ort_web,
        "ai_edge_litert": getattr(ai_edge_litert, "__version__", "?"),
        "medians_s": {name: statistics.median(values) for name, values in times.items()},
        "runs_s": times,
        "page_ready_s": ready,
        "page_first_request_first_char_ms": first_request["first_ms"],
        "page_schedules": page_schedules,
        "native_peak_rss_kib": rss,
        "native_int8_peak_rss_kib": rss8,
        "rss_floor_kib": peak_rss(["/bin/true"]),
        "native_program_bytes": PROGRAM.stat().st_size,
        "libLiteRt_bytes": (Path(ai_edge_litert.__file__).parent / "libLiteRt.so").stat().st_size,
        "sizes": sizes,
        "onnx_int8": onnx_int8,
    }
    text = table(record)
    print(text)
    if not args.no_doc:
        from keras_chargen.io import atomic_write_text

        atomic_write_text(JSON_OUT, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        write_doc(text)


if __name__ == "__main__":
    main()

"""Measure the web export for docs/export.md: the page (onnxruntime-web, WebAssembly, headless Chromium) against
Python onnxruntime on the same model, download sizes, time to the first character, chunk sizes, int8.

    npm ci --prefix web
    python scripts/bench_web.py --model-dir /tmp/bench/model --train-minutes 2 --out docs/web_bench.json

Trains the README's quick-start model (1×256 LSTM on the embedded tiny-shakespeare) for `--train-minutes`
if `--model-dir` has no weights, exports ONNX and the web folder, and times one row (batch 1) of `--length`
tokens at temperature 0.8 everywhere (best of `--repeats`, after a warm-up). Prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # browser_support, web_support: the tests' Chromium and static server

from keras_chargen import contract  # noqa: E402
from keras_chargen.export.runtimes import OnnxGenerator, TextCodec, generate_inputs, onnx_session  # noqa: E402
from keras_chargen.vocab import Vocabulary  # noqa: E402

SCHEDULES = {  # tokens per decode call in the page, in turn (the last repeats)
    "one call": None,  # the whole length at once (no streaming)
    "step loop (1 per call)": [1],
    "16 per call": [16],
    "64 per call": [64],
    "1, 4, 16, 64 (default)": [1, 4, 16, 64],
}
PROMPTS = ["ROMEO:", "", "the ", "First Citizen:\n", "é€x", "KING", "\n\n", "to be, or not", "日本語", "O, "]
MIXES = [{}, {"top_k": 5, "top_p": 0.9, "repetition_penalty": 1.3}, {"stop": "e "}]


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def load_average() -> float:
    return os.getloadavg()[0]


class PythonDecode:
    """`decode.onnx` in Python onnxruntime, a chunk schedule at a time (the page's loop, in Python)."""

    def __init__(self, path: Path, threads: int) -> None:
        self.session = onnx_session(path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.states = json.loads(meta[contract.ONNX_STATE_NAMES])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.sizes = {n: int(inputs[n].shape[1]) for n in self.states}
        self.vocab = Vocabulary.load(path.parent / contract.VOCAB_FILE)
        self.codec = TextCodec(self.vocab)
        self.outputs = [o.name for o in self.session.get_outputs()]

    def ids(self, prompt: str, length: int, seed: int, chunk: int, temperature: float = 0.8, **settings) -> list[int]:
        stop = settings.pop("stop", None)
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


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def quantized_variant(decode: Path, out: Path) -> dict:
    """Dynamic int8 weights (onnxruntime.quantization): size, and whether its text equals the float32 file's."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(decode), str(out), weight_type=QuantType.QInt8, extra_options={"EnableSubgraph": True})
    (out.parent / contract.VOCAB_FILE).write_bytes((decode.parent / contract.VOCAB_FILE).read_bytes())
    fp32, int8 = PythonDecode(decode, 1), PythonDecode(out, 1)
    same = 0
    for m, mix in enumerate(MIXES):
        for p, prompt in enumerate(PROMPTS):
            seed = 100 + 10 * m + p
            same += fp32.ids(prompt, 200, seed, 200, **dict(mix)) == int8.ids(prompt, 200, seed, 200, **dict(mix))
    return {"bytes": out.stat().st_size, "same_text": same, "rows": len(MIXES) * len(PROMPTS)}


PAGE_BENCH = """
const [length, schedules, repeats, done] = arguments;
(async () => {
  for (let i = 0; i < 600 && !window.chargen; i++) await new Promise((r) => setTimeout(r, 50));
  const g = window.chargen, out = {};
  const request = {prompt: "ROMEO:", length, temperature: 0.8, seed: 1};
  for (const [name, chunks] of Object.entries(schedules)) {
    g.chunks = chunks || [length];
    let best = Infinity, first = null, text = null;
    for (let r = 0; r <= repeats; r++) {  // r = 0: warm-up
      const start = performance.now();
      let firstAt = null;
      const pieces = [];
      for await (const piece of g.stream(request)) {
        if (firstAt === null) firstAt = performance.now() - start;
        pieces.push(piece);
      }
      const ms = performance.now() - start;
      if (r > 0 && ms < best) { best = ms; first = firstAt; }
      text = pieces.join("");
    }
    out[name] = {ms: best, first_ms: first, text};
  }
  done(JSON.stringify(out));
})();
"""


def page_figures(folder: Path, length: int, repeats: int) -> dict:
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
                "await new Promise((r) => setTimeout(r, 10)); done(); })();"
            )
            ready = time.perf_counter() - start
            results = json.loads(driver.execute_async_script(PAGE_BENCH, length, SCHEDULES, repeats))
        finally:
            driver.quit()
    return {"page_ready_s": ready, "schedules": results}


def folder_bytes(folder: Path) -> dict:
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    return {
        "files": {name: len(data) for name, data in files.items()},
        "total": sum(map(len, files.values())),
        "total_gzip": sum(len(gzip.compress(data, 6)) for data in files.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--train-minutes", type=float, default=2.0)
    parser.add_argument("--length", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "web_bench.json")
    args = parser.parse_args()
    from keras_chargen import ChargenConfig, FileSource, train
    from keras_chargen.export import export_model

    if not (args.model_dir / "model.keras").exists():
        config = ChargenConfig(units=256, num_layers=1, max_minutes=args.train_minutes)
        corpus = REPO / "keras_chargen" / "corpora" / "tinyshakespeare.txt"
        train(config, FileSource((corpus,)), args.model_dir, verbose=0, sample_every_epoch=False)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "model"
        export_model(args.model_dir, base, "onnx")
        (web,) = export_model(args.model_dir, base, "web")
        decode = web / contract.WEB_DECODE
        generate = base / "onnx" / "1" / contract.ONNX_FILES["generate"]
        python = {}
        for threads in (1, 2):
            runner = OnnxGenerator(generate, num_threads=threads)
            seconds = best_time(lambda r=runner: r.generate_text(["ROMEO:"], args.length, seed=1), args.repeats)
            python[f"generate.onnx, {threads} thread(s)"] = args.length / seconds
            decoder = PythonDecode(decode, threads)
            seconds = best_time(lambda d=decoder: d.ids("ROMEO:", args.length, 1, args.length), args.repeats)
            python[f"decode.onnx one call, {threads} thread(s)"] = args.length / seconds
        reference = OnnxGenerator(generate, num_threads=1).generate_text(["ROMEO:"], args.length, seed=1)[0]
        page = page_figures(web, args.length, args.repeats)
        print(json.dumps({"python": python, "page": page}, ensure_ascii=False)[:3000], flush=True)
        int8 = quantized_variant(decode, Path(tmp) / "int8" / "decode.onnx")
        sizes = folder_bytes(web)
    results = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_average": [load_before, load_average()],
        "model": "1×256 LSTM (README quick start), batch 1, temperature 0.8, prompt ROMEO:, seed 1",
        "length": args.length,
        "python_chars_per_s": python,
        "page": {
            "ready_s": page["page_ready_s"],
            **{
                name: {
                    "chars_per_s": args.length / (r["ms"] / 1000),
                    "first_char_ms": r["first_ms"],
                    "same_text_as_python": r["text"] == reference,
                }
                for name, r in page["schedules"].items()
            },
        },
        "sizes": sizes,
        "int8": {**int8, "fp32_bytes": sizes["files"][contract.WEB_DECODE]},
    }
    args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()

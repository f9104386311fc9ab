"""Old code against new code, interleaved: chars/s of every generation mode, alternating run by run.

Two worker processes, one per source tree (e.g. `git archive <commit> keras_chargen tests | tar -x -C
/tmp/old`), load the same untrained model (speed does not depend on the weights' values), export
it with their own code and wait for orders; the main process asks for one timed run of a mode at a
time, old and new alternately (which goes first alternates by round), so both see the same load
on a shared host. Reported: each side's median chars/s and the median of the per-round ratios
new / old (the figure to read on a noisy host).

    python scripts/bench_ab.py --old /tmp/old --new . --text keras_chargen/corpora/tinyshakespeare.txt
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NEW_CHARS, PROMPT_CHARS, BATCH_ROWS, BATCH_CHARS, STREAM_CHARS = 1000, 100, 64, 300, 300
MODES = (
    "ingraph_b1",
    "ingraph_b64",
    "ingraph_topk_topp_b1",
    "ingraph_stop_b1",
    "tflite_generator_b1",
    "tflite_generator_int8_b1",
    "tflite_generator_int8_topk_topp_b1",
    "tflite_generator_int8_stop_b1",
    "onnx_generator_b1",
    "stream_b1",
    "stream_16",
)
NEVER = "zqzq"  # a stop string of known characters that (almost) never comes: the stop check runs every step


def make_model(text: Path, out: Path) -> None:
    """An untrained default 2x512 LSTM over the corpus' vocabulary, as a model directory."""
    from keras_chargen import ChargenConfig, Vocabulary, build_model

    config = ChargenConfig()
    vocab = Vocabulary(sorted(set(text.read_text(encoding="utf-8"))))
    out.mkdir(parents=True)
    config.save(out / "config.json")
    vocab.save(out / "vocab.json")
    build_model(config, vocab.size).save(out / "model.keras")


class Worker:
    """Runs in a subprocess with one source tree first on `sys.path`: builds every mode, then times one on demand."""

    def __init__(self, model_dir: Path, text: Path, out: Path) -> None:
        import numpy as np

        from keras_chargen import load_generator
        from keras_chargen.export import export_model, runtimes

        self.generator = load_generator(model_dir)
        vocab_tokens = self.generator.vocabulary
        prompt = text.read_text(encoding="utf-8")[:PROMPT_CHARS]
        self.prompt = prompt
        self.prompt_ids = [vocab_tokens.index(c) + 1 for c in prompt]
        export_model(model_dir, out, "all")
        export_model(model_dir, out, "tflite", quantize="dynamic")
        self.out = out
        self.runtimes = runtimes
        self.np = np
        stop_id = vocab_tokens.index("z") + 1
        self.new_layout = hasattr(runtimes, "TextCodec")  # stop sequences (issue 19) or single stop ids
        # the same stop (the id of "z") in either layout: old, single ids per row; new, sequences per row
        self.stop_ids = [[[stop_id]]] if self.new_layout else [[stop_id]]
        self.tflite = runtimes.TFLiteGenerator(out / "tflite" / "1" / "generate.tflite")
        self.tflite_int8 = runtimes.TFLiteGenerator(out / "tflite-dynamic" / "1" / "generate.tflite")
        self.onnx = runtimes.OnnxGenerator(out / "onnx" / "1" / "generate.onnx")
        from keras_chargen.serving import streaming
        from keras_chargen.serving.config import ServingConfig
        from keras_chargen.serving.repository import ServableVersion

        self.streaming = streaming
        self.stream_config = ServingConfig(max_streams=64)
        self.servable = ServableVersion.load("model", 1, out / "1")  # loaded once: streams, not loads, are timed
        self.scheduler = streaming.StreamScheduler(64)
        self.scheduler.start()

    def inputs(self, **settings):
        return self.runtimes.generate_inputs([self.prompt_ids], NEW_CHARS, 0.8, seed=0, **settings)

    def run(self, mode: str) -> float:
        """One timed run of `mode` (after one untimed run the first time): tokens generated per second (a row that
        stops early counts only what it generated)."""
        g, p = self.generator, self.prompt
        np = self.np

        def text(*args, **kwargs):
            return sum(map(len, g.generate(*args, **kwargs)))

        def ids(runtime, **settings):
            return int(np.count_nonzero(runtime(**self.inputs(**settings))))  # tokens generated (0 after a stop)

        calls = {
            "ingraph_b1": lambda: text([p], 0.8, NEW_CHARS, seed=0),
            "ingraph_b64": lambda: text([p] * BATCH_ROWS, 0.8, BATCH_CHARS, seed=0),
            "ingraph_topk_topp_b1": lambda: text([p], 0.8, NEW_CHARS, seed=0, top_k=40, top_p=0.9),
            "ingraph_stop_b1": lambda: text([p], 0.8, NEW_CHARS, seed=0, stop=NEVER),
            "tflite_generator_b1": lambda: ids(self.tflite),
            "tflite_generator_int8_b1": lambda: ids(self.tflite_int8),
            "tflite_generator_int8_topk_topp_b1": lambda: ids(self.tflite_int8, top_k=40, top_p=0.9),
            "tflite_generator_int8_stop_b1": lambda: ids(self.tflite_int8, stop_ids=self.stop_ids),
            "onnx_generator_b1": lambda: ids(self.onnx),
            "stream_b1": lambda: self.stream([1]),
            "stream_16": lambda: self.stream(range(16)),
        }
        fn = calls[mode]
        if mode not in self.__dict__.setdefault("warm", set()):
            fn()
            self.warm.add(mode)
        start = time.perf_counter()
        tokens = fn()
        return tokens / (time.perf_counter() - start)

    def open_stream(self, request: dict, loop):
        """A stream on the scheduler, through either version's API (before issue 19 it took encoded prompt ids)."""
        params = self.streaming.parse_stream_request(request, self.stream_config)
        if self.new_layout:
            return self.scheduler.open(self.servable, params, loop)
        encoded = self.servable.run("encode", {"prompt": self.np.array([request["prompt"].encode()], object)})
        ids = encoded["ids"][0][: int(encoded["lengths"][0])]
        return self.scheduler.open(self.servable, ids, params, loop)

    def stream(self, seeds) -> int:
        """Streams opened at once on the worker's scheduler; the characters they sent."""
        import asyncio

        requests = [{"prompt": self.prompt, "max_new_chars": STREAM_CHARS, "seed": s, "stop": NEVER} for s in seeds]

        async def run() -> int:
            sessions = [self.open_stream(r, asyncio.get_running_loop()) for r in requests]
            sent = 0
            for session in sessions:
                async for piece in session.pieces():
                    sent += len(piece)
            return sent

        return asyncio.run(run())


def worker_main(model_dir: Path, text: Path, out: Path) -> None:
    worker = Worker(model_dir, text, out)
    print("ready", flush=True)
    for line in sys.stdin:
        mode = line.strip()
        if not mode:
            break
        print(json.dumps({"mode": mode, "rate": worker.run(mode)}), flush=True)


def start_worker(src: Path, model_dir: Path, text: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(src), "TF_CPP_MIN_LOG_LEVEL": "2"}
    args = ["--worker", "--model-dir", str(model_dir), "--text", str(text), "--out", str(out)]
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *args],
        env=env,
        cwd=src,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def ask(worker: subprocess.Popen, mode: str) -> float:
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write(mode + "\n")
    worker.stdin.flush()
    return float(json.loads(worker.stdout.readline())["rate"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, help="source tree of the old code (holding keras_chargen/ and tests/)")
    parser.add_argument("--new", type=Path, default=Path("."), help="source tree of the new code")
    parser.add_argument("--text", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--modes", nargs="+", default=list(MODES))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--make-model", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.model_dir, args.text.resolve(), args.out)
        return
    if args.make_model:
        make_model(args.text, args.model_dir)
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # made by the old code: the new code loads older model directories, not always the other way round
        subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--make-model", "--model-dir", str(tmp / "model")]
            + ["--text", str(args.text.resolve())],
            env={**os.environ, "PYTHONPATH": str(args.old.resolve()), "TF_CPP_MIN_LOG_LEVEL": "2"},
            cwd=args.old.resolve(),
            check=True,
            stderr=subprocess.DEVNULL,
        )
        sides = {"old": args.old.resolve(), "new": args.new.resolve()}
        workers = {
            name: start_worker(src, tmp / "model", args.text.resolve(), tmp / name) for name, src in sides.items()
        }
        for name, worker in workers.items():
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready", f"{name} failed to start"
        rates: dict[str, dict[str, list[float]]] = {m: {"old": [], "new": []} for m in args.modes}
        for round_ in range(args.rounds):
            for mode in args.modes:
                order = ("old", "new") if round_ % 2 == 0 else ("new", "old")
                for name in order:
                    rates[mode][name].append(ask(workers[name], mode))
            print(f"round {round_ + 1} of {args.rounds} done", file=sys.stderr, flush=True)
        for worker in workers.values():
            assert worker.stdin is not None
            worker.stdin.write("\n")
            worker.stdin.flush()
            worker.wait(60)
    print("| mode | old chars/s (median) | new chars/s (median) | new / old, paired median | new / old, best run |")
    print("|---|---|---|---|---|")
    for mode, sides_rates in rates.items():
        old, new = sides_rates["old"], sides_rates["new"]
        paired = statistics.median(n / o for n, o in zip(new, old))
        print(
            f"| {mode} | {statistics.median(old):,.0f} | {statistics.median(new):,.0f} | {paired:.2f} | "
            f"{max(new) / max(old):.2f} |"
        )
    print(json.dumps(rates))


if __name__ == "__main__":
    main()

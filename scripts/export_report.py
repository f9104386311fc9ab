"""Measure the numbers in docs/export.md: artifact sizes, bits/char deltas, parity and speed of every export.

    python scripts/export_report.py --text ../shared/data/tinyshakespeare.txt --model-dir /tmp/report/model \
        --out /tmp/report/exported --train-minutes 6

Trains the default architecture (2×512 LSTM) for `--train-minutes` first if `--model-dir` has no
weights, exports every format and quantization, and prints markdown tables.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_chargen import ChargenConfig, FileSource, RecurrentStep, load_generator, load_model, train
from keras_chargen.contract import is_state, state_order
from keras_chargen.corpus import prepare_corpus
from keras_chargen.export import artifact_dir, export_model
from keras_chargen.export.runtimes import (
    OnnxStep,
    TFLiteStep,
    bits_per_char,
    cross_entropy_bits,
    greedy_ids,
    stream_matrix,
)

QUANTIZATIONS = ("none", "dynamic", "float16")
STREAMS = 16
# serving_default's sampling inputs at their off values (the SavedModel needs every input)
SAMPLING_OFF = {
    "top_k": tf.constant([0]),
    "top_p": tf.constant([1.0]),
    "repetition_penalty": tf.constant([1.0]),
    "stop": tf.constant([""]),
}


class KerasStep:
    """`RecurrentStep` on numpy arrays (the interface of the runtime clients)."""

    def __init__(self, model) -> None:
        self.step = RecurrentStep(model)

    def initial_states(self, batch: int) -> list[np.ndarray]:
        return [s.numpy() for s in self.step.initial_states(batch)]

    def __call__(self, ids, states):
        logits, states = self.step(tf.constant(ids, tf.int32), [tf.constant(s) for s in states])
        return logits.numpy(), [s.numpy() for s in states]


class SavedModelStep:
    """The SavedModel `step` signature on numpy arrays."""

    def __init__(self, loaded) -> None:
        self.function = loaded.signatures["step"]
        specs = self.function.structured_input_signature[1]
        self.state_names = state_order([n for n in specs if is_state(n)])
        self.state_sizes = [specs[n].shape[1] for n in self.state_names]

    def initial_states(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, size), np.float32) for size in self.state_sizes]

    def __call__(self, ids, states):
        feeds = {n: tf.constant(s) for n, s in zip(self.state_names, states)}
        out = self.function(ids=tf.constant(ids, tf.int32), **feeds)
        return out["logits"].numpy(), [out[n].numpy() for n in self.state_names]


def max_logit_diff(step, reference, ids) -> float:
    """Max |logit difference| of `step` against `reference` over `ids`, states carried in each."""
    states, ref_states, diff = step.initial_states(1), reference.initial_states(1), 0.0
    for i in ids:
        logits, states = step(np.array([i], np.int32), states)
        expected, ref_states = reference(np.array([i], np.int32), ref_states)
        diff = max(diff, float(np.abs(logits - expected).max()))
    return diff


def chars_per_second(run, num_chars: int) -> float:
    run(10)  # warm up (tracing, allocation)
    start = time.perf_counter()
    run(num_chars)
    return num_chars / (time.perf_counter() - start)


def tflite_generate(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path), num_threads=2).get_signature_runner("generate")
    return lambda prompt_ids, temperature, n: runner(
        prompt_ids=np.asarray([prompt_ids], np.int32),
        temperature=np.array([temperature], np.float32),
        num_chars=np.array(n, np.int32),
    )["ids"][0]


def onnx_generate(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda prompt_ids, temperature, n: session.run(
        ["ids"],
        {
            "prompt_ids": np.asarray([prompt_ids], np.int32),
            "temperature": np.array([temperature], np.float32),
            "num_chars": np.array(n, np.int32),
        },
    )[0][0]


def ensure_model(model_dir: Path, text: Path, minutes: float) -> None:
    if (model_dir / "model.keras").is_file():
        return
    # the default architecture (2×512 LSTM, embedding 64); small shuffled batches and a higher learning
    # rate get it past the unigram plateau within a few CPU minutes
    config = ChargenConfig(
        layout="shuffled", stride=50, batch_size=32, learning_rate=4e-3, epochs=1, max_minutes=minutes, patience=0
    )
    train(config, FileSource((text,)), model_dir, verbose=2, sample_every_epoch=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", type=Path, required=True, help="training/validation text (UTF-8)")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="export base path (overwritten)")
    parser.add_argument("--train-minutes", type=float, default=6.0)
    parser.add_argument("--max-chars", type=int, default=50_000, help="validation characters scored")
    parser.add_argument("--prompt", default="ROMEO:\n")
    args = parser.parse_args()

    ensure_model(args.model_dir, args.text, args.train_minutes)
    config, vocab, model = load_model(args.model_dir)
    generator = load_generator(args.model_dir)
    timings = {}
    for fmt, quantize in [("savedmodel", "none"), ("onnx", "none")] + [("tflite", q) for q in QUANTIZATIONS]:
        start = time.perf_counter()
        export_model(args.model_dir, args.out, fmt, quantize=quantize, overwrite=True)
        timings[f"{fmt} {quantize}"] = time.perf_counter() - start
    dirs = {q: artifact_dir(args.out, "tflite", 1, q) for q in QUANTIZATIONS}
    onnx_dir, sm_dir = artifact_dir(args.out, "onnx", 1), artifact_dir(args.out, "savedmodel", 1)

    params = model.count_params()
    print(
        f"## Model: {config.num_layers}×{config.units} {config.cell}, embedding {config.embedding_dim}, "
        f"vocabulary {vocab.size}, {params:,} parameters (4 × params = {4 * params / 1e6:.2f} MB)\n"
    )
    print("| file | bytes | MB |\n| --- | ---: | ---: |")
    files = sorted(
        p
        for p in args.out.rglob("*")
        if p.is_file() and p.suffix in (".tflite", ".onnx", ".pb") or p.name.startswith("variables.data")
    )
    for path in files:
        print(f"| {path.relative_to(args.out)} | {path.stat().st_size:,} | {path.stat().st_size / 1e6:.2f} |")
    print("\nexport seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))

    with tempfile.TemporaryDirectory() as tmp:
        val = np.array(
            prepare_corpus(FileSource((args.text,)), tmp, config.val_fraction, vocab).read_ids("val"), np.int32
        )[: args.max_chars]
    matrix = stream_matrix(val, STREAMS)
    keras_bpc = cross_entropy_bits(model.predict(matrix[:, :-1], verbose=0), matrix[:, 1:])
    steps = {f"tflite {q}": TFLiteStep(dirs[q] / "step.tflite") for q in QUANTIZATIONS}
    steps["onnx"] = OnnxStep(onnx_dir / "step.onnx")
    steps["savedmodel"] = SavedModelStep(tf.saved_model.load(str(sm_dir)))
    reference = KerasStep(model)
    parity_ids = val[:100]
    print(
        f"\n## Validation ({len(val):,} chars of the last {config.val_fraction:.0%}, {STREAMS} streams) "
        f"and parity (100 steps)\n"
    )
    print(f"Keras: {keras_bpc:.4f} bits/char\n")
    print("| step artifact | bits/char | Δ vs Keras | max abs logit diff |\n| --- | ---: | ---: | ---: |")
    for name, step in steps.items():
        bpc = bits_per_char(step, step.initial_states(STREAMS), val, STREAMS)
        diff = max_logit_diff(step, reference, parity_ids)
        print(f"| {name} | {bpc:.4f} | {100 * (bpc - keras_bpc) / keras_bpc:+.3f} % | {diff:.1e} |")

    prompt_ids = vocab.encode(args.prompt).tolist()
    expected = generator.generate([args.prompt], 0.0, 200)[0]
    loaded = tf.saved_model.load(str(sm_dir))
    serving = loaded.signatures["serving_default"]
    generators = {f"generate.tflite {q}": tflite_generate(dirs[q] / "generate.tflite") for q in QUANTIZATIONS}
    generators["generate.onnx"] = onnx_generate(onnx_dir / "generate.onnx")
    print(f"\n## Greedy 200 chars from {args.prompt!r}\n\nKeras: {expected!r}\n")
    greedy = {
        "SavedModel serving_default": serving(
            prompt=tf.constant([args.prompt]),
            temperature=tf.constant([0.0]),
            max_new_chars=tf.constant([200]),
            seed=tf.constant([0], tf.int64),
            **SAMPLING_OFF,
        )["generated"]
        .numpy()[0]
        .decode("utf-8")
    }
    greedy |= {name: vocab.decode(run(prompt_ids, 0.0, 200)) for name, run in generators.items()}
    greedy |= {
        f"{name} step loop": vocab.decode(greedy_ids(step, step.initial_states(1), prompt_ids, 200))
        for name, step in steps.items()
    }
    for name, text in greedy.items():
        print(f"- {name}: {'identical' if text == expected else 'differs: ' + repr(text)}")

    print("\n## Speed, batch 1, temperature 1 (chars/s on this machine)\n")
    speeds = {
        "Keras CharGenerator.generate": lambda n: generator.generate([args.prompt], 1.0, n, seed=1),
        "SavedModel serving_default": lambda n: serving(
            prompt=tf.constant([args.prompt]),
            temperature=tf.constant([1.0]),
            max_new_chars=tf.constant([n]),
            seed=tf.constant([1], tf.int64),
            **SAMPLING_OFF,
        ),
    }
    speeds |= {name: (lambda n, run=run: run(prompt_ids, 1.0, n)) for name, run in generators.items()}
    for name in ("tflite none", "tflite dynamic", "onnx"):
        step = steps[name]
        speeds[f"{name} step loop (Python)"] = lambda n, step=step: greedy_ids(
            step, step.initial_states(1), prompt_ids, n
        )
    print("| path | chars/s |\n| --- | ---: |")
    for name, run in speeds.items():
        print(f"| {name} | {chars_per_second(run, 2000 if 'loop' not in name else 500):,.0f} |")
    print(f"\nbits/char of the Keras model: {keras_bpc:.4f} ({keras_bpc * math.log(2):.4f} nats/char)")


if __name__ == "__main__":
    main()

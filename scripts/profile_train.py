#!/usr/bin/env python
"""Where a training step's time goes, and which levers make it faster, measured side by side in one run.

Prints (and with `--out`, writes into docs/training.md between the `profile_train` markers):

1. a profile of one training step of the model: the recurrent loop forward and backward, the input
   projection, the output layer and loss, the optimizer update, the input pipeline;
2. step time and chars/s against batch size, Keras' LSTM against `FusedLSTM`;
3. levers (XLA on the train step, thread settings) against the plain step, interleaved.

Every variant is timed in rounds (A, B, C, A, B, C, ...) and the median is reported, so a busy
host slows all of them alike.

The model defaults to the recommended one (keras_chargen/recommended.py).

Usage: python scripts/profile_train.py [--units N] [--layers N] [--batches 64 128 256] [--rounds 3] [--skip ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from fused_lstm import FusedLSTM, lstm_sequence, recurrence  # beside this script

from keras_chargen.config import ChargenConfig
from keras_chargen.recommended import RECOMMENDED
from keras_chargen.training import compile_model

VOCAB = 66


def plain_model(
    config: ChargenConfig, batch: int, layer=keras.layers.LSTM, policy: str = "float32", **options
) -> keras.Model:
    """Embedding → `layers` × `layer` → Dense, stateful, as `build_model` but with a chosen LSTM class and policy."""
    inputs = keras.Input(batch_shape=(batch, None), dtype="int32")
    x = keras.layers.Embedding(VOCAB, config.embedding_dim, dtype=policy)(inputs)
    for _ in range(config.num_layers):
        x = layer(config.units, return_sequences=True, stateful=True, dtype=policy, **options)(x)
        if config.dropout:
            x = keras.layers.Dropout(config.dropout)(x)
    logits = keras.layers.Dense(VOCAB, dtype=policy)(x)
    if policy != "float32":
        logits = keras.layers.Activation("linear", dtype="float32")(logits)
    return keras.Model(inputs, logits)


def fit_timer(model: keras.Model, batch: int, seq: int, batches: int) -> Callable[[], float]:
    """A function that fits `batches` batches of random ids and returns seconds per batch (after a warm-up)."""
    rng = np.random.default_rng(0)
    x = rng.integers(1, VOCAB, (batch * batches, seq)).astype(np.int32)
    y = rng.integers(1, VOCAB, (batch * batches, seq)).astype(np.int32)
    model.fit(x[: 2 * batch], y[: 2 * batch], batch_size=batch, verbose=0, shuffle=False)

    def run() -> float:
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch, verbose=0, shuffle=False)
        return (time.perf_counter() - start) / batches

    return run


def interleaved(timers: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median seconds per batch of each timer, run in rounds A, B, C, A, B, C, ..."""
    times: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            times[name].append(timer())
    return {name: statistics.median(values) for name, values in times.items()}


def compiled(config: ChargenConfig, model: keras.Model, batch: int, **kwargs) -> keras.Model:
    compile_model(model, config, 100)
    if kwargs:
        model.compile(optimizer=model.optimizer, loss=model.loss, **kwargs)
    return model


def step_profile(config: ChargenConfig, batch: int, seq: int, repeats: int = 10) -> dict[str, float]:
    """Milliseconds per batch of each part of a FusedLSTM training step, each timed alone in a `tf.function`."""
    units, emb = config.units, config.embedding_dim
    rng = tf.random.Generator.from_seed(0)
    x = rng.normal((batch, seq, emb))
    h0 = tf.zeros((batch, units))
    kernel = tf.Variable(rng.normal((emb, 4 * units)) * 0.05)
    recurrent = tf.Variable(rng.normal((units, 4 * units)) * 0.05)
    bias = tf.Variable(tf.zeros(4 * units))
    dense = tf.Variable(rng.normal((units, VOCAB)) * 0.05)
    outputs = rng.normal((batch, seq, units))
    targets = tf.random.uniform((batch, seq), 0, VOCAB, tf.int32)
    projected = rng.normal((seq, batch, 4 * units))

    @tf.function
    def projection():
        return tf.matmul(tf.reshape(x, [-1, emb]), kernel) + bias

    @tf.function
    def recurrent_forward():
        return recurrence(projected, h0, h0, recurrent)[0]

    @tf.function
    def recurrent_forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(projected)
            out = recurrence(projected, h0, h0, recurrent)[0]
        return tape.gradient(out, [projected, recurrent])

    @tf.function
    def whole_layer_forward_backward():
        with tf.GradientTape() as tape:
            out = lstm_sequence(x, h0, h0, kernel, recurrent, bias)[0]
        return tape.gradient(out, [kernel, recurrent, bias])

    keras_layer = keras.layers.LSTM(units, return_sequences=True)
    keras_layer(x)

    @tf.function
    def keras_layer_forward_backward():
        with tf.GradientTape() as tape:
            out = keras_layer(x)
        return tape.gradient(out, keras_layer.trainable_weights)

    @tf.function
    def output_and_loss():
        with tf.GradientTape() as tape:
            tape.watch(outputs)
            logits = tf.matmul(outputs, dense)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
        return tape.gradient(loss, [outputs, dense])

    optimizer = keras.optimizers.Adam(1e-3, clipnorm=5.0)
    variables = [kernel, recurrent, bias, dense]
    grads = [tf.zeros_like(v) for v in variables]
    optimizer.build(variables)

    @tf.function
    def optimizer_step():
        optimizer.apply_gradients(zip(grads, variables))

    parts = {
        "input projection, all steps in one product (forward)": projection,
        "recurrent loop, forward only (products + gate elementwise + loop)": recurrent_forward,
        "recurrent loop, forward + backward": recurrent_forward_backward,
        "whole LSTM layer, forward + backward (FusedLSTM)": whole_layer_forward_backward,
        "whole LSTM layer, forward + backward (keras.layers.LSTM, what training runs)": keras_layer_forward_backward,
        "output layer + loss, forward + backward": output_and_loss,
        "Adam update with clipnorm": optimizer_step,
    }
    result = {}
    for name, fn in parts.items():
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, fn())
        result[name] = 1000 * (time.perf_counter() - start) / repeats
    # the per-step products alone, as the loop issues them: their share is the loop's floor
    a, r = tf.zeros((batch, units)), recurrent

    @tf.function
    def products_only():
        def body(t, acc):
            return t + 1, acc + tf.matmul(a, r)[:, :1]

        return tf.while_loop(lambda t, _: t < 3 * seq, body, (0, tf.zeros((batch, 1))))[1]

    products_only()
    start = time.perf_counter()
    for _ in range(repeats):
        products_only().numpy()
    result["the loop's 3 × seq recurrent-size products alone"] = 1000 * (time.perf_counter() - start) / repeats
    return result


def pipeline_ms(batch: int, seq: int, batches: int = 200) -> float:
    """Milliseconds per batch to read our stateful `tf.data` pipeline alone (from a temporary id file)."""
    import tempfile

    from keras_chargen.data import stateful_dataset

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ids.bin"
        n = batch * seq * batches + 1
        np.random.default_rng(0).integers(1, VOCAB, n).astype(np.uint8).tofile(path)
        dataset = stateful_dataset(path, n, np.uint8, batch, seq)
        for _ in dataset:  # first pass fills the cache
            pass
        start = time.perf_counter()
        count = sum(1 for _ in dataset)
        return 1000 * (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=RECOMMENDED["units"])
    parser.add_argument("--layers", type=int, default=RECOMMENDED["num_layers"])
    parser.add_argument("--seq-len", type=int, default=RECOMMENDED["seq_len"])
    parser.add_argument("--batch-size", type=int, default=RECOMMENDED["batch_size"], help="batch of the profile")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--steps", type=int, default=8, help="batches per timed fit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["profile", "batch", "levers"])
    parser.add_argument("--out", help="write the tables between the profile_train markers of this file")
    parser.add_argument("--machine-note", default="otherwise idle", help="what else ran on the machine")
    args = parser.parse_args()
    lines: list[str] = []

    def emit(text: str) -> None:
        print(text, flush=True)
        lines.extend(text.split("\n"))

    config = ChargenConfig(num_layers=args.layers, units=args.units, seq_len=args.seq_len)
    seq = args.seq_len
    load = Path("/proc/loadavg").read_text().split()[:3]
    from keras_chargen.bench.report import cpu_name

    emit(
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {cpu_name()} ({os.cpu_count()} cores; "
        f"{args.machine_note}; load average at the start {' '.join(load)}) with `python scripts/profile_train.py "
        f"--rounds {args.rounds}`: {args.layers}×{args.units} LSTM, embedding {config.embedding_dim}, seq {seq}, "
        f"vocabulary {VOCAB}."
    )

    if "profile" not in args.skip:
        batch = args.batch_size
        emit(f"\n**Profile of one step, batch {batch}** (ms per batch, each part timed alone in a `tf.function`):\n")
        emit("| part | ms |\n|---|---:|")
        for name, ms in step_profile(config, batch, seq).items():
            emit(f"| {name} | {ms:.1f} |")
        emit(f"| input pipeline (our stateful tf.data, cached) | {pipeline_ms(batch, seq):.2f} |")

    if "batch" not in args.skip:
        emit("\n**Step time against batch size** (`fit` on arrays, median of interleaved rounds):\n")
        emit("| batch | keras.layers.LSTM | FusedLSTM | FusedLSTM / Keras |\n|---:|---|---|---:|")
        timers = {}
        for batch in args.batches:
            for name, layer in (("keras", keras.layers.LSTM), ("fused", FusedLSTM)):
                model = compiled(config, plain_model(config, batch, layer), batch)
                timers[(name, batch)] = fit_timer(model, batch, seq, args.steps)
        medians = interleaved(timers, args.rounds)
        for batch in args.batches:
            k, f = medians[("keras", batch)], medians[("fused", batch)]
            emit(
                f"| {batch} | {1000 * k:.0f} ms, {batch * seq / k:,.0f} chars/s | {1000 * f:.0f} ms, "
                f"{batch * seq / f:,.0f} chars/s | {k / f:.2f}× |"
            )

    if "levers" not in args.skip:
        emit("\n**Levers at batch 64** (`fit` on arrays, median of interleaved rounds):\n")
        emit("| lever | ms per batch | chars/s | × Keras' LSTM |\n|---|---:|---:|---:|")
        seq_static = {"unroll": True}
        variants = {
            "Keras LSTM, plain fit": lambda: compiled(config, plain_model(config, 64), 64),
            "FusedLSTM (hoisted input projection, hand-written backward)": lambda: compiled(
                config, plain_model(config, 64, FusedLSTM), 64
            ),
            "XLA: jit_compile=True on the train step": lambda: compiled(
                config, plain_model(config, 64), 64, jit_compile=True
            ),
            "mixed_bfloat16 (bfloat16 products, float32 variables)": lambda: compiled(
                config, plain_model(config, 64, policy="mixed_bfloat16"), 64
            ),
            "unroll=True (static 64-step graph)": lambda: compiled(config, plain_model(config, 64, **seq_static), 64),
        }
        timers = {}
        for name, make in variants.items():
            try:
                timers[name] = fit_timer(make(), 64, seq, args.steps)
            except Exception as err:  # report, do not abort the other levers
                emit(f"| {name} | failed: {str(err).splitlines()[0][:120]} |")
        medians = interleaved(timers, args.rounds)
        base = medians["Keras LSTM, plain fit"]
        for name, seconds in medians.items():
            emit(f"| {name} | {1000 * seconds:.0f} ms | {64 * seq / seconds:,.0f} chars/s | {base / seconds:.2f}× |")

    if args.out:
        replace_block(Path(args.out), lines)


def replace_block(path: Path, lines: list[str]) -> None:
    """Put `lines` between the `<!-- profile_train:begin -->` / `end` markers of `path` (appended if absent)."""
    begin, end = "<!-- profile_train:begin -->", "<!-- profile_train:end -->"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = "\n".join([begin, *lines, end])
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()

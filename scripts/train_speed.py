#!/usr/bin/env python
"""Training speed of the README's recommended command against a plain Keras model, one right after the other.

1. Runs the recommended command (`keras_chargen.recommended`) with `--max-minutes 2` (in a fresh
   process, into a temporary `--out`) and counts the characters it trained from its own output:
   the epochs and batches it reached (`time budget of 2 min reached at epoch E, batch b/S`) ×
   batch × sequence length, over the 2 minutes of fitting (validation, samples and backups included).
2. Then, in another fresh process, a plain Keras model of the same size: Embedding 64 → the same
   LSTM stack → Dense, float32, batch 64, sequence 64, Adam, `fit` on in-memory NumPy arrays of the
   same text, stopped after the same 2 minutes; characters = batches fitted × 64 × 64.
3. Writes the ratio (goal ≥ 2×) to `docs/train_speed.md` (and `.json`).

Run it on an otherwise idle machine (`--machine-note` says what else ran).

Usage: python scripts/train_speed.py [--text FILE] [--minutes 2] [--out docs/train_speed.md] [--machine-note TEXT]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASELINE_BATCH, BASELINE_SEQ = 64, 64
EMBEDDED = Path(__file__).resolve().parent.parent / "keras_chargen" / "corpora" / "tinyshakespeare.txt"
STOP_LINE = re.compile(r"time budget of [\d.]+ min reached at epoch (\d+), batch (\d+)/(\d+)")
BUDGET_LINE = re.compile(r"epochs of ([\d,]+) batches of (\d+)×(\d+)")


def chars_from_output(output: str) -> tuple[int, int, int, int]:
    """(characters trained, epochs finished, batches into the last epoch, batches per epoch) from `train`'s output."""
    stop, budget = STOP_LINE.search(output), BUDGET_LINE.search(output)
    if stop is None or budget is None:
        raise SystemExit("train's output has no budget / stop line:\n" + output[-2000:])
    epoch, batch, steps = (int(g) for g in stop.groups())
    per_batch = int(budget.group(2)) * int(budget.group(3))
    return ((epoch - 1) * steps + batch) * per_batch, epoch - 1, batch, steps


def run_recommended(text: Path | None, minutes: float) -> dict:
    """Run the README's command for `minutes` in a fresh process (on `text`, or as the README does, on the
    embedded tiny-shakespeare); its chars/s from its own output."""
    from keras_chargen.recommended import train_command, train_flags

    with tempfile.TemporaryDirectory() as tmp:
        flags = train_flags(minutes, str(Path(tmp) / "model"))
        corpus = ["--text", str(text)] if text else []
        command = [sys.executable, "-m", "keras_chargen", "train", *corpus, *flags, "--verbose", "2"]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=_env())
        wall = time.perf_counter() - start
    output = done.stdout + done.stderr
    if done.returncode:
        raise SystemExit(f"train failed ({done.returncode}):\n{output[-2000:]}")
    chars, epochs, batch, steps = chars_from_output(output)
    return {
        "command": train_command(minutes) + (f" --text {text}" if text else ""),
        "chars": chars,
        "epochs_finished": epochs,
        "batch_in_last_epoch": batch,
        "batches_per_epoch": steps,
        "seconds": minutes * 60,
        "chars_per_s": chars / (minutes * 60),
        "wall_seconds": wall,
    }


def run_baseline(text: Path | None, minutes: float) -> dict:
    """The plain Keras model for `minutes` in a fresh process (this script with `--baseline-only`)."""
    command = [sys.executable, __file__, "--text", str(text or EMBEDDED), "--minutes", str(minutes), "--baseline-only"]
    done = subprocess.run(command, capture_output=True, text=True, env=_env())
    if done.returncode:
        raise SystemExit(f"baseline failed ({done.returncode}):\n{(done.stdout + done.stderr)[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def baseline(text: Path, minutes: float) -> dict:
    """Embedding 64 → the recommended LSTM stack → Dense, float32, batch 64, seq 64, Adam, fit on arrays."""
    import keras

    from keras_chargen.recommended import recommended_config

    config = recommended_config()
    data = text.read_text(encoding="utf-8")
    data = data[: int(len(data) * (1 - config.val_fraction))]
    chars = sorted(set(data))
    ids = _encode(data, chars)
    streams = (len(ids) - 1) // BASELINE_BATCH // BASELINE_SEQ * BASELINE_SEQ
    x = ids[: BASELINE_BATCH * streams].reshape(BASELINE_BATCH, streams)
    y = ids[1 : BASELINE_BATCH * streams + 1].reshape(BASELINE_BATCH, streams)
    # batch k = rows of window k of every stream (the stateful order), as in-memory arrays
    x = x.reshape(BASELINE_BATCH, -1, BASELINE_SEQ).transpose(1, 0, 2).reshape(-1, BASELINE_SEQ)
    y = y.reshape(BASELINE_BATCH, -1, BASELINE_SEQ).transpose(1, 0, 2).reshape(-1, BASELINE_SEQ)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(len(chars) + 1, 64)])
    for _ in range(config.num_layers):
        model.add(keras.layers.LSTM(config.units, return_sequences=True))
    model.add(keras.layers.Dense(len(chars) + 1))
    model.compile(keras.optimizers.Adam(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    counter = _BatchCounter(minutes * 60)
    model.fit(x, y, batch_size=BASELINE_BATCH, epochs=1000, shuffle=False, verbose=0, callbacks=[counter])
    chars_trained = counter.batches * BASELINE_BATCH * BASELINE_SEQ
    return {
        "model": f"Embedding 64 → {config.num_layers}×{config.units} LSTM → Dense, float32, batch 64, seq 64, Adam",
        "chars": chars_trained,
        "batches": counter.batches,
        "seconds": counter.elapsed,
        "chars_per_s": chars_trained / counter.elapsed,
    }


def _encode(data: str, chars: list[str]):
    import numpy as np

    table = {c: i + 1 for i, c in enumerate(chars)}
    return np.fromiter((table[c] for c in data), np.int32, len(data))


class _BatchCounter:
    """Keras callback: counts the batches fitted and stops `fit` once `seconds` have passed since training began."""

    def __new__(cls, seconds: float):
        import keras

        class Counter(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.batches, self.elapsed, self.start = 0, 0.0, 0.0

            def on_train_begin(self, logs=None) -> None:
                self.start = time.monotonic()

            def on_train_batch_end(self, batch, logs=None) -> None:
                self.batches += 1
                self.elapsed = time.monotonic() - self.start
                if self.elapsed >= seconds:
                    self.model.stop_training = True

        return Counter()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def write_report(ours: dict, base: dict, args: argparse.Namespace) -> str:
    from keras_chargen.bench.report import cpu_name

    ratio = ours["chars_per_s"] / base["chars_per_s"]
    lines = [
        "# Training speed: the README's recommended command against plain Keras",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores; {args.machine_note}. "
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with "
        f"`python scripts/train_speed.py{f' --text {args.text}' if args.text else ''} --minutes {args.minutes:g}`: "
        "the recommended "
        f"command for {args.minutes:g} minutes, then the plain Keras model for the same time, each in a "
        "fresh process.",
        "",
        "| run | characters trained | seconds | chars/s |",
        "|---|---:|---:|---:|",
        f"| ours: `{ours['command']}` ({ours['epochs_finished']} epochs + {ours['batch_in_last_epoch']}/"
        f"{ours['batches_per_epoch']} batches; validation, samples and backups included) | {ours['chars']:,} | "
        f"{ours['seconds']:.0f} | {ours['chars_per_s']:,.0f} |",
        f"| plain Keras: {base['model']}, `fit` on in-memory arrays ({base['batches']} batches) | "
        f"{base['chars']:,} | {base['seconds']:.0f} | {base['chars_per_s']:,.0f} |",
        "",
        f"**Ratio: {ratio:.2f}×** (goal ≥ 2×: {'met' if ratio >= 2 else 'not met'}).",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"ours": ours, "baseline": base, "ratio": ratio}, indent=1) + "\n")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--text", type=Path, help="the corpus (default: the embedded tiny-shakespeare, as the README's command)"
    )
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--out", default="docs/train_speed.md")
    parser.add_argument("--machine-note", default="otherwise idle")
    parser.add_argument("--baseline-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_only:
        print(json.dumps(baseline(args.text or EMBEDDED, args.minutes)))
        return
    ours = run_recommended(args.text, args.minutes)
    print(f"ours: {ours['chars']:,} chars in {ours['seconds']:.0f} s = {ours['chars_per_s']:,.0f} chars/s", flush=True)
    base = run_baseline(args.text, args.minutes)
    print(f"plain Keras: {base['chars']:,} chars in {base['seconds']:.0f} s = {base['chars_per_s']:,.0f} chars/s")
    print(write_report(ours, base, args))


if __name__ == "__main__":
    main()

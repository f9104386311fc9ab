"""Profile of the in-graph generation loop, piece by piece, with interleaved A/B variants.

Each variant is one `tf.function` running `--chars` iterations of a `tf.while_loop` at a given
batch size over an untrained default model (2×512 LSTM, vocabulary 66; speed does not depend
on the weights' values). Variants run round-robin in the same process, `--repeats` times;
medians and best runs are printed (the best run is the better estimate on a shared machine).

    PYTHONPATH=$PWD python scripts/profile_step.py --batch 1 --repeats 15

Variants:
- `empty`: the loop alone (a counter and the carried tensors);
- `sample`: the loop + `sample_next` on fixed logits;
- `gemv`: the loop + only the step's weight matmuls (every weight read once per iteration);
- `keras_cells`: sampling + the step through the Keras cells (`RecurrentStep` before this profile);
- `step`: sampling + `RecurrentStep` (plain TF ops, embedding gathered then multiplied);
- `step_folded`: sampling + `RecurrentStep` with `folded_weights()` (the generation default);
- `*_xla`: the same loop compiled with XLA (`jit_compile=True`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from keras_chargen.config import ChargenConfig  # noqa: E402
from keras_chargen.model import RecurrentStep, _state_sizes, build_model  # noqa: E402
from keras_chargen.sampling import sample_next  # noqa: E402

VOCAB = 66


class KerasCellStep(RecurrentStep):
    """The step as it was: the trained Keras layers and cells called one step at a time."""

    def __call__(self, ids, states, folded=None):
        x = self.embedding(ids)
        new_states, offset = [], 0
        for cell in self.cells:
            count = len(_state_sizes(cell))
            x, cell_states = cell(x, states[offset: offset + count], training=False)
            new_states += list(cell_states) if isinstance(cell_states, (list, tuple)) else [cell_states]
            offset += count
        return self.dense(x), new_states


def loop(step: RecurrentStep, batch: int, chars: int, body_kind: str, jit: bool):
    temperature = tf.fill([batch], 0.8)

    @tf.function(jit_compile=jit)
    def run():
        folded = step.folded_weights() if body_kind == "step_folded" else None
        weights = [w.value for cell in step.cells for w in (cell.kernel, cell.recurrent_kernel)] + [
            step.dense.kernel.value]

        def body(t, logits, states):
            seed = tf.stack([tf.constant(0, tf.int64), tf.cast(t, tf.int64)])
            if body_kind == "empty":
                return t + 1, logits + 0.0, states
            if body_kind == "sample":
                ids = sample_next(logits, temperature, seed)
                return t + 1, logits + tf.cast(ids[:, None], tf.float32) * 0.0, states
            if body_kind == "gemv":
                h = states[0]
                total = [tf.reduce_sum(tf.matmul(tf.tile(h, [1, w.shape[0] // h.shape[1] + 1])[:, :w.shape[0]], w))
                         for w in weights]
                return t + 1, logits + tf.add_n(total) * 0.0, [states[0] + 1e-6] + states[1:]
            ids = sample_next(logits, temperature, seed)
            logits, states = step(ids, states, folded)
            return t + 1, logits, states

        logits = tf.zeros([batch, VOCAB])
        _, logits, states = tf.while_loop(lambda t, *_: t < chars, body, (0, logits, step.initial_states(batch)))
        return logits

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--chars", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--variants", default="empty,sample,gemv,gemv_xla,keras_cells,step,step_folded,"
                        "keras_cells_xla,step_folded_xla")
    args = parser.parse_args()
    model = build_model(ChargenConfig(cell=args.cell), VOCAB)
    ours, old = RecurrentStep(model), KerasCellStep(model)
    variants = {}
    for name in args.variants.split(","):
        kind = name.removesuffix("_xla")
        variants[name] = loop(old if kind == "keras_cells" else ours, args.batch, args.chars,
                              "step" if kind == "keras_cells" else kind, name.endswith("_xla"))
    for run in variants.values():
        run()
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run().numpy()
            times[name].append(time.perf_counter() - start)
    weight_bytes = 4 * sum(int(w.numpy().size) for cell in ours.cells for w in (cell.kernel, cell.recurrent_kernel))
    weight_bytes += 4 * int(ours.dense.kernel.numpy().size)
    print(f"batch {args.batch}, {args.chars} iterations, {args.repeats} interleaved runs; "
          f"step weights {weight_bytes / 1e6:.1f} MB; load average {os.getloadavg()[0]:.1f}")
    print(f"{'variant':18s} {'us/iter median':>15s} {'best':>8s} {'chars/s median':>15s} {'best':>8s} {'GB/s best':>10s}")
    for name, values in times.items():
        median, best = statistics.median(values) / args.chars, min(values) / args.chars
        print(f"{name:18s} {median * 1e6:15.1f} {best * 1e6:8.1f} {args.batch / median:15,.0f} "
              f"{args.batch / best:8,.0f} {weight_bytes / best / 1e9:10.1f}")


if __name__ == "__main__":
    main()

"""Profile of the in-graph generation loop, piece by piece, with interleaved A/B variants.

Each variant is one `tf.function` running `--chars` iterations of a `tf.while_loop` at a given
batch size over an untrained default model (2×512 LSTM, vocabulary 66; speed does not depend
on the weights' values). Variants run round-robin in the same process, `--repeats` times;
medians and best runs are printed (the best run is the better estimate on a shared machine).

    PYTHONPATH=$PWD python scripts/profile_step.py --batch 1 --repeats 15

Variants:
- `empty`: the loop alone (a counter and the carried tensors);
- `sample`: the loop + `next_token` (temperature only, the processors skipped) on fixed logits;
- `gemv`: the loop + only the step's weight matmuls (every weight read once per iteration);
- `keras_cells`: sampling + the step through the Keras cells (`RecurrentStep` before this profile);
- `step`: sampling + `RecurrentStep` (plain TF ops, embedding gathered then multiplied);
- `step_loop`: sampling + `RecurrentStep` with `loop_weights()` (folded embedding, one kernel per
  gate: the generation default);
- `*_xla`: the same loop compiled with XLA (`jit_compile=True`);
- `*_xlastep`: a plain loop calling the step compiled with XLA (one XLA launch per character).

CPU time is the process's user + system time per iteration (both cores together): on a shared
machine it is steadier than wall time and shows the work a variant does.
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
from keras_chargen.sampling import next_token, processors_in_use, sampling_settings  # noqa: E402

VOCAB = 66


class KerasCellStep(RecurrentStep):
    """The step as it was: the trained Keras layers and cells called one step at a time."""

    def __call__(self, ids, states, weights=None):
        x = self.embedding(ids)
        new_states, offset = [], 0
        for cell in self.cells:
            count = len(_state_sizes(cell))
            x, cell_states = cell(x, states[offset : offset + count], training=False)
            new_states += list(cell_states) if isinstance(cell_states, (list, tuple)) else [cell_states]
            offset += count
        return self.dense(x), new_states


def loop(step: RecurrentStep, batch: int, chars: int, body_kind: str, jit: bool, jit_step: bool = False):
    settings = sampling_settings(batch, 0.8)
    seeds, seen = tf.zeros([batch], tf.int32), tf.zeros([batch, VOCAB], tf.bool)
    call_step = tf.function(step.__call__, jit_compile=True) if jit_step else step

    @tf.function(jit_compile=jit)
    def run():
        loop_weights = step.loop_weights() if body_kind == "step_loop" else None
        weights = [w.value for cell in step.cells for w in (cell.kernel, cell.recurrent_kernel)] + [
            step.dense.kernel.value
        ]

        def body(t, logits, states):
            in_use = processors_in_use(settings)
            if body_kind == "empty":
                return t + 1, logits + 0.0, states
            if body_kind == "sample":
                ids = next_token(logits, seen, settings, seeds, tf.fill([batch], t), in_use)
                return t + 1, logits + tf.cast(ids[:, None], tf.float32) * 0.0, states
            if body_kind == "gemv":
                h = states[0]
                total = [
                    tf.reduce_sum(tf.matmul(tf.tile(h, [1, w.shape[0] // h.shape[1] + 1])[:, : w.shape[0]], w))
                    for w in weights
                ]
                return t + 1, logits + tf.add_n(total) * 0.0, [states[0] + 1e-6] + states[1:]
            ids = next_token(logits, seen, settings, seeds, tf.fill([batch], t), in_use)
            logits, states = call_step(ids, states, loop_weights)
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
    parser.add_argument("--threads", type=int, default=0, help="intra- and inter-op threads; 0 = TF's default")
    parser.add_argument(
        "--variants", default="empty,sample,gemv,gemv_xla,keras_cells,step,step_loop,keras_cells_xla,step_loop_xla"
    )
    args = parser.parse_args()
    model = build_model(ChargenConfig(cell=args.cell), VOCAB)
    ours, old = RecurrentStep(model), KerasCellStep(model)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    variants = {}
    for name in args.variants.split(","):
        kind = name.removesuffix("_xla").removesuffix("_xlastep")
        variants[name] = loop(
            old if kind == "keras_cells" else ours,
            args.batch,
            args.chars,
            "step" if kind == "keras_cells" else kind,
            name.endswith("_xla"),
            name.endswith("_xlastep"),
        )
    for run in variants.values():
        run()
    times = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            start, start_cpu = time.perf_counter(), sum(os.times()[:2])
            run().numpy()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(sum(os.times()[:2]) - start_cpu)
    weight_bytes = 4 * sum(int(w.numpy().size) for cell in ours.cells for w in (cell.kernel, cell.recurrent_kernel))
    weight_bytes += 4 * int(ours.dense.kernel.numpy().size)
    print(
        f"batch {args.batch}, {args.chars} iterations, {args.repeats} interleaved runs; "
        f"step weights {weight_bytes / 1e6:.1f} MB; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'variant':20s} {'us/iter median':>15s} {'best':>8s} {'chars/s median':>15s} {'best':>8s} "
        f"{'GB/s best':>10s} {'CPU us/iter':>12s}"
    )
    for name, values in times.items():
        median, best = statistics.median(values) / args.chars, min(values) / args.chars
        print(
            f"{name:20s} {median * 1e6:15.1f} {best * 1e6:8.1f} {args.batch / median:15,.0f} "
            f"{args.batch / best:8,.0f} {weight_bytes / best / 1e9:10.1f} "
            f"{statistics.median(cpu[name]) / args.chars * 1e6:12.1f}"
        )


if __name__ == "__main__":
    main()

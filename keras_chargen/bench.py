"""Benchmarks: generation and training speed against the reference approaches, on one machine, in one run.

Generation modes (chars/s, 1000 new characters after a 100-character prompt):

- `onestep`: the TF "text generation with an RNN" tutorial's `OneStep`: a Keras model with
  `return_state`, `StringLookup` in and out and `tf.random.categorical`, in one `tf.function`
  called from Python once per character, written faithfully over our weights;
- `keras_window`: the Keras char-LSTM example: `model.predict` on the whole window per character;
- `ingraph`: our `CharGenerator` (one `tf.function`, `tf.while_loop`, the step on
  `RecurrentStep.loop_weights()`: one matmul per gate), what the SavedModel runs; `ingraph_xla` its id-level loop
  compiled with XLA (`jit_compile=True`) for one fixed shape (XLA compiles again per new shape);
- `tflite_step_*`: a Python loop over `step.tflite` (fp32 / dynamic-range int8) in the LiteRT
  interpreter; `tflite_generator` / `tflite_generator_int8`: `generate.tflite` (fp32 / dynamic-range
  int8), the whole loop in the interpreter;
- `onnx_step` / `onnx_generator`: the same with `step.onnx` / `generate.onnx` in onnxruntime.

Training: our stateful `tf.data` pipeline + `fit` against `fit` on in-memory NumPy arrays of the
same windows. Plus, for the rooflines, the bandwidth at which this machine reads a matrix the size
of the step weights (batch 1 is bound by reading them once per character), its DRAM bandwidth and
its float32 matmul FLOP/s (batch 64 is compute-bound).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_chargen.config import ChargenConfig
from keras_chargen.data import stateful_dataset
from keras_chargen.generation import CharGenerator
from keras_chargen.model import RNN_LAYERS, build_model
from keras_chargen.sampling import sampling_settings
from keras_chargen.vocab import OOV_TOKEN, Vocabulary

PROMPT_CHARS = 100
NEW_CHARS = 1000


def measure(fn: Callable[[], object], chars: int, repeats: int) -> dict:
    """Run `fn` once to warm up, then `repeats` times; chars/s median and spread."""
    fn()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        rates.append(chars / (time.perf_counter() - start))
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "runs": repeats}


class PeakRSS:
    """Context manager: the process's peak resident memory (MiB) while it is open, polled every 10 ms
    from `/proc/self/status`, and how far it rose above the resident memory at the start
    (`peak_mib`, `growth_mib`; None where that file does not exist)."""

    @property
    def growth_mib(self) -> float | None:
        return None if self.peak_mib is None or self.start_mib is None else self.peak_mib - self.start_mib

    def __enter__(self) -> PeakRSS:
        self.start_mib, self.peak_mib, self._stop = _rss_mib(), None, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while True:
            rss = _rss_mib()
            if rss is not None:
                self.peak_mib = max(self.peak_mib or 0.0, rss)
            if self._stop.wait(0.01):
                return


def _rss_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# --- the reference approaches, written as their sources write them ---
class TutorialModel(keras.Model):
    """The TF tutorial's model shape (`call(inputs, states, return_state)`), with our layers and weights."""

    def __init__(self, config: ChargenConfig, vocab_size: int) -> None:
        super().__init__()
        self.embedding = keras.layers.Embedding(vocab_size, config.embedding_dim)
        self.rnns = [
            RNN_LAYERS[config.cell](config.units, return_sequences=True, return_state=True)
            for _ in range(config.num_layers)
        ]
        self.dense = keras.layers.Dense(vocab_size)

    def call(self, inputs, states=None, return_state=False, training=False):
        x = self.embedding(inputs, training=training)
        new_states = []
        for i, rnn in enumerate(self.rnns):
            initial = None if states is None else states[i]
            x, *layer_states = rnn(x, initial_state=initial, training=training)
            new_states.append(layer_states)
        x = self.dense(x, training=training)
        return (x, new_states) if return_state else x


class OneStep(tf.Module):
    """The tutorial's `OneStep`: one character per call, strings in and out."""

    def __init__(self, model: TutorialModel, vocabulary: list[str], temperature: float = 0.8) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature
        self.ids_from_chars = keras.layers.StringLookup(vocabulary=vocabulary, oov_token=OOV_TOKEN)
        self.chars_from_ids = keras.layers.StringLookup(vocabulary=vocabulary, oov_token=OOV_TOKEN, invert=True)
        self.prediction_mask = tf.one_hot(0, len(vocabulary) + 1, on_value=-float("inf"), off_value=0.0)

    @tf.function
    def generate_one_step(self, inputs, states=None):
        input_chars = tf.strings.unicode_split(inputs, "UTF-8")
        input_ids = self.ids_from_chars(input_chars).to_tensor()
        predicted_logits, states = self.model(inputs=input_ids, states=states, return_state=True)
        predicted_logits = predicted_logits[:, -1, :] / self.temperature + self.prediction_mask
        predicted_ids = tf.squeeze(tf.random.categorical(predicted_logits, num_samples=1), axis=-1)
        return self.chars_from_ids(predicted_ids), states


def onestep_loop(one_step: OneStep, prompts: list[str], chars: int) -> None:
    states, next_char = None, tf.constant(prompts)
    for _ in range(chars):
        next_char, states = one_step.generate_one_step(next_char, states=states)


def keras_window_loop(model: keras.Model, prompt_ids: np.ndarray, chars: int, maxlen: int) -> None:
    """The Keras example: predict on the last `maxlen` characters, sample from the last position."""
    rng = np.random.default_rng(0)
    ids = list(prompt_ids)
    for _ in range(chars):
        logits = model.predict(np.array([ids[-maxlen:]], np.int32), verbose=0)[0, -1] / 0.8
        probs = np.exp(logits - logits.max())
        probs[0] = 0.0
        ids.append(int(rng.choice(len(probs), p=probs / probs.sum())))


def step_loop(step, prompt_ids: np.ndarray, batch: int, chars: int, temperature: float = 0.8) -> None:
    """A client loop over a step artifact: prime on the prompt, then sample in NumPy each character.

    The draw is the Gumbel-max trick, `argmax(logits / T + Gumbel noise)` (an exact categorical
    draw), with the noise for every step drawn before the loop, so a step costs the client one
    scale, one add and one argmax; the unknown id 0 is never drawn.
    """
    states = step.initial_states(batch)
    for i in prompt_ids:
        logits, states = step(np.full([batch], i, np.int32), states)
    noise = np.random.default_rng(0).gumbel(size=(chars, *logits.shape)).astype(np.float32)
    noise[:, :, 0] = -np.inf
    for t in range(chars):
        next_ids = np.argmax(logits * np.float32(1 / temperature) + noise[t], axis=1).astype(np.int32)
        logits, states = step(next_ids, states)


def xla_generator(generator: CharGenerator, chars: int):
    """The id-level prime + sampling loop of `generator`, compiled with XLA."""

    @tf.function(jit_compile=True)
    def run(ids, lengths, temperature, seed):
        logits, states = generator.prime(ids, lengths)
        batch = tf.shape(ids)[0]
        return generator.sample_ids(
            logits, states, sampling_settings(batch, temperature), tf.fill([batch], chars), seed
        )[0]

    return run


# --- machine limits ---
def weights_bandwidth(num_bytes: int, repeats: int = 200) -> float:
    """Bytes/s read by the fastest float32 matrix-vector product over a `num_bytes` matrix, best of 5.

    NumPy's BLAS (OpenBLAS, every core) multiplies a `(rows, 2048)` matrix the size of the step
    weights by a vector again and again, so the matrix stays wherever the caches keep it between
    products, as the weights do between generated characters: the batch-1 roofline.
    """
    matrix = np.random.default_rng(0).random((max(1, num_bytes // (4 * 2048)), 2048), dtype=np.float32)
    vector = np.ones(2048, np.float32)
    best = 0.0
    for _ in range(6):  # the first is a warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            matrix @ vector
        best = max(best, repeats * matrix.nbytes / (time.perf_counter() - start))
    return best


def memory_bandwidth() -> float:
    """Bytes/s streamed by a large NumPy copy (read + write), best of 5: DRAM, for comparison."""
    source = np.ones(256 * 2**20 // 8)  # 256 MiB, above the caches
    target = np.empty_like(source)
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        np.copyto(target, source)
        best = max(best, 2 * source.nbytes / (time.perf_counter() - start))
    return best


def matmul_flops(units: int = 512, products: int = 12, iterations: int = 200) -> float:
    """FLOP/s of float32 matmul as the batch-64 generation loop multiplies, best of 3.

    `products` independent `(64, units) @ (units, units)` products per iteration: the per-gate
    products of a 2×`units` LSTM step (`RecurrentStep.loop_weights`), with no dependency between
    them, so TF can spread them over its threads as far as it can: an upper bound for the loop.
    """
    a = tf.random.normal([64, units])
    kernels = [tf.random.normal([units, units]) for _ in range(products)]

    @tf.function
    def many():
        def body(acc, _):
            return acc + tf.add_n([tf.reduce_sum(tf.matmul(a, k)) for k in kernels])

        return tf.foldl(body, tf.range(iterations), initializer=0.0)

    many()
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        many().numpy()
        best = max(best, iterations * products * 2 * 64 * units * units / (time.perf_counter() - start))
    return best


# --- training ---
def training_speeds(config: ChargenConfig, vocab: Vocabulary, ids_path: Path, num_ids: int, batches: int) -> dict:
    """chars/s of `fit` over our pipeline vs over NumPy arrays of the same windows (same model)."""
    from keras_chargen.training import compile_model

    dataset = stateful_dataset(ids_path, num_ids, vocab.id_dtype, config.batch_size, config.seq_len).take(batches)
    chars = batches * config.batch_size * config.seq_len
    results = {}
    for name in ("pipeline", "bare"):
        with PeakRSS() as rss:  # the model, the NumPy windows (bare) and the fits
            model = build_model(config, vocab.size, config.batch_size, stateful=True)
            compile_model(model, config, batches)
            if name == "pipeline":

                def fit(model=model):
                    model.fit(dataset, verbose=0, shuffle=False)
            else:
                x = np.concatenate([a.numpy() for a, _ in dataset])
                y = np.concatenate([b.numpy() for _, b in dataset])

                def fit(model=model, x=x, y=y):
                    model.fit(x, y, batch_size=config.batch_size, verbose=0, shuffle=False)

            results[name] = measure(fit, chars, repeats=1 if batches < 10 else 2)
        results[name]["rss_growth_mib"] = rss.growth_mib
    return results


def run_benchmarks(
    model_dir: str | Path | None,
    corpus: str | Path,
    quick: bool = False,
    out_dir: str | Path = "docs",
    log: Callable[[str], None] = print,
) -> dict:
    """Measure every mode; write `out_dir/BENCHMARKS.md` and `out_dir/benchmarks.png`; return the figures.

    Args:
        model_dir: a trained model directory, or None for an untrained default 2×512 LSTM over the
            corpus' vocabulary (speed does not depend on the weights' values).
        corpus: the text whose first characters are the prompt and whose ids feed the training runs.
        quick: fewer repetitions and training batches, and only the modes of its JSON line (no batch-64
            OneStep, XLA or TFLite runs); finishes within 5 minutes on 2 cores.
    """
    from keras_chargen.corpus import FileSource, prepare_corpus
    from keras_chargen.export import export_model
    from keras_chargen.export.runtimes import OnnxStep, TFLiteStep
    from keras_chargen.saving import CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE, load_model

    repeats, big_repeats, train_batches = (2, 1, 4) if quick else (5, 3, 30)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if model_dir is None:
            config = ChargenConfig()
            prepared = prepare_corpus(FileSource((Path(corpus),)), tmp / "data", config.val_fraction)
            model_dir = tmp / "model"
            model_dir.mkdir()
            config.save(model_dir / CONFIG_FILE)
            prepared.vocab.save(model_dir / VOCAB_FILE)
            build_model(config, prepared.vocab.size).save(model_dir / WEIGHTS_FILE)
        config, vocab, model = load_model(model_dir)
        prepared = prepare_corpus(FileSource((Path(corpus),)), tmp / "data", config.val_fraction, vocab)
        prompt = Path(corpus).read_text(encoding="utf-8")[:PROMPT_CHARS]
        prompt_ids = vocab.encode(prompt)
        generator = CharGenerator(model, vocab.tokens)

        log("generation: tutorial OneStep loop")
        tutorial = TutorialModel(config, vocab.size)
        tutorial(np.zeros((1, 1), np.int32))
        tutorial.set_weights(model.get_weights())
        one_step = OneStep(tutorial, vocab.tokens)
        results["onestep_b1"] = measure(lambda: onestep_loop(one_step, [prompt], NEW_CHARS), NEW_CHARS, repeats)
        if not quick:  # --quick measures only the modes its JSON line must report
            results["onestep_b64"] = measure(
                lambda: onestep_loop(one_step, [prompt] * 64, NEW_CHARS), 64 * NEW_CHARS, big_repeats
            )
        log("generation: Keras example (predict on the window per character)")
        window_chars = 20 if quick else 50
        results["keras_window_b1"] = measure(
            lambda: keras_window_loop(model, prompt_ids, window_chars, config.seq_len), window_chars, repeats
        )

        log("generation: in-graph")
        for batch in (1, 64):
            results[f"ingraph_b{batch}"] = measure(
                lambda batch=batch: generator.generate([prompt] * batch, 0.8, NEW_CHARS, seed=0),
                batch * NEW_CHARS,
                repeats if batch == 1 else big_repeats,
            )
        log("generation: in-graph with XLA")
        xla = xla_generator(generator, NEW_CHARS)
        for batch in (1,) if quick else (1, 64):
            ids = tf.constant(np.tile(prompt_ids, (batch, 1)), tf.int32)
            lengths = tf.fill([batch], len(prompt_ids))
            temps = tf.fill([batch], 0.8)
            try:
                results[f"ingraph_xla_b{batch}"] = measure(
                    lambda ids=ids, lengths=lengths, temps=temps: xla(
                        ids, lengths, temps, tf.constant(0, tf.int64)
                    ).numpy(),
                    batch * NEW_CHARS,
                    repeats if batch == 1 else big_repeats,
                )
            except Exception as err:  # report, do not abort the other measurements
                results[f"ingraph_xla_b{batch}"] = {"error": str(err).splitlines()[0][:200]}

        log("export: TFLite (fp32, dynamic int8) and ONNX")
        out = tmp / "exported"
        export_model(model_dir, out, "tflite")
        export_model(model_dir, out, "tflite", quantize="dynamic")
        export_model(model_dir, out, "onnx")
        steps = {
            "tflite_step_fp32": TFLiteStep(out / "tflite" / "1" / "step.tflite"),
            "tflite_step_int8": TFLiteStep(out / "tflite-dynamic" / "1" / "step.tflite"),
            "onnx_step": OnnxStep(out / "onnx" / "1" / "step.onnx"),
        }
        for name, step in steps.items():
            log(f"generation: {name}")
            results[f"{name}_b1"] = measure(
                lambda step=step: step_loop(step, prompt_ids, 1, NEW_CHARS), NEW_CHARS, repeats
            )
        if not quick:
            results["tflite_step_int8_b64"] = measure(
                lambda: step_loop(steps["tflite_step_int8"], prompt_ids, 64, NEW_CHARS), 64 * NEW_CHARS, big_repeats
            )
        log("generation: whole-loop TFLite and ONNX generators")
        results["tflite_generator_b1"] = measure(
            _tflite_generator(out / "tflite" / "1" / "generate.tflite", prompt_ids), NEW_CHARS, repeats
        )
        results["tflite_generator_int8_b1"] = measure(
            _tflite_generator(out / "tflite-dynamic" / "1" / "generate.tflite", prompt_ids), NEW_CHARS, repeats
        )
        results["onnx_generator_b1"] = measure(
            _onnx_generator(out / "onnx" / "1" / "generate.onnx", prompt_ids), NEW_CHARS, repeats
        )

        log("training: pipeline vs bare fit")
        train = training_speeds(config, vocab, prepared.train_path, prepared.num_train, train_batches)
        results["train_pipeline"], results["train_bare"] = train["pipeline"], train["bare"]

    log("machine: bandwidth and matmul FLOP/s")
    params = sum(int(np.prod(w.shape)) for w in model.weights)
    step_params = params - int(np.prod(model.get_layer("embedding").embeddings.shape))
    machine = {
        "weights_bandwidth_bytes_per_s": weights_bandwidth(4 * step_params),
        "dram_bandwidth_bytes_per_s": memory_bandwidth(),
        "matmul_flops": matmul_flops(config.units),
        "params": params,
        "weight_bytes_per_step_fp32": 4 * step_params,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    report = {
        "config": {
            "cell": config.cell,
            "layers": config.num_layers,
            "units": config.units,
            "vocab": vocab.size,
            "seq_len": config.seq_len,
            "batch_size": config.batch_size,
        },
        "quick": quick,
        "results": results,
        "machine": machine,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_report(report, out_dir)
    return report


def _tflite_generator(path: Path, prompt_ids: np.ndarray) -> Callable[[], object]:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path), num_threads=2).get_signature_runner("generate")
    feeds = {
        "prompt_ids": prompt_ids[None].astype(np.int32),
        "temperature": np.array([0.8], np.float32),
        "num_chars": np.array(NEW_CHARS, np.int32),
    }
    return lambda: runner(**feeds)


def _onnx_generator(path: Path, prompt_ids: np.ndarray) -> Callable[[], object]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {
        "prompt_ids": prompt_ids[None].astype(np.int32),
        "temperature": np.array([0.8], np.float32),
        "num_chars": np.array(NEW_CHARS, np.int32),
    }
    return lambda: session.run(None, feeds)


def chars_per_second(report: dict) -> dict[str, float]:
    """`{mode: median chars/s}` for the modes that ran."""
    return {k: round(v["median"], 1) for k, v in report["results"].items() if "median" in v}


# issue-6 speed targets: (what, modes whose best median counts, ratio to onestep_b1)
SPEED_TARGETS = [
    ("in-graph generation (what the SavedModel runs), batch 1", ("ingraph_b1",), 5.0),
    ("in-graph generation, batch 64, plain or XLA, whichever wins", ("ingraph_b64", "ingraph_xla_b64"), 20.0),
    ("TFLite int8 step loop, batch 1", ("tflite_step_int8_b1",), 10.0),
    ("TFLite whole generator, fp32, batch 1", ("tflite_generator_b1",), 7.0),
    ("TFLite whole generator, dynamic-range int8, batch 1", ("tflite_generator_int8_b1",), 7.0),
]


def target_rows(results: dict) -> list[tuple[str, float, float, bool]]:
    """`(what, measured ratio to onestep_b1, target ratio, met)` for each speed target that was measured."""
    base = results["onestep_b1"]["median"]
    rows = []
    for what, modes, target in SPEED_TARGETS:
        medians = [results[m]["median"] for m in modes if "median" in results.get(m, {})]
        if medians:
            rows.append((what, max(medians) / base, target, max(medians) / base >= target))
    if "median" in results.get("train_pipeline", {}) and "median" in results.get("train_bare", {}):
        ratio = results["train_pipeline"]["median"] / results["train_bare"]["median"]
        rows.append(("training: our pipeline vs a bare fit on in-memory arrays", ratio, 0.9, ratio >= 0.9))
    return rows


def write_report(report: dict, out_dir: Path) -> None:
    """`BENCHMARKS.md` (tables, targets, rooflines) and `benchmarks.png` (bar chart) in `out_dir`."""
    results, machine = report["results"], report["machine"]
    base = results["onestep_b1"]["median"]
    weight_bytes = machine["weight_bytes_per_step_fp32"]
    roof_b1 = machine["weights_bandwidth_bytes_per_s"] / weight_bytes
    flops_per_char = 2 * weight_bytes / 4
    cfg = report["config"]
    lines = [
        "# Benchmarks",
        "",
        f"Model: {cfg['layers']}×{cfg['units']} {cfg['cell'].upper()}, vocabulary {cfg['vocab']} "
        f"({machine['params']:,} parameters). Generation: {NEW_CHARS} new characters after a "
        f"{PROMPT_CHARS}-character prompt (priming included), temperature 0.8; chars/s summed over rows. "
        "Median of the runs after a warm-up run, with min–max.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}; reading a matrix the size of the step "
        f"weights ({weight_bytes / 1e6:.1f} MB, BLAS matrix-vector product, all cores) "
        f"{machine['weights_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s; DRAM (256 MiB copy) "
        f"{machine['dram_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s; float32 matmul (independent batch-64 "
        f"per-gate products, as the batch-64 loop multiplies) {machine['matmul_flops'] / 1e9:.1f} GFLOP/s; "
        "peak RSS of the benchmark process "
        f"{machine['peak_rss_mib']:.0f} MiB.",
        "",
        "Reproduce: `keras-chargen bench --text ../shared/data/tinyshakespeare.txt"
        f"{' --quick' if report['quick'] else ''}` (or `python scripts/bench.py ...`).",
        "",
        "| mode | chars/s (median) | min–max | × tutorial OneStep (b1) | of roofline |",
        "|---|---|---|---|---|",
    ]
    for name, value in results.items():
        if "median" not in value:
            lines.append(f"| {name} | did not run: {value['error']} | | | |")
            continue
        roof = ""
        if name.endswith("_b1") and not name.startswith(("onestep", "keras")):
            roof = f"{value['median'] / (roof_b1 * (4 if 'int8' in name else 1)):.0%} of the weight-read bound"
        elif name.endswith("_b64") and "int8" not in name:  # int8 kernels are not bound by the fp32 rate
            roof = f"{value['median'] * flops_per_char / machine['matmul_flops']:.0%} of matmul FLOP/s"
        lines.append(
            f"| {name} | {value['median']:,.0f} | {value['min']:,.0f}–{value['max']:,.0f} | "
            f"{value['median'] / base:.1f}× | {roof} |"
        )
    lines += [
        "",
        "Speed targets (ratios to `onestep_b1` measured in this run):",
        "",
        "| target | measured | target | |",
        "|---|---|---|---|",
    ]
    for what, ratio, target, met in target_rows(results):
        lines.append(f"| {what} | {ratio:.2f}× | ≥ {target:g}× | {'met' if met else '**missed**'} |")
    lines += [
        "",
        f"Batch-1 roofline: each character reads all {weight_bytes / 1e6:.1f} MB of float32 step weights "
        f"(recurrent layers + output layer), so reading them as fast as this machine's BLAS reads a matrix "
        f"of that size caps fp32 generation at {roof_b1:,.0f} chars/s ({4 * roof_b1:,.0f} for int8 weights, "
        "a quarter of the bytes). Caches can keep part of the weights between characters (a mode may "
        f"pass 100 %); DRAM alone would cap it at "
        f"{machine['dram_bandwidth_bytes_per_s'] / 2 / weight_bytes:,.0f} chars/s (a copy moves each byte "
        f"twice). Batch 64 is compute-bound: {flops_per_char / 1e6:.1f} MFLOP per character against the "
        "measured matmul rate.",
        "",
        "Training (`train_*`): chars/s of `fit` on the same windows and model, our stateful `tf.data` "
        "pipeline vs NumPy arrays in memory. Peak resident memory above the process's at the start of "
        "each (model, windows, fits): "
        + ", ".join(
            f"{name} +{results[name]['rss_growth_mib']:,.0f} MiB"
            for name in ("train_pipeline", "train_bare")
            if results.get(name, {}).get("rss_growth_mib") is not None
        )
        + ". Both run in the benchmark process after the generation runs, whose allocations TF keeps "
        "and reuses, so these are lower bounds; docs/memory.md has training on a 100 MB corpus in a "
        "fresh process.",
        "",
        "Profile: where a batch-1 step goes, the weight layout the in-graph loop uses, why a missed target "
        "is missed and why XLA is not on by default (it recompiles for every new batch size, prompt length "
        "and output length, and TF Serving runs XLA only behind an experimental flag): "
        "[profile.md](profile.md).",
        "",
        "![chars/s per mode](benchmarks.png)",
    ]
    (out_dir / "BENCHMARKS.md").write_text("\n".join(lines) + "\n")
    _plot(results, out_dir / "benchmarks.png")
    (out_dir / "benchmarks.json").write_text(json.dumps(report, indent=2) + "\n")


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, v in results.items() if "median" in v]
    values = [results[n]["median"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) + 1.2))
    colors = [
        "tab:orange" if n.startswith("train") else "tab:gray" if n.startswith(("onestep", "keras")) else "tab:blue"
        for n in names
    ]
    ax.barh(names, values, color=colors)
    ax.set_xscale("log")
    ax.set_xlabel("characters per second (log scale)")
    ax.invert_yaxis()
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:,.0f}", va="center", fontsize=8)
    ax.set_title("Generation and training speed (grey: reference approaches)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

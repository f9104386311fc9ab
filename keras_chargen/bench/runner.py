"""The benchmark runner: generation and training speed against the reference approaches, on one machine, in one run.

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
  int8), the whole loop in the interpreter (temperature 0.8); `tflite_generator_int8_topk_topp` the int8
  one with top-k 40 and top-p 0.9;
- `onnx_step` / `onnx_generator`: the same with `step.onnx` / `generate.onnx` in onnxruntime.

Training: our stateful `tf.data` pipeline + `fit` against `fit` on in-memory NumPy arrays of the
same windows. Plus, for the rooflines, the bandwidth at which this machine reads a matrix the size
of the step weights (batch 1 is bound by reading them once per character), its DRAM bandwidth and
its float32 matmul FLOP/s (batch 64 is compute-bound).
"""

from __future__ import annotations

import functools
import resource
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_chargen.bench.reference import (
    NEW_CHARS,
    PROMPT_CHARS,
    OneStep,
    TutorialModel,
    keras_window_loop,
    onestep_loop,
    step_loop,
    xla_generator,
)
from keras_chargen.bench.report import write_report
from keras_chargen.config import ChargenConfig
from keras_chargen.data import stateful_dataset
from keras_chargen.generation import CharGenerator
from keras_chargen.model import build_model
from keras_chargen.vocab import Vocabulary


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

    start_mib: float | None = None
    peak_mib: float | None = None

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


def matmul_flops(
    units: int = 512, products: int = 12, iterations: int = 200, batch: int = 64, width: int = 1, dtype=tf.float32
) -> float:
    """FLOP/s of float32 matmul as the batch-64 generation loop multiplies, best of 3.

    `products` independent `(64, units) @ (units, units)` products per iteration: the per-gate
    products of a 2×`units` LSTM step (`RecurrentStep.loop_weights`), with no dependency between
    them, so TF can spread them over its threads as far as it can: an upper bound for the loop.
    `batch`, `width` and `dtype` give other shapes: `(batch, units) @ (units, width * units)` in `dtype`
    (the recurrent product of a training step is `width=4`).
    """
    a = tf.cast(tf.random.normal([batch, units]), dtype)
    kernels = [tf.cast(tf.random.normal([units, width * units]), dtype) for _ in range(products)]

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
        best = max(best, iterations * products * 2 * batch * width * units * units / (time.perf_counter() - start))
    return best


def training_flops_per_char(config: ChargenConfig, vocab_size: int) -> float:
    """Matrix-product FLOPs to train on one character: 3× the forward products (forward, and the two
    products of the backward pass), forward = 2 × (every recurrent layer's input and recurrent kernel
    + the output layer's kernel)."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[config.cell]
    forward, inputs = 0, config.embedding_dim
    for _ in range(config.num_layers):
        forward += 2 * (inputs + config.units) * gates * config.units
        inputs = config.units
    return 3 * (forward + 2 * config.units * vocab_size)


def recommended_training(vocab: Vocabulary, ids_path: Path, num_ids: int, batches: int) -> dict:
    """chars/s of `fit` over our pipeline for the recommended model (`keras_chargen.recommended`), its
    FLOP rate and its fraction of the matmul rate measured at its shapes (float32; and bfloat16 where
    its precision resolves to `mixed_bfloat16`)."""
    from keras_chargen.precision import resolve_precision
    from keras_chargen.recommended import recommended_config
    from keras_chargen.training import compile_model

    config = recommended_config()
    policy = resolve_precision(config.precision)
    dataset = stateful_dataset(ids_path, num_ids, vocab.id_dtype, config.batch_size, config.seq_len).take(batches)
    model = build_model(config, vocab.size, config.batch_size, stateful=True, policy=policy)
    compile_model(model, config, batches)
    chars = batches * config.batch_size * config.seq_len
    result = measure(functools.partial(model.fit, dataset, verbose=0, shuffle=False), chars, repeats=2)
    flops = training_flops_per_char(config, vocab.size)
    shape = {"products": 4, "iterations": 25, "batch": config.batch_size, "width": 4}
    rates = {"float32": matmul_flops(config.units, **shape)}
    if policy == "mixed_bfloat16":
        rates["bfloat16"] = matmul_flops(config.units, **shape, dtype=tf.bfloat16)
    result.update(
        settings=f"{config.num_layers}×{config.units} {config.cell.upper()}, batch {config.batch_size}, "
        f"seq {config.seq_len}, {policy}",
        policy=policy,
        flops_per_char=flops,
        flops_per_s=result["median"] * flops,
        matmul_flops=rates,
        fraction_of_matmul={name: result["median"] * flops / rate for name, rate in rates.items()},
    )
    return result


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
                fit = functools.partial(model.fit, dataset, verbose=0, shuffle=False)
            else:
                x = np.concatenate([a.numpy() for a, _ in dataset])
                y = np.concatenate([b.numpy() for _, b in dataset])
                fit = functools.partial(model.fit, x, y, batch_size=config.batch_size, verbose=0, shuffle=False)

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
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
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
                functools.partial(generator.generate, [prompt] * batch, 0.8, NEW_CHARS, seed=0),
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
                    functools.partial(xla, ids, lengths, temps, tf.constant(0, tf.int64)),
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
                functools.partial(step_loop, step, prompt_ids, 1, NEW_CHARS), NEW_CHARS, repeats
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
        results["tflite_generator_int8_topk_topp_b1"] = measure(
            _tflite_generator(out / "tflite-dynamic" / "1" / "generate.tflite", prompt_ids, top_k=40, top_p=0.9),
            NEW_CHARS,
            repeats,
        )
        results["onnx_generator_b1"] = measure(
            _onnx_generator(out / "onnx" / "1" / "generate.onnx", prompt_ids), NEW_CHARS, repeats
        )

        log("training: pipeline vs bare fit")
        train = training_speeds(config, vocab, prepared.train_path, prepared.num_train, train_batches)
        results["train_pipeline"], results["train_bare"] = train["pipeline"], train["bare"]
        log("training: the recommended model (README's 10-minute settings)")
        results["train_recommended"] = recommended_training(
            vocab, prepared.train_path, prepared.num_train, max(2, train_batches // 2)
        )

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


def _generator_inputs(prompt_ids: np.ndarray, **settings) -> dict[str, np.ndarray]:
    from keras_chargen.export.runtimes import generate_inputs

    return generate_inputs([prompt_ids.tolist()], NEW_CHARS, 0.8, seed=0, **settings)


def _tflite_generator(path: Path, prompt_ids: np.ndarray, **settings) -> Callable[[], object]:
    from keras_chargen.export.runtimes import TFLiteGenerator

    generator, feeds = TFLiteGenerator(path), _generator_inputs(prompt_ids, **settings)
    return lambda: generator(**feeds)


def _onnx_generator(path: Path, prompt_ids: np.ndarray, **settings) -> Callable[[], object]:
    from keras_chargen.export.runtimes import OnnxGenerator

    generator, feeds = OnnxGenerator(path), _generator_inputs(prompt_ids, **settings)
    return lambda: generator(**feeds)

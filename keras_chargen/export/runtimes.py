"""Reference Python clients for the exported id-level artifacts, in their real runtimes.

`TFLiteGenerator` and `OnnxGenerator` run the whole `generate` graph (inputs from `generate_inputs`).
`TFLiteStep` (LiteRT interpreter) and `OnnxStep` (onnxruntime) share one interface:
`step(ids, states) -> (logits, states)` on numpy arrays, so a client loop (`greedy_ids`) and the
quality check (`bits_per_char`) run unchanged over either, or over the Keras `RecurrentStep`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

StepFn = Callable[[np.ndarray, list[np.ndarray]], tuple[np.ndarray, list[np.ndarray]]]


class TFLiteStep:
    """`step.tflite` in the LiteRT interpreter, by the names of its `step` signature.

    A signature runner resizes and allocates every input at every call (~35 µs of the ~85 µs of an
    int8 2×512 step here); this client resizes only when the batch size changes and otherwise sets
    the inputs and invokes the interpreter directly (public `Interpreter` calls only).

    Args:
        path: str | Path, a `step.tflite`.
        num_threads: int, interpreter threads. Default 2.

    Example:
    >>> step = TFLiteStep("exported/tiny/tflite/1/step.tflite")  # doctest: +SKIP
    >>> logits, states = step(np.array([5], np.int32), step.initial_states(1))  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, num_threads: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        runner = self.interpreter.get_signature_runner("step")  # for the names; it must not outlive this
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        del runner  # the interpreter refuses to resize or invoke while a runner holds it
        self.state_names = state_order([n for n in inputs if n != "ids"])
        self.state_sizes = [int(inputs[n]["shape_signature"][1]) for n in self.state_names]
        self._inputs = [inputs[n]["index"] for n in ["ids", *self.state_names]]
        self._outputs = [outputs[n]["index"] for n in ["logits", *self.state_names]]
        self._batch = None  # the batch size the tensors are allocated for

    def initial_states(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, size), np.float32) for size in self.state_sizes]

    def __call__(self, ids: np.ndarray, states: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        values = [np.asarray(ids, np.int32), *(np.asarray(s, np.float32) for s in states)]
        if values[0].shape[0] != self._batch:
            for index, value in zip(self._inputs, values):
                self.interpreter.resize_tensor_input(index, value.shape)
            self.interpreter.allocate_tensors()
            self._batch = values[0].shape[0]
        for index, value in zip(self._inputs, values):
            self.interpreter.set_tensor(index, value)
        self.interpreter.invoke()
        logits, *states = [self.interpreter.get_tensor(index) for index in self._outputs]
        return logits, states


class OnnxStep:
    """`step.onnx` in onnxruntime (inputs `ids, h_0, …`, outputs `logits, new_h_0, …`).

    Args:
        path: str | Path, a `step.onnx`.
        num_threads: int, intra-op threads. Default 2.
    """

    def __init__(self, path: str | Path, num_threads: int = 2) -> None:
        self.session = onnx_session(path, num_threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.state_names = json.loads(meta["state_names"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.state_sizes = [int(inputs[n].shape[1]) for n in self.state_names]
        self.vocabulary = json.loads(meta["vocabulary"])["tokens"]

    def initial_states(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, size), np.float32) for size in self.state_sizes]

    def __call__(self, ids: np.ndarray, states: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        outputs = ["logits"] + [f"new_{name}" for name in self.state_names]
        feeds = {"ids": np.asarray(ids, np.int32), **dict(zip(self.state_names, states))}
        logits, *new_states = self.session.run(outputs, feeds)
        return logits, new_states


GENERATE_INPUTS = (
    "prompt_ids",
    "max_new_chars",
    "temperature",
    "seed",
    "top_k",
    "top_p",
    "repetition_penalty",
    "stop_ids",
)


def generate_inputs(
    prompt_ids: Sequence[Sequence[int]],
    max_new_chars: int,
    temperature: float | Sequence[float] = 0.8,
    seed: int | Sequence[int] = 0,
    top_k: int | Sequence[int] = 0,
    top_p: float | Sequence[float] = 1.0,
    repetition_penalty: float | Sequence[float] = 1.0,
    stop_ids: Sequence[Sequence[int]] | None = None,
) -> dict[str, np.ndarray]:
    """The `generate` inputs of the TFLite / ONNX generators from Python values (off values by default).

    Prompts are right-padded with 0; a single value is repeated per row, except `seed`: one seed
    seeds row i with seed + i (mod 2**31), as the SavedModel and the Python API do.
    """
    rows = len(prompt_ids)
    width = max([len(p) for p in prompt_ids] + [1])
    padded = np.zeros((rows, width), np.int32)
    for i, ids in enumerate(prompt_ids):
        padded[i, : len(ids)] = ids

    def per_row(value, dtype):
        return np.broadcast_to(np.asarray(value, dtype), [rows]).copy()

    seeds = np.asarray(seed, np.int64)
    if seeds.ndim == 0:  # one seed for every row: row i draws with seed + i
        seeds = (seeds + np.arange(rows)) % 2**31
    stops = [list(s) for s in (stop_ids or [[0]] * rows)]
    stop_width = max(len(s) for s in stops + [[0]])
    return {
        "prompt_ids": padded,
        "max_new_chars": np.array(max_new_chars, np.int32),
        "temperature": per_row(temperature, np.float32),
        "seed": seeds.astype(np.int32),
        "top_k": per_row(top_k, np.int32),
        "top_p": per_row(top_p, np.float32),
        "repetition_penalty": per_row(repetition_penalty, np.float32),
        "stop_ids": np.array([s + [0] * (stop_width - len(s)) for s in stops], np.int32),
    }


class TFLiteGenerator:
    """`generate.tflite` in the LiteRT interpreter: `__call__(**generate_inputs(...))` → ids `(batch, max_new_chars)`.

    Args:
        path: str | Path, a `generate.tflite`.
        num_threads: int, interpreter threads. Default 2.
    """

    def __init__(self, path: str | Path, num_threads: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.runner = Interpreter(model_path=str(path), num_threads=num_threads).get_signature_runner("generate")

    def __call__(self, **inputs: np.ndarray) -> np.ndarray:
        return self.runner(**inputs)["ids"]


class OnnxGenerator:
    """`generate.onnx` in onnxruntime: `__call__(**generate_inputs(...))` → ids `(batch, max_new_chars)`.

    Args:
        path: str | Path, a `generate.onnx`.
        num_threads: int, intra-op threads. Default 2.
    """

    def __init__(self, path: str | Path, num_threads: int = 2) -> None:
        self.session = onnx_session(path, num_threads)

    def __call__(self, **inputs: np.ndarray) -> np.ndarray:
        return self.session.run(["ids"], inputs)[0]


def ids_before_stop(row: np.ndarray) -> list[int]:
    """A `generate` output row without its padding: the ids before the first 0."""
    row = np.asarray(row)
    zeros = np.flatnonzero(row == 0)
    return row[: zeros[0] if zeros.size else len(row)].tolist()


def state_order(names: list[str]) -> list[str]:
    """`h_0, c_0, h_1, c_1, …`: by layer, h before c (signature runners list inputs alphabetically)."""
    return sorted(names, key=lambda n: (int(n.split("_")[1]), n[0] != "h"))


def greedy_ids(step: StepFn, initial_states: list[np.ndarray], prompt_ids: Sequence[int], num_chars: int) -> list[int]:
    """Greedy continuation of one prompt with a Python loop over `step` (OOV id 0 never chosen)."""
    states = initial_states
    for i in prompt_ids:
        logits, states = step(np.array([i], np.int32), states)
    out = []
    for _ in range(num_chars):
        scores = np.array(logits[0], np.float64)
        scores[0] = -np.inf
        out.append(int(np.argmax(scores)))
        logits, states = step(np.array([out[-1]], np.int32), states)
    return out


def stream_matrix(ids: np.ndarray, streams: int) -> np.ndarray:
    """Cut `ids` into `streams` contiguous rows of equal length `(streams, length + 1)`; row i+1 starts where i ends."""
    length = (len(ids) - 1) // streams
    if length < 1:
        raise ValueError(f"{len(ids)} ids are too few for {streams} streams")
    return np.stack([ids[i * length : i * length + length + 1] for i in range(streams)])


def cross_entropy_bits(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean cross-entropy in bits of `logits (..., vocab)` against `targets (...)`."""
    logits = logits.astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
    picked = np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return float((log_z - picked).mean() / math.log(2.0))


def bits_per_char(step: StepFn, initial_states: list[np.ndarray], ids: np.ndarray, streams: int = 16) -> float:
    """Bits/char of next-character prediction over `ids`, read as `streams` parallel streams, state carried."""
    matrix = stream_matrix(np.asarray(ids), streams)
    states, logits = initial_states, []
    for t in range(matrix.shape[1] - 1):
        step_logits, states = step(matrix[:, t].astype(np.int32), states)
        logits.append(step_logits)
    return cross_entropy_bits(np.stack(logits, axis=1), matrix[:, 1:])


def onnx_session(path: str | Path, num_threads: int = 2) -> Any:
    """An onnxruntime CPU session of the file at `path` with `num_threads` intra-op threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

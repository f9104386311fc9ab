"""Reference Python clients for the exported id-level artifacts, in their real runtimes.

`TFLiteGenerator` and `OnnxGenerator` run the whole `generate` graph: `generate_text` (text in, text
out, with the vocabulary beside the file and the Python twin of the level's codec, `TextCodec`), or
`run` / `__call__` on ids (inputs from `generate_inputs`). No TensorFlow is loaded, except to split
words for a word-level model (the tokenizer's rules run as TF string ops).
`TFLiteStep` (LiteRT interpreter) and `OnnxStep` (onnxruntime) share one interface:
`step(ids, states) -> (logits, states)` on numpy arrays, so a client loop (`greedy_ids`) and the
quality check (`bits_per_char`) run unchanged over either, or over the Keras `RecurrentStep`.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_chargen import contract
from keras_chargen.errors import ChargenError
from keras_chargen.settings import (
    BY_NAME,
    SEED_MAX,
    check_api,
    check_generation_args,
    check_stops,
    expand_temperatures,
)
from keras_chargen.vocab import Vocabulary

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
        self.state_names = contract.state_order([n for n in inputs if contract.is_state(n)])
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
        self.state_names = json.loads(meta[contract.ONNX_STATE_NAMES])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.state_sizes = [int(inputs[n].shape[1]) for n in self.state_names]
        self.vocabulary = json.loads(meta[contract.ONNX_VOCABULARY])["tokens"]

    def initial_states(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, size), np.float32) for size in self.state_sizes]

    def __call__(self, ids: np.ndarray, states: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        outputs = [contract.onnx_output_name(contract.STEP, name) for name in ["logits", *self.state_names]]
        feeds = {"ids": np.asarray(ids, np.int32), **dict(zip(self.state_names, states))}
        logits, *new_states = self.session.run(outputs, feeds)
        return logits, new_states


GENERATE_INPUTS = tuple(contract.GENERATE.input_names)
# The settings `generate_text` turns into inputs itself; the others go to `generate_inputs` by name.
SPELLED_OUT = ("temperature", "max_new_chars", "seed", "stop")


def generate_inputs(
    prompt_ids: Sequence[Sequence[int]],
    max_new_chars: int,
    temperature: float | Sequence[float] = 0.8,
    seed: int | Sequence[int] = 0,
    stop_ids: Sequence[Sequence[Sequence[int]]] | None = None,
    **settings: float | Sequence[float],
) -> dict[str, np.ndarray]:
    """The `generate` inputs of the TFLite / ONNX generators from Python values (`contract.GENERATE`).

    Prompts are right-padded with 0 (a negative id is `[UNK]`). `settings`: the other settings by
    name (`top_k`, `top_p`, `repetition_penalty`), off by default. A single value is repeated per
    row, except `seed`: one seed goes in as `[seed]` and the graph seeds row i with seed + i (mod
    2**31); a negative seed makes the graph draw one per row. `stop_ids`: per row, a list of stop
    sequences (lists of ids), padded to `[batch, n, s]` with 0.
    """
    rows = len(prompt_ids)
    width = max([len(p) for p in prompt_ids] + [1])
    padded = np.zeros((rows, width), np.int32)
    for i, ids in enumerate(prompt_ids):
        padded[i, : len(ids)] = ids
    stops = [[list(seq) for seq in row] or [[]] for row in (stop_ids or [[[]]] * rows)]
    if len(stops) != rows:
        raise ValueError(f"got stop sequences for {len(stops)} rows; there are {rows} prompts")
    stop_array = np.zeros((rows, max(len(r) for r in stops), max([len(q) for r in stops for q in r] + [1])), np.int32)
    for i, row in enumerate(stops):
        for j, seq in enumerate(row):
            stop_array[i, j, : len(seq)] = seq
    values = {
        "prompt_ids": padded,
        "max_new_chars": np.array(max_new_chars, np.int32),
        "seed": np.asarray(seed, np.int32).reshape(-1),  # [1]: the graph spreads it over the rows
        "stop_ids": stop_array,
    }
    per_row = {**settings, "temperature": temperature}
    for tensor in contract.GENERATE.inputs:
        if tensor.name not in values:
            value = per_row.pop(tensor.name, BY_NAME[tensor.name].off)
            values[tensor.name] = np.broadcast_to(np.asarray(value, tensor.dtype), [rows]).copy()
    if per_row:
        raise ValueError(
            f"unknown settings {sorted(per_row)}; generate takes {', '.join(contract.GENERATE.input_names)}"
        )
    return {name: values[name] for name in GENERATE_INPUTS}


class TextCodec:
    """The Python twin of the level's in-graph codec (`keras_chargen.codecs`), for the id-level runtimes.

    Prompts and stop strings to ids and generated ids to text exactly as the SavedModel does it:
    unknown characters are skipped, unknown words are `[UNK]` (fed as -1, so that a trailing one is
    not read as padding); a stop string with an unknown token never matches; words are detokenized
    by the rules of `keras_chargen.tokenizer`, document markers add no text.

    Args:
        vocab: Vocabulary, the model's (`vocab.json` beside the exported file).
    """

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.markers = {m for m in (vocab.document_start, vocab.document_end) if m is not None}
        self.start_id = vocab.token_id("\n")  # an empty prompt is primed on a newline (0 if there is none)

    def prompt_ids(self, prompt: str) -> list[int]:
        """The ids to feed for `prompt` (unknown characters dropped, unknown words -1)."""
        ids = self.vocab.encode(prompt).tolist()
        if self.vocab.level == "char":
            return [i for i in ids if i > 0]
        return [i if i > 0 else -1 for i in ids]

    def primed_last(self, prompt_ids: Sequence[int]) -> int:
        """The last id a row is primed on (the first generated token follows it)."""
        if prompt_ids:
            return max(prompt_ids[-1], 0)
        return self.vocab.document_start if self.vocab.document_start is not None else self.start_id

    def stop_sequence(self, stop: str) -> list[int]:
        """The ids of a stop string; [] (unused) if it is empty or has a token outside the vocabulary."""
        ids = self.vocab.encode(stop).tolist()
        return ids if ids and min(ids) > 0 else []

    def _spacing(self, token_id: int) -> str:
        """The token that decides the spaces around `token_id` (a marker spaces as a newline)."""
        if token_id in self.markers:
            return "\n"
        return self.vocab.tokens[token_id - 1] if token_id > 0 else "[UNK]"

    def text(self, prev_id: int, ids: Sequence[int], prompt: str) -> str:
        """The continuation text of generated `ids` (without padding) following `prompt`, whose last id is `prev_id`."""
        from keras_chargen.tokenizer import joins_without_space

        pieces = []
        for token_id in ids:
            if token_id not in self.markers:
                token = self.vocab.tokens[token_id - 1]
                joined = self.vocab.level == "char" or joins_without_space(self._spacing(prev_id), token)
                pieces.append(token if joined else " " + token)
            prev_id = token_id
        text = "".join(pieces)
        # as `WordCodec.finish`: no second space after a prompt that ends in one (RE2's \s)
        if self.vocab.level == "word" and prompt[-1:] in tuple("\t\n\f\r ") and text.startswith(" "):
            text = text[1:]
        return text


class _IdGeneratorClient:
    """What the TFLite and ONNX generators share: `run` on ids, `generate_text` on strings."""

    path: Path

    @functools.cached_property
    def vocab(self) -> Vocabulary:
        """The `vocab.json` beside the file."""
        return Vocabulary.load(self.path.parent / contract.VOCAB_FILE)

    def run(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """`{"ids": (batch, max_new_chars), "seed": (batch,)}` from `generate_inputs(...)`."""
        raise NotImplementedError

    def __call__(self, **inputs: np.ndarray) -> np.ndarray:
        """The ids `(batch, max_new_chars)` of `run`."""
        return self.run(**inputs)["ids"]

    def generate_text(
        self,
        prompts: str | Sequence[str],
        max_new_chars: int,
        *,
        temperature: float | Sequence[float] = 0.8,
        seed: int | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        stop: str | Sequence[str] | None = None,
        **settings: Any,
    ) -> list[str]:
        """The continuation of each prompt (without the prompt, as `serving_default`'s `generated`).

        The same arguments, defaults and text as `CharGenerator.generate` with `oov="skip"` (characters)
        or `"unk"` (words), as the SavedModel does it: one seed for several rows seeds row i with
        seed + i; None draws one per row (in Python, see `generate_text_with_seeds`); `stop` is one
        stop string or several; `settings`: any other setting of `keras_chargen.settings`, by name.
        """
        arguments = {k: v for k, v in locals().items() if k not in ("self", "settings")}
        return self.generate_text_with_seeds(**arguments, **settings)[0]

    def generate_text_with_seeds(
        self,
        prompts: str | Sequence[str],
        max_new_chars: int,
        *,
        temperature: float | Sequence[float] = 0.8,
        seed: int | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        stop: str | Sequence[str] | None = None,
        **settings: Any,
    ) -> tuple[list[str], list[int]]:
        """`generate_text`, and the seed each row used: `(texts, seeds)`.

        A seed of None is drawn here with NumPy (onnxruntime seeds its random ops once per process,
        so two sessions of one process would draw the same seeds); the graph itself draws for a
        negative `seed` input (`run`).
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        prompts = expand_temperatures(prompts, temperature)
        temps = check_generation_args(prompts, temperature, max_new_chars, seed)
        codec = TextCodec(self.vocab)
        rows = len(prompts)
        if seed is None:
            seeds = np.random.default_rng().integers(0, SEED_MAX + 1, size=rows).tolist()  # as the graphs draw
        else:
            seeds = [(seed + i) % 2**31 for i in range(rows)]
        if max_new_chars == 0:  # LiteRT cannot return an empty tensor
            return [""] * rows, seeds
        prompt_ids = [codec.prompt_ids(p) for p in prompts]
        stops = [codec.stop_sequence(s) for s in check_stops(stop)]
        given = {**{k: v for k, v in locals().items() if k in BY_NAME}, **settings}
        unknown = sorted(set(given) - set(BY_NAME))
        if unknown:
            raise ChargenError(f"unknown settings {', '.join(unknown)}; the settings are {', '.join(BY_NAME)}")
        settings = {name: check_api(name, given.get(name)) for name in BY_NAME if name not in SPELLED_OUT}
        inputs = generate_inputs(prompt_ids, max_new_chars, temps, seeds, [stops] * rows, **settings)
        out = self.run(**inputs)
        texts = [
            codec.text(codec.primed_last(ids), ids_before_stop(row), prompt)
            for ids, row, prompt in zip(prompt_ids, out["ids"], prompts)
        ]
        return texts, out["seed"].tolist()


class TFLiteGenerator(_IdGeneratorClient):
    """`generate.tflite` in the LiteRT interpreter: `generate_text(prompts, ...)`, or `run(**generate_inputs(...))`.

    Args:
        path: str | Path, a `generate.tflite` (with `vocab.json` beside it for `generate_text`).
        num_threads: int, interpreter threads. Default 2.

    Example:
    >>> generator = TFLiteGenerator("exported/tiny/tflite/1/generate.tflite")  # doctest: +SKIP
    >>> generator.generate_text(["ROMEO:"], 100, temperature=0.8, seed=1, stop=["\n\n", "JULIET:"])  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, num_threads: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.runner = Interpreter(model_path=str(path), num_threads=num_threads).get_signature_runner("generate")

    def run(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.runner(**inputs)
        return {name: outputs[name] for name in contract.GENERATE.output_names}


class OnnxGenerator(_IdGeneratorClient):
    """`generate.onnx` in onnxruntime: `generate_text(prompts, ...)`, or `run(**generate_inputs(...))`.

    Args:
        path: str | Path, a `generate.onnx` (with `vocab.json` beside it for `generate_text`).
        num_threads: int, intra-op threads. Default 2.
    """

    def __init__(self, path: str | Path, num_threads: int = 2) -> None:
        self.path = Path(path)
        self.session = onnx_session(path, num_threads)

    def run(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        names = contract.GENERATE.output_names
        values = self.session.run([contract.onnx_output_name(contract.GENERATE, n) for n in names], inputs)
        return dict(zip(names, values))


def ids_before_stop(row: np.ndarray) -> list[int]:
    """A `generate` output row without its padding: the ids before the first 0."""
    row = np.asarray(row)
    zeros = np.flatnonzero(row == 0)
    return row[: zeros[0] if zeros.size else len(row)].tolist()


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

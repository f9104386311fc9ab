"""The inspection pass: what the model expected at each position of a text, and what its cells did.

For every position of a text (a character, or a word at the word level): the probability the model
gave to the token that is actually there, its surprisal in bits (`-log2 p`), the top alternatives,
and the activations of every recurrent layer: `h`, an LSTM's cell state `c` and its input, forget
and output gates `i, f, o` (a GRU: `h` and its update and reset gates `z, r`; a SimpleRNN: `h`),
read through the model's one-step form (`RecurrentStep`, what generation and every export run).
The text is read as one stream from the zero state, so the first position has no prediction.

`Inspector` is the graph. The Python API, `inspect_text`, runs it over a text chunk by chunk with
the state carried, so a long text (or a stream of text) takes bounded memory: the statistics (bits
per character, the cells that follow each feature of `keras_chargen.cell_features`, gate saturation)
cover every position, the details (alternatives, activations) the first `max_positions`. The
SavedModel's `inspect` signature runs it over whole texts (`Inspector.inspect`), and its
`explain_sampling` signature (`Inspector.explain_sampling`) shows the next-token distribution
before and after each sampling setting; both are named in `keras_chargen.contract`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from keras_chargen import contract, decoding
from keras_chargen.cell_features import FEATURES, CellMatch, Correlations, FeatureTracker, best_cells, ranked_cells
from keras_chargen.errors import ChargenError
from keras_chargen.generation import CharGenerator, in_graph_checks
from keras_chargen.sampling import sampling_settings, stage_probabilities

TOP = contract.INSPECT_TOP  # alternatives reported per position
SATURATION = (0.1, 0.9)  # a gate below / above these is left / right saturated (Karpathy et al.)
CHUNK_CHARS = 4096  # characters of text per call of the Python API's pass
DEFAULT_POSITIONS = 2000  # positions the Python API keeps the details of
_WHITESPACE = re.compile(r"\s")


class Inspector:
    """The inspection pass in-graph, over a `CharGenerator`'s model, codec and one-step form.

    Args:
        generator: CharGenerator, the model to inspect.
    """

    def __init__(self, generator: CharGenerator) -> None:
        self.generator = generator
        self.step = generator.step
        self.codec = generator.codec
        self.num_layers = len(self.step.cells)
        per_layer = len(self.step.state_sizes) // self.num_layers
        self.state_kinds = ("h", "c")[:per_layer]
        self.gate_kinds = self.step.gate_names[0]
        self.kinds = self.state_kinds + self.gate_kinds
        self.units = self.step.state_sizes[0]
        self.vocab_size = generator.vocab_size
        self.top = min(TOP, self.vocab_size)
        self._chunk_function: Any = None  # traced on first use, reused by every later `inspect_text`

    # --- graph pieces ---
    def split(self, text: tf.Tensor, prev_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        """Texts `(batch,)` → padded `ids` `(batch, time)` (unknown tokens are the OOV id 0 and stay, as in
        `evaluate`), `pieces` (the text of each position as written), `lengths` `(batch,)`; `prev_ids`
        `(batch,)` is the id before each text (for word spacing)."""
        tokens = self.codec.split(text)
        ids = tokens.with_flat_values(tf.cast(self.codec.encoder(tokens.flat_values), tf.int32))
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        ids, tokens = ids.to_tensor(default_value=0), tokens.to_tensor(default_value="")
        previous = tf.concat([prev_ids[:, None], ids[:, :-1]], axis=1)
        return {"ids": ids, "pieces": self.codec.text_pieces(tokens, previous, ids), "lengths": lengths}

    def trace(
        self, ids: tf.Tensor, states: list[tf.Tensor], logits: tf.Tensor, weights: dict | None = None
    ) -> tuple[dict[str, tf.Tensor], list[tf.Tensor], tf.Tensor]:
        """Feed `ids` `(batch, time)` from `states`; `logits` `(batch, vocab)` predict the first id.

        Returns the outputs per position — `log_prob` `(batch, time)` of the id there, `top_ids`,
        `top_log_probs`, `top_tokens` `(batch, time, top)` and `activations` `(batch, time, layers,
        kinds, units)` after reading it — and the final states and logits (a later chunk starts from
        them). The loop runs only the recurrent step; the output layer and the softmax run once over
        all positions afterwards.
        """
        time = tf.shape(ids)[1]
        per_layer = len(self.state_kinds)
        shape = [None, self.num_layers, len(self.kinds), self.units]
        array = tf.TensorArray(tf.float32, size=time, element_shape=shape)

        def body(t, states, array):
            states, gates = self.step.activations(ids[:, t], states, weights)
            layers = [
                tf.stack(states[i * per_layer : (i + 1) * per_layer] + gates[i], axis=1)  # (batch, kinds, units)
                for i in range(self.num_layers)
            ]
            return t + 1, states, array.write(t, tf.stack(layers, axis=1))

        _, states, array = tf.while_loop(lambda t, *_: t < time, body, (0, states, array))
        activations = tf.transpose(array.stack(), [1, 0, 2, 3, 4])  # (batch, time, layers, kinds, units)
        flat = tf.reshape(activations, [-1, self.num_layers, len(self.kinds), self.units])
        after = self.step.logits([flat[:, i, k] for i in range(self.num_layers) for k in range(per_layer)])
        after = tf.reshape(after, tf.stack([tf.shape(ids)[0], time, self.vocab_size]))  # logits after each id
        before = tf.concat([logits[:, None], after[:, :-1]], axis=1)  # (batch, time, vocab): predicting each id
        log_probs = tf.nn.log_softmax(before)
        top = tf.math.top_k(log_probs, self.top)
        outputs = {
            "log_prob": tf.gather(log_probs, ids, batch_dims=2),
            "top_ids": top.indices,
            "top_log_probs": top.values,
            "top_tokens": self.codec.decoder(top.indices),
            "activations": activations,
        }
        last = tf.cond(time > 0, lambda: after[:, -1], lambda: logits)
        return outputs, states, last

    def chunk_function(self) -> Any:
        """A `tf.function` for the Python API: text chunks `(batch,)`, the id before each `(batch,)`, the carried
        states and logits → `split` and `trace` outputs, the new states and logits (built once)."""
        if self._chunk_function is None:
            self._chunk_function = self._build_chunk_function()
        return self._chunk_function

    def _build_chunk_function(self) -> Any:
        state_specs = [tf.TensorSpec([None, size], tf.float32) for size in self.step.state_sizes]

        def run(text, prev_ids, states, logits):
            split = self.split(text, prev_ids)
            outputs, states, logits = self.trace(split["ids"], list(states), logits, self.step.loop_weights())
            return {**split, **outputs, "states": states, "logits": logits}

        return tf.function(
            run,
            input_signature=[
                tf.TensorSpec([None], tf.string),
                tf.TensorSpec([None], tf.int32),
                state_specs,
                tf.TensorSpec([None, self.vocab_size], tf.float32),
            ],
        )

    def inspect(self, text: tf.Tensor, layer: tf.Tensor, cell: tf.Tensor) -> dict[str, tf.Tensor]:
        """The SavedModel's `inspect` signature (`contract.SIGNATURES["inspect"]`): `text`, `layer`, `cell` `(batch,)`.

        Outputs per position `(batch, time)`: `tokens` (the text of each position), `ids`, `prob` (of
        the token there; 0 at position 0, which has no prediction, and in the padding), `top_ids`,
        `top_probs`, `top_tokens` `(batch, time, top)`, `activations` `(batch, time, kinds, width)` of
        the row's `layer`: every cell (width = units) when some row's `cell` is -1, else the row's
        `cell` alone (width 1); and `lengths`, `activation_names` `(batch, kinds)`, `num_layers`,
        `num_cells` `(batch,)`.
        """
        batch = tf.shape(text)[0]
        layer, cell = tf.broadcast_to(layer, [batch]), tf.broadcast_to(cell, [batch])
        checks = [
            tf.debugging.Assert(
                tf.reduce_all(tf.logical_and(layer >= 0, layer < self.num_layers)),
                [f"layer must be an integer in 0..{self.num_layers - 1}"],
            ),
            tf.debugging.Assert(
                tf.reduce_all(tf.logical_and(cell >= -1, cell < self.units)),
                [f"cell must be -1 (every cell) or an integer in 0..{self.units - 1}"],
            ),
        ]
        split = self.split(text, tf.fill([batch], self.generator.start_id))
        ids, lengths = split["ids"], split["lengths"]
        with tf.control_dependencies(checks):
            states = self.step.initial_states(batch)
        outputs, _, _ = self.trace(ids, states, tf.zeros([batch, self.vocab_size]), self.step.loop_weights())
        positions = tf.range(tf.shape(ids)[1])[None, :]
        inside = positions < lengths[:, None]  # (batch, time)
        scored = tf.logical_and(inside, positions >= 1)
        activations = tf.gather(outputs["activations"], layer, axis=2, batch_dims=1)  # (batch, time, kinds, units)
        activations = tf.cond(
            tf.reduce_any(cell < 0),
            lambda: activations,
            lambda: tf.gather(activations, cell[:, None], axis=3, batch_dims=1),  # (batch, time, kinds, 1)
        )
        return {
            "tokens": split["pieces"],
            "ids": ids,
            "lengths": lengths,
            "prob": tf.where(scored, tf.exp(outputs["log_prob"]), 0.0),
            "top_ids": tf.where(scored[..., None], outputs["top_ids"], 0),
            "top_probs": tf.where(scored[..., None], tf.exp(outputs["top_log_probs"]), 0.0),
            "top_tokens": tf.where(scored[..., None], outputs["top_tokens"], ""),
            "activations": tf.where(inside[..., None, None], activations, 0.0),
            "activation_names": tf.tile(tf.constant([list(self.kinds)]), [batch, 1]),
            "num_layers": tf.fill([batch], self.num_layers),
            "num_cells": tf.fill([batch], self.units),
        }

    def explain_sampling(
        self,
        prompt: tf.Tensor,
        temperature: tf.Tensor,
        top_k: tf.Tensor,
        top_p: tf.Tensor,
        repetition_penalty: tf.Tensor,
    ) -> dict[str, tf.Tensor]:
        """The SavedModel's `explain_sampling` signature: the next-token distribution after each `prompt` (primed
        as generation primes it), before and after each setting the sampler reads (`contract.SAMPLING_STAGES`).

        Inputs `(batch,)`, with the off values of `serving_default`. Outputs: `ids`, `tokens`
        `(batch, shown)`: the tokens most likely at any stage; `probs` `(batch, stages, shown)`;
        `other` `(batch, stages)`: the probability of every other token; `stages` `(batch, stages)`.
        """
        generator, shown = self.generator, min(contract.EXPLAIN_TOP, self.vocab_size)
        batch = tf.shape(prompt)[0]
        settings = sampling_settings(batch, temperature, top_k, top_p, repetition_penalty)
        with tf.control_dependencies(in_graph_checks(settings._asdict())):
            ids, lengths = generator.encode(prompt)
        logits, _ = generator.prime(ids, lengths)
        seen = decoding.seen_from_ids(ids, lengths, self.vocab_size) > 0
        never = tf.reduce_sum(tf.one_hot(list(generator.banned_ids), self.vocab_size, decoding.NEVER, 0.0), 0)
        probs = stage_probabilities(logits + never, seen, settings)  # (batch, stages, vocab)
        top = tf.math.top_k(tf.reduce_max(probs, axis=1), shown).indices  # (batch, shown)
        chosen = tf.gather(probs, top, axis=2, batch_dims=1)  # (batch, stages, shown)
        return {
            "ids": top,
            "tokens": self.codec.decoder(top),
            "probs": chosen,
            "other": tf.maximum(1.0 - tf.reduce_sum(chosen, axis=2), 0.0),
            "stages": tf.tile(tf.constant([list(contract.SAMPLING_STAGES)]), [batch, 1]),
        }


@dataclass
class Inspection:
    """What `inspect_text` found. Arrays cover the first `shown` positions; the statistics cover all `total`.

    Attributes:
        level: "char" or "word" (a position is a character or a word).
        kinds: the activation kinds of each layer, e.g. `("h", "c", "i", "f", "o")` for an LSTM.
        num_layers, units: the recurrent layers and their width.
        total: positions in the text; bits: summed surprisal over the scored ones (all but the first).
        tokens: the text of each shown position; ids: their ids `(shown,)`.
        prob: `(shown,)` the probability of each token (NaN at position 0: no prediction).
        top_ids, top_probs: `(shown, top)`, the most likely tokens at each position; top_tokens: their text.
        activations: float32 `(shown, layers, kinds, units)` after reading each position.
        correlations: `(features, layers, state kinds, units)` Pearson r of each feature with `h` (and `c`).
        saturation: `(layers, gates, units, 2)`: the fraction of positions where each gate is below 0.1
            (left) and above 0.9 (right).
        constant_features: features that never vary in this text (no correlation).
    """

    level: str
    kinds: tuple[str, ...]
    num_layers: int
    units: int
    total: int
    bits: float
    tokens: list[str]
    ids: np.ndarray
    prob: np.ndarray
    top_ids: np.ndarray
    top_probs: np.ndarray
    top_tokens: list[list[str]]
    activations: np.ndarray
    correlations: np.ndarray
    saturation: np.ndarray
    constant_features: list[str] = field(default_factory=list)

    @property
    def shown(self) -> int:
        return len(self.tokens)

    @property
    def scored(self) -> int:
        """Positions with a prediction: all but the first."""
        return self.total - 1

    @property
    def bits_per_char(self) -> float:
        """Mean surprisal in bits over the scored positions (bits per word at the word level)."""
        return self.bits / self.scored

    @property
    def surprisal_bits(self) -> np.ndarray:
        """`(shown,)` `-log2 prob` (NaN at position 0)."""
        return -np.log2(self.prob.astype(np.float64))

    @property
    def state_kinds(self) -> tuple[str, ...]:
        return tuple(k for k in self.kinds if k in ("h", "c"))

    @property
    def gate_kinds(self) -> tuple[str, ...]:
        return self.kinds[len(self.state_kinds) :]

    @property
    def candidates(self) -> list[CellMatch]:
        """The three cells that follow each feature most closely (best first)."""
        return ranked_cells(self.correlations, self.state_kinds)

    @property
    def cells(self) -> list[CellMatch]:
        """The best cell for each feature that varies in the text."""
        return best_cells(self.candidates)

    def to_json(self) -> dict[str, Any]:
        """The JSON report (docs/inspect.md): `bits_per_char`, `positions`, `cells`, and context."""
        positions = []
        for i, token in enumerate(self.tokens):
            scored = i > 0
            positions.append(
                {
                    "token": token,
                    "prob": _round(float(self.prob[i])) if scored else None,
                    "surprisal_bits": _round(float(self.surprisal_bits[i])) if scored else None,
                    "top": [[t, _round(float(p))] for t, p in zip(self.top_tokens[i], self.top_probs[i])]
                    if scored
                    else [],
                }
            )
        saturation = {
            gate: [
                [[_round(float(x)) for x in cell] for cell in self.saturation[layer, g]]
                for layer in range(self.num_layers)
            ]
            for g, gate in enumerate(self.gate_kinds)
        }
        return {
            "level": self.level,
            "bits_per_char": _round(self.bits_per_char),
            "positions_total": self.total,
            "positions_scored": self.scored,
            "positions_shown": self.shown,
            "layers": self.num_layers,
            "units": self.units,
            "kinds": list(self.kinds),
            "positions": positions,
            "cells": [m.to_json() for m in self.cells],
            "candidates": [m.to_json() for m in self.candidates],
            "constant_features": self.constant_features,
            "saturation": saturation,
        }


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def text_chunks(text: str | Iterable[str], level: str, size: int = CHUNK_CHARS) -> Iterator[str]:
    """Cut a text (a string, or an iterable of strings such as a file read piece by piece) into chunks of
    about `size` characters that end at a token boundary (anywhere for characters; before whitespace for
    words, since a word never holds whitespace)."""
    parts = [text] if isinstance(text, str) else text
    buffer = ""
    for part in parts:
        buffer += part
        while len(buffer) >= size:
            cut = size if level == "char" else _word_cut(buffer, size)
            if cut is None:
                break  # a word longer than the buffer: read on
            yield buffer[:cut]
            buffer = buffer[cut:]
    if buffer:
        yield buffer


def _word_cut(buffer: str, size: int) -> int | None:
    """The index of the last whitespace at or before `size` (after it if there is none), None if none at all."""
    head = buffer[: size + 1]
    for index in range(len(head) - 1, 0, -1):
        if head[index].isspace():
            return index
    match = _WHITESPACE.search(buffer, size)
    return match.start() if match else None


def inspect_text(
    model: str | Path | CharGenerator | Inspector,
    text: str | Iterable[str],
    max_positions: int = DEFAULT_POSITIONS,
    chunk_chars: int = CHUNK_CHARS,
) -> Inspection:
    """Inspect a text: per position the probability of its token, the alternatives and the activations.

    The text is read as one stream from the zero state (the first position has no prediction), in
    chunks of about `chunk_chars` characters with the state carried, so memory stays bounded however
    long the text is: bits per character, the interpretable cells and the gate saturation cover every
    position; the details (`tokens`, `prob`, alternatives, activations) the first `max_positions`.

    Args:
        model: a model directory, a `CharGenerator`, or an `Inspector` (which keeps its traced graph: pass
            the same one to inspect several texts quickly).
        text: str, or an iterable of strings read one after another (e.g. a file, piece by piece).
        max_positions: int >= 0, positions whose details are kept. Default 2000.
        chunk_chars: int >= 1, characters per call of the graph. Default 4096.

    Example:
    >>> result = inspect_text("models/shakespeare", "ROMEO:\\nWhat light")  # doctest: +SKIP
    >>> result.bits_per_char, [m.feature for m in result.cells]  # doctest: +SKIP
    """
    if max_positions < 0 or chunk_chars < 1:
        raise ChargenError(f"max_positions must be >= 0 and chunk_chars >= 1; got {max_positions}, {chunk_chars}")
    if isinstance(model, (str, Path)):
        from keras_chargen.saving import load_generator

        model = load_generator(model)
    inspector = model if isinstance(model, Inspector) else Inspector(model)
    generator = inspector.generator
    run = inspector.chunk_function()
    run_state = _Accumulator(inspector, max_positions)
    states = [tf.zeros([1, size]) for size in inspector.step.state_sizes]
    logits = tf.zeros([1, inspector.vocab_size])
    prev_id = generator.start_id
    for chunk in text_chunks(text, generator.level, chunk_chars):
        out = run(tf.constant([chunk]), tf.constant([prev_id], tf.int32), states, logits)
        count = int(out["lengths"][0])
        if count == 0:
            continue
        run_state.add(out, count)
        states, logits = list(out["states"]), out["logits"]
        prev_id = int(out["ids"][0, count - 1])
    return run_state.result(generator.level)


class _Accumulator:
    """The Python side of `inspect_text`: statistics over every position, details for the first few."""

    def __init__(self, inspector: Inspector, max_positions: int) -> None:
        self.inspector = inspector
        self.max_positions = max_positions
        self.total = 0
        self.bits = 0.0
        self.features = FeatureTracker()
        layers, states, units = inspector.num_layers, len(inspector.state_kinds), inspector.units
        self.correlations = Correlations(len(FEATURES), layers * states * units)
        self.saturated = np.zeros((layers, len(inspector.gate_kinds), inspector.units, 2), np.int64)
        self.kept: dict[str, list[Any]] = {
            name: [] for name in ("tokens", "ids", "prob", "top_ids", "top_probs", "top_tokens", "activations")
        }

    def add(self, out: dict[str, Any], count: int) -> None:
        """One chunk's outputs (`Inspector.chunk_function`), of which the first `count` positions are real."""
        pieces = [p.decode("utf-8") for p in out["pieces"].numpy()[0, :count]]
        log_prob = out["log_prob"].numpy()[0, :count].astype(np.float64)
        activations = out["activations"].numpy()[0, :count]  # (count, layers, kinds, units)
        if self.total == 0:
            log_prob[0] = np.nan  # the first position has no prediction
        self.bits -= float(np.nansum(log_prob)) / math.log(2.0)
        states = len(self.inspector.state_kinds)
        features = self.features.values(pieces)
        self.correlations.add(features, activations[:, :, :states].reshape(count, -1))
        gates = activations[:, :, states:]  # (count, layers, gates, units)
        self.saturated[..., 0] += (gates < SATURATION[0]).sum(0)
        self.saturated[..., 1] += (gates > SATURATION[1]).sum(0)
        keep = max(0, min(count, self.max_positions - self.total))
        if keep:
            self.kept["tokens"] += pieces[:keep]
            self.kept["ids"].append(out["ids"].numpy()[0, :keep])
            self.kept["prob"].append(np.exp(log_prob[:keep]).astype(np.float32))
            self.kept["top_ids"].append(out["top_ids"].numpy()[0, :keep])
            self.kept["top_probs"].append(np.exp(out["top_log_probs"].numpy()[0, :keep]))
            self.kept["top_tokens"] += [[t.decode("utf-8") for t in row] for row in out["top_tokens"].numpy()[0, :keep]]
            self.kept["activations"].append(activations[:keep])
        self.total += count

    def result(self, level: str) -> Inspection:
        inspector = self.inspector
        if self.total < 2:
            raise ChargenError(
                f"the text has {self.total} {level}{'' if self.total == 1 else 's'}; inspecting needs at least 2 "
                "(the first one has no prediction)"
            )
        shape = (inspector.num_layers, len(inspector.state_kinds), inspector.units)
        top = inspector.top

        def joined(name: str, width: tuple[int, ...], dtype: Any) -> np.ndarray:
            parts = self.kept[name]
            return np.concatenate(parts) if parts else np.zeros((0, *width), dtype)

        return Inspection(
            level=level,
            kinds=inspector.kinds,
            num_layers=inspector.num_layers,
            units=inspector.units,
            total=self.total,
            bits=self.bits,
            tokens=self.kept["tokens"],
            ids=joined("ids", (), np.int32),
            prob=joined("prob", (), np.float32),
            top_ids=joined("top_ids", (top,), np.int32),
            top_probs=joined("top_probs", (top,), np.float32),
            top_tokens=self.kept["top_tokens"],
            activations=joined(
                "activations", (inspector.num_layers, len(inspector.kinds), inspector.units), np.float32
            ),
            correlations=self.correlations.correlations().reshape(len(FEATURES), *shape),
            saturation=self.saturated / self.total,
            constant_features=[f for f, m2 in zip(FEATURES, self.correlations.m2_f) if m2 == 0],
        )


__all__ = ["TOP", "Inspection", "Inspector", "inspect_text", "text_chunks"]

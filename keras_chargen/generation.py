"""`CharGenerator`: a Keras layer that generates text in-graph, strings in and strings out.

Preprocess (the level's codec splits the prompt and looks it up) → prime the recurrent state on the
whole prompt in one `tf.while_loop` pass → the decode loop of `keras_chargen.decoding` (the same
loop every export runs), carrying the states and sampling each token in-graph → postprocess (the
codec's text of each token, joined). One compiled function, no Python per character.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_chargen import decoding
from keras_chargen.codecs import make_codec
from keras_chargen.errors import ChargenError
from keras_chargen.model import RecurrentStep
from keras_chargen.sampling import PENALTY_OFF, TOP_K_OFF, TOP_P_OFF, SamplingSettings, sampling_settings
from keras_chargen.settings import BY_NAME, MAX_NEW_CHARS, MAX_PROMPT_CHARS, SETTINGS, check_api, check_stop

SIGNATURE_DTYPES = {"float32": tf.float32, "int32": tf.int32, "string": tf.string}
__all__ = ["MAX_NEW_CHARS", "CharGenerator"]


@keras.saving.register_keras_serializable(package="keras_chargen")
class CharGenerator(keras.layers.Layer):
    """Generate continuations of a batch of prompts in-graph: temperature, top-k, top-p, penalty, stop strings.

    Character level: unknown prompt characters are skipped in-graph. Word level: prompts are split
    into words as in training (`keras_chargen.tokenizer`), unknown words are fed as the `[UNK]` token
    the model was trained on, and the output is detokenized readably. The Python `generate` method
    rejects unknown prompt tokens first unless told otherwise. An empty prompt starts from the zero
    state primed on a newline (as if the text began at the start of a line); the newline is not
    part of the output. A document model (`document_start`) primes every prompt on its start marker
    first instead (an empty prompt is the marker alone), and with `document_end` a row stops by
    itself after generating the end marker; markers add no text.

    Args:
        model: keras.Model from `build_model` (stateful or not; it is only read through its cells).
        vocabulary: list[str], the tokens of the `Vocabulary` in id order (ids 1..n; 0 is OOV).
        level: "char" (default) or "word".
        lowercase: bool, word level: lowercase prompts before the lookup (as the corpus was). Default False.
        document_start: int | None, the id of the document-start marker. Default None.
        document_end: int | None, the id of the document-end marker. Default None.

    Example:
    >>> generator = load_generator("models/shakespeare")  # doctest: +SKIP
    >>> generator.generate(["ROMEO:"], temperature=0.5, max_new_chars=100, seed=1)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: keras.Model,
        vocabulary: Sequence[str],
        level: str = "char",
        lowercase: bool = False,
        document_start: int | None = None,
        document_end: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.vocabulary = list(vocabulary)
        self.level, self.lowercase = level, lowercase
        for name, marker in (("document_start", document_start), ("document_end", document_end)):
            if marker is not None and (
                isinstance(marker, bool) or not isinstance(marker, int) or not 1 <= marker <= len(self.vocabulary)
            ):
                raise ValueError(f"{name} must be a vocabulary id in 1..{len(self.vocabulary)}; got {marker!r}")
        self.document_start, self.document_end = document_start, document_end
        markers = [m for m in (document_start, document_end) if m is not None]
        self.codec = make_codec(self.vocabulary, level, lowercase, markers)
        self.step = RecurrentStep(model)
        self.start_id = self.vocabulary.index("\n") + 1 if "\n" in self.vocabulary else 0
        self._compiled: Any = None  # the traced `call`, built on first use

    @property
    def vocab_size(self) -> int:
        """Ids including the OOV id 0 (the width of the logits)."""
        return len(self.vocabulary) + 1

    @property
    def banned_ids(self) -> tuple[int, ...]:
        """Ids never generated: the OOV id 0, and the document-start marker."""
        return (0,) if self.document_start is None else (0, self.document_start)

    @property
    def end_ids(self) -> tuple[int, ...]:
        """Ids after which every row stops by itself: the document-end marker, if any."""
        return () if self.document_end is None else (self.document_end,)

    # --- graph pieces, reused by the exporters and the stream ---
    def with_start(self, ids: tf.RaggedTensor) -> tf.RaggedTensor:
        """The ids a row is primed on: `[document_start] + ids`, or, without markers, a newline for an empty row."""
        if self.document_start is not None:
            marker = tf.fill(tf.stack([ids.nrows(), 1]), self.document_start)
            return tf.concat([tf.RaggedTensor.from_tensor(marker), ids], axis=1)
        empty = tf.equal(ids.row_lengths(), 0)
        start = tf.RaggedTensor.from_row_lengths(
            tf.fill([tf.reduce_sum(tf.cast(empty, tf.int32))], self.start_id), tf.cast(empty, tf.int64)
        )
        return tf.concat([ids, start], axis=1)

    def encode(self, prompt: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Prompts `(batch,)` → the padded ids each row is primed on `(batch, time)` and lengths `(batch,)` (>= 1).

        Unknown characters are skipped; unknown words become the OOV id 0 (`[UNK]`, seen in training).
        """
        ids = self.with_start(self.codec.encode(prompt))
        return ids.to_tensor(default_value=0), tf.cast(ids.row_lengths(), tf.int32)

    def prime(self, ids: tf.Tensor, lengths: tf.Tensor, per_gate: bool = True) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """Run the prompt ids through the model in one loop; rows stop updating after their length.

        Returns the logits after each row's last prompt token `(batch, vocab)` and the states.
        `per_gate=False` reads the weights as they are (`RecurrentStep.loop_weights`, one product per
        gate, suits TF's executor; the TFLite and ONNX runtimes run one whole-layer product faster).
        """
        weights = self.step.loop_weights() if per_gate else None  # once, outside the loop
        states = self.step.initial_states(tf.shape(ids)[0])
        return decoding.prime(
            lambda i, s: (None, self.step.recurrent(i, s, weights)), ids, lengths, states, readout=self.step.logits
        )

    def pieces(self, prev_ids: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        """The text each token `ids` adds after the token `prev_ids` (both int32, any same shape): tf.string."""
        return self.codec.pieces(prev_ids, ids)

    def sample_ids(
        self,
        logits: tf.Tensor,
        states: list[tf.Tensor],
        settings: SamplingSettings,
        max_new_chars: tf.Tensor,
        seeds: tf.Tensor,
        seen: tf.Tensor | None = None,
        prev_ids: tf.Tensor | None = None,
        stop: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Generate up to `max_new_chars` ids per row from primed logits/states with the decode loop.

        Args:
            logits: float32 `(batch, vocab)`, the primed logits; states: the primed states.
            settings: SamplingSettings, one value per row.
            max_new_chars: int32 `(batch,)`, the most ids each row generates.
            seeds: int `()`, `(1,)` or `(batch,)`: each row's seed (one seed for several rows: seed + i).
            seen: float32 `(batch, vocab)`, 1 for the ids already in each row's text; None: none.
            prev_ids: int32 `(batch,)`, each row's last prompt id; None: the start id.
            stop: tf.string `(batch,)`, "" = no stop string; None (no string ops in the loop, so it
                compiles under XLA) = none.

        Returns:
            ids int32 `(batch, steps)`, right-padded with 0 after each row's end, and the number of
            ids each row generated `(batch,)`.
        """
        batch = tf.shape(logits)[0]
        seen = tf.zeros([batch, self.vocab_size]) if seen is None else seen
        prev_ids = tf.fill([batch], self.start_id) if prev_ids is None else prev_ids
        state = decoding.start_state(logits, states, prev_ids, seen, max_new_chars, with_tail=stop is not None)
        weights = self.step.loop_weights()
        stop_ids = None
        if self.end_ids:
            stop_ids = tf.fill(tf.stack([batch, 1]), self.end_ids[0])
        ids, state = decoding.decode(
            lambda i, s: self.step(i, s, weights),
            state,
            settings,
            decoding.row_seeds(seeds, batch),
            max_new_chars,
            tf.reduce_max(tf.concat([max_new_chars, [0]], 0)),
            banned=self.banned_ids,
            stop_ids=stop_ids,
            stop_text=None if stop is None else decoding.StopText(self.pieces, stop),
        )
        return ids, state.count

    def detokenize(self, prev_ids: tf.Tensor, ids: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        """Generated ids `(batch, steps)` (the first one following `prev_ids` `(batch,)`) → text `(batch,)`."""
        previous = tf.concat([prev_ids[:, None], ids[:, :-1]], axis=1)  # (batch, steps)
        text = self.pieces(previous, ids)
        keep = tf.sequence_mask(lengths, tf.shape(ids)[1])  # padding adds nothing
        return tf.strings.reduce_join(tf.where(keep, text, ""), axis=1)

    def call(
        self,
        prompt,
        temperature,
        max_new_chars,
        seed,
        top_k=TOP_K_OFF,
        top_p=TOP_P_OFF,
        repetition_penalty=PENALTY_OFF,
        stop="",
    ):
        """Generate; all inputs are broadcast to `(batch,)`. Returns `{"text", "generated"}` strings.

        The settings and their valid values are those of `keras_chargen.settings` (checked in-graph).

        Args:
            prompt: tf.string `(batch,)`.
            temperature: float `()` or `(batch,)`, >= 0; 0 is greedy.
            max_new_chars: int `()` or `(batch,)`, 0..MAX_NEW_CHARS, tokens generated per row.
            seed: int32 `()`, `(1,)` or `(batch,)`: each row's seed (one seed for several rows seeds
                row i with seed + i); a negative one draws a random seed for its row.
            top_k: int `()` or `(batch,)`, >= 0; 0 = off.
            top_p: float `()` or `(batch,)`, in (0, 1]; 1 = off.
            repetition_penalty: float `()` or `(batch,)`, > 0; 1 = off.
            stop: tf.string `()` or `(batch,)`; a row stops after the token that makes its generated
                text end with it (included in the output); "" = off.
        """
        prompt = tf.reshape(tf.convert_to_tensor(prompt, tf.string), [-1])
        batch = tf.shape(prompt)[0]
        settings = sampling_settings(batch, temperature, top_k, top_p, repetition_penalty)
        max_new_chars = tf.broadcast_to(tf.cast(max_new_chars, tf.int32), [batch])
        stop = tf.broadcast_to(tf.convert_to_tensor(stop, tf.string), [batch])
        seeds = decoding.row_seeds(seed, batch)
        values = {**settings._asdict(), "max_new_chars": max_new_chars, "seed": seeds}
        with tf.control_dependencies(in_graph_checks(values)):  # before anything is sized by max_new_chars
            random = tf.random.uniform([batch], 0, BY_NAME["seed"].high, dtype=tf.int32)
            seeds = tf.where(seeds < 0, random, seeds)
            max_new_chars = tf.identity(max_new_chars)
        ids, lengths = self.encode(prompt)
        logits, states = self.prime(ids, lengths)
        last_ids = tf.gather(ids, lengths - 1, batch_dims=1)  # (batch,) the last prompt id
        seen = decoding.seen_from_ids(ids, lengths, self.vocab_size)
        new_ids, counts = self.sample_ids(
            logits, states, settings, max_new_chars, seeds, seen=seen, prev_ids=last_ids, stop=stop
        )
        generated = self.codec.finish(prompt, self.detokenize(last_ids, new_ids, counts))
        return {"text": prompt + generated, "generated": generated}

    # --- Python convenience API ---
    def generate(
        self,
        prompts: str | Sequence[str],
        temperature: float | Sequence[float] = BY_NAME["temperature"].default,
        max_new_chars: int = BY_NAME["max_new_chars"].default,
        seed: int | None = None,
        oov: str = "error",
        *,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        stop: str | None = None,
        include_prompt: bool = False,
    ) -> list[str]:
        """Continuations of each prompt (without the prompt, unless `include_prompt`), in one compiled call.

        The settings are those of `keras_chargen.settings`, with None for "off".

        Args:
            prompts: str or list[str].
            temperature: float, or one per prompt, >= 0 (0 = greedy); several for one prompt give one
                row per temperature (`generate("A", [0.2, 1.0])` → 2 texts). Default 0.8.
            max_new_chars: int in 0..MAX_NEW_CHARS (0: empty continuations). Default 500.
            seed: int in 0..2**31-1 for reproducible output (row i draws with seed + i, as the
                SavedModel, TFLite, ONNX and the stream do), None for a random draw.
            oov: what to do with prompt tokens outside the vocabulary: "error" (default) names them;
                "skip" drops unknown characters (char level); "unk" feeds unknown words as the `[UNK]`
                token the model was trained on (word level).
            top_k: int >= 1, sample only from the k most likely tokens; None (default) = off.
            top_p: float in (0, 1], sample only from the nucleus of probability p; None (default) = off.
            repetition_penalty: float > 0 (CTRL's; > 1 discourages tokens already in the prompt or
                the generated text); None (default) = off.
            stop: str, stop each row once its generated text ends with it (it is included in the
                output); None (default) = generate `max_new_chars`.
            include_prompt: bool, return prompt + continuation, as the CLI prints it and the SavedModel's
                `text` output gives it; False (default) = the continuation only (`generated`).
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        prompts = expand_temperatures(prompts, temperature)
        temps = check_generation_args(prompts, temperature, max_new_chars, seed)
        top_k, top_p = check_api("top_k", top_k), check_api("top_p", top_p)
        repetition_penalty, stop = check_api("repetition_penalty", repetition_penalty), check_stop(stop)
        if oov not in self.codec.oov_policies:
            raise ChargenError(
                f"oov must be one of {', '.join(self.codec.oov_policies)} for a {self.level}-level model; got {oov!r}"
            )
        if oov == "error":
            self._check_known(prompts)
        if self._compiled is None:  # trace once; every call reuses the graph
            self._compiled = tf.function(self.call, input_signature=signature())
        rows = len(prompts)
        outputs = self._compiled(
            tf.constant(prompts),
            tf.constant(temps, tf.float32),
            tf.fill([rows], max_new_chars),
            tf.constant([check_api("seed", seed)], tf.int32),
            tf.fill([rows], top_k),
            tf.fill([rows], top_p),
            tf.fill([rows], repetition_penalty),
            tf.fill([rows], stop),
        )
        return [s.decode("utf-8") for s in outputs["text" if include_prompt else "generated"].numpy()]

    def _check_known(self, prompts: Sequence[str]) -> None:
        """Raise `ChargenError` naming the prompt tokens outside the vocabulary."""
        known = set(self.vocabulary)
        unknown = list(dict.fromkeys(t for p in prompts for t in self.codec.tokens(p) if t not in known))
        if unknown:
            what, shown = self.codec.describe_unknown(unknown)
            raise ChargenError(
                f"prompt has {what} not in the model's vocabulary: {shown}"
                f"{' …' if len(unknown) > 10 else ''}; use {self.codec.unknown_hint}"
            )

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "model": keras.saving.serialize_keras_object(self.model),
                "vocabulary": self.vocabulary,
                "level": self.level,
                "lowercase": self.lowercase,
                "document_start": self.document_start,
                "document_end": self.document_end,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> CharGenerator:
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)


def signature() -> list[tf.TensorSpec]:
    """The serving signature: `prompt`, then every setting of `keras_chargen.settings`, each `(batch,)`."""
    return [tf.TensorSpec([None], tf.string, name="prompt")] + [
        tf.TensorSpec([None], SIGNATURE_DTYPES[s.dtype], name=s.name) for s in SETTINGS
    ]


def in_graph_checks(values: dict[str, tf.Tensor]) -> list[tf.Operation]:
    """`tf.debugging` assertions that each numeric setting in `values` (name → tensor) is in its range."""
    checks = []
    for name, tensor in values.items():
        spec = BY_NAME[name]
        x = tf.cast(tensor, tf.float64) if spec.integer else tensor
        ok = tf.logical_not(tf.math.is_nan(x)) if not spec.integer else tf.ones_like(x, tf.bool)
        if spec.finite:
            ok = tf.logical_and(ok, tf.math.is_finite(x))
        if spec.low is not None:
            ok = tf.logical_and(ok, x > spec.low if spec.low_open else x >= spec.low)
        if spec.high is not None:
            ok = tf.logical_and(ok, x <= spec.high)
        checks.append(tf.debugging.Assert(tf.reduce_all(ok), [f"{name} must be {spec.rule}"]))
    return checks


def check_generation_args(prompts: Sequence[str], temperature, max_new_chars: int, seed: int | None) -> list[float]:
    """Validate generation arguments; return one temperature per prompt. Raises `ChargenError`."""
    if not prompts:
        raise ChargenError("no prompts given")
    for prompt in prompts:
        if not isinstance(prompt, str):
            raise ChargenError(f"prompt must be a string; got {type(prompt).__name__}")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ChargenError(f"prompt has {len(prompt)} characters; the maximum is {MAX_PROMPT_CHARS}")
    temps = list(temperature) if isinstance(temperature, (list, tuple, np.ndarray)) else [temperature] * len(prompts)
    if len(temps) == 1 and len(prompts) > 1:
        temps = temps * len(prompts)
    if len(temps) != len(prompts):
        raise ChargenError(f"got {len(temps)} temperatures for {len(prompts)} prompts")
    temps = [check_api("temperature", value) for value in temps]
    check_api("max_new_chars", max_new_chars)
    check_api("seed", seed)
    return temps


def expand_temperatures(prompts: list[str], temperature) -> list[str]:
    """One prompt with several temperatures → the prompt once per temperature (one row each)."""
    if len(prompts) == 1 and isinstance(temperature, (list, tuple, np.ndarray)) and len(temperature) > 1:
        return prompts * len(temperature)
    return prompts

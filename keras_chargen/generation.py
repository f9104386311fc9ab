"""`CharGenerator`: a Keras layer that generates text in-graph, strings in and strings out.

Preprocess (split the prompt into characters, look them up) → prime the recurrent state on the
whole prompt in one `tf.while_loop` pass → generate in a second `tf.while_loop`, carrying the
states and sampling each character in-graph → postprocess (look the ids up, join). One compiled
function, no Python per character.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_chargen.errors import ChargenError
from keras_chargen.limits import MAX_NEW_CHARS, MAX_PROMPT_CHARS, MAX_STOP_CHARS
from keras_chargen.model import RecurrentStep
from keras_chargen.sampling import (
    PENALTY_OFF,
    TOP_K_OFF,
    TOP_P_OFF,
    SamplingSettings,
    check_repetition_penalty,
    check_top_k,
    check_top_p,
    next_token,
    processors_in_use,
    sample_next,
    sampling_settings,
)
from keras_chargen.tokenizer import WordPieces, split_words, tokenize
from keras_chargen.vocab import OOV_TOKEN

OOV_POLICIES = {"char": ("error", "skip"), "word": ("error", "unk")}  # what `generate` may do with unknown tokens


@keras.saving.register_keras_serializable(package="keras_chargen")
class CharGenerator(keras.layers.Layer):
    """Generate continuations of a batch of prompts in-graph: temperature, top-k, top-p, penalty, stop strings.

    Character level: unknown prompt characters are skipped in-graph. Word level: prompts are split
    into words as in training (`keras_chargen.tokenizer`), unknown words are fed as the `[UNK]` token
    the model was trained on, and the output is detokenized readably. The Python `generate` method
    rejects unknown prompt tokens first unless told otherwise. An empty prompt starts from the zero
    state primed on a newline (as if the text began at the start of a line); the newline is not
    part of the output.

    Args:
        model: keras.Model from `build_model` (stateful or not; it is only read through its cells).
        vocabulary: list[str], the tokens of the `Vocabulary` in id order (ids 1..n; 0 is OOV).
        level: "char" (default) or "word".
        lowercase: bool, word level: lowercase prompts before the lookup (as the corpus was). Default False.
        document_start: int | None, a document model's start marker id: every row is primed on it
            followed by the prompt (the beginning of a document). Default None (no document mode).
        document_end: int | None, a document model's end marker id: a row stops after sampling it;
            it is not part of the text. Default None.

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
        self.document_start, self.document_end = document_start, document_end
        self.word_pieces = WordPieces([OOV_TOKEN] + self.vocabulary) if level == "word" else None
        self.step = RecurrentStep(model)
        self.encoder = keras.layers.StringLookup(vocabulary=self.vocabulary, oov_token=OOV_TOKEN, name="encoder")
        self.decoder = keras.layers.StringLookup(
            vocabulary=self.vocabulary, oov_token=OOV_TOKEN, invert=True, name="decoder"
        )
        # what an empty prompt is primed on: a document start, or a line start
        newline = self.vocabulary.index("\n") + 1 if "\n" in self.vocabulary else 0
        self.start_id = newline if document_start is None else document_start
        self._compiled = None

    # --- graph pieces, reused by the exporters ---
    def encode(self, prompt: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Prompts `(batch,)` → padded ids `(batch, time)` and lengths `(batch,)`.

        Unknown characters are skipped; unknown words become the OOV id 0 (`[UNK]`, seen in training).
        """
        if self.level == "word":
            tokens = split_words(prompt, self.lowercase)  # ragged (batch, None)
        else:
            tokens = tf.strings.unicode_split(prompt, "UTF-8")
        ids = tokens.with_flat_values(tf.cast(self.encoder(tokens.flat_values), tf.int32))
        if self.level == "char":
            ids = tf.ragged.boolean_mask(ids, ids > 0)
        if self.document_start is not None:  # a document starts at its marker; the prompt continues it
            starts = tf.fill(tf.stack([ids.nrows(), 1]), tf.constant(self.document_start, tf.int32))
            ids = tf.concat([tf.RaggedTensor.from_tensor(starts), ids], axis=1)
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        width = tf.maximum(tf.reduce_max(tf.concat([lengths, [1]], 0)), 1)
        # empty rows get start_id at position 0 and length 1
        dense = ids.to_tensor(default_value=self.start_id, shape=tf.stack([tf.size(lengths), width]))
        return dense, tf.maximum(lengths, 1)

    def prime(self, ids: tf.Tensor, lengths: tf.Tensor, per_gate: bool = True) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """Run the prompt ids through the model in one loop; rows stop updating after their length.

        Returns the logits after each row's last prompt character `(batch, vocab)` and the states.
        `per_gate=False` reads the weights as they are (`RecurrentStep.loop_weights`, one product per
        gate, suits TF's executor; the TFLite and ONNX runtimes run one whole-layer product faster).
        """
        weights = self.step.loop_weights() if per_gate else None  # once, outside the loop

        def body(t, states):
            new_states = self.step.recurrent(ids[:, t], states, weights)
            active = (t < lengths)[:, None]  # (batch, 1)
            return t + 1, [tf.where(active, new, old) for new, old in zip(new_states, states)]

        start = (0, self.step.initial_states(tf.shape(ids)[0]))
        _, states = tf.while_loop(lambda t, *_: t < tf.shape(ids)[1], body, start)
        return self.step.logits(states), states  # the logits after each row's last id, from its final h

    def pieces(self, prev_ids: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        """The text each token `ids` adds after the token `prev_ids` (both int32, any same shape): tf.string.

        All output text (the joined continuation and the text checked for stop strings) is built
        from this method. A character adds itself; a word adds itself with a space before it unless
        the detokenization rules of `keras_chargen.tokenizer` join it directly.
        """
        text = self.decoder(ids)
        return text if self.word_pieces is None else self.word_pieces(text, prev_ids, ids)

    def sample_ids(
        self,
        logits: tf.Tensor,
        states: list[tf.Tensor],
        settings: SamplingSettings,
        max_new_chars: tf.Tensor,
        seed: tf.Tensor,
        seen: tf.Tensor | None = None,
        prev_ids: tf.Tensor | None = None,
        stop: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Generate up to `max_new_chars` ids per row, starting from primed logits/states.

        A row stops at its length or once its generated text ends with its `stop` string; after
        that it emits the padding id 0, and the loop ends when every row has stopped.

        Args:
            logits: float32 `(batch, vocab)`, the primed logits; states: the primed states.
            settings: SamplingSettings, one value per row.
            max_new_chars: int32 `(batch,)`, the most ids each row generates.
            seed: int64 `()`, the seed; step t draws with `(seed, t)`.
            seen: bool `(batch, vocab)`, the ids already in each row's text (repetition penalty);
                None: none.
            prev_ids: int32 `(batch,)`, each row's last prompt id (the first token's previous token);
                needed with `stop`.
            stop: tf.string `(batch,)`, "" = no stop string; None (no string ops in the loop, so it
                compiles under XLA) = none.

        Returns:
            ids int32 `(batch, steps)`, right-padded with 0 after each row's end, and the number of
            ids each row generated `(batch,)`.
        """
        batch, vocab = tf.shape(logits)[0], tf.shape(logits)[1]
        never_oov = self.never_sampled(vocab)  # (vocab,)
        document_end = -1 if self.document_end is None else self.document_end
        seen = tf.zeros([batch, vocab], tf.bool) if seen is None else seen
        prev_ids = tf.fill([batch], self.start_id) if prev_ids is None else prev_ids
        num_steps = tf.reduce_max(tf.concat([max_new_chars, [0]], 0))
        done = max_new_chars <= 0  # (batch,)
        count = tf.zeros([batch], tf.int32)
        # the last bytes of each row's text, as many as its stop string has (no strings under XLA)
        tail = tf.constant(0) if stop is None else tf.fill([batch], "")
        has_stop = tf.constant(False) if stop is None else tf.reduce_any(tf.strings.length(stop) > 0)
        in_use = processors_in_use(settings)  # loop invariants: found once, not at every step
        weights = self.step.loop_weights()

        def check_stop(tail, prev_ids, next_ids):
            return ends_with_stop(tail, self.pieces(prev_ids, next_ids), stop)

        def general_loop():
            """Any mix of processors and stop strings; a row ends at its length or its stop string."""

            def body(t, logits, states, prev_ids, seen, done, count, tail, out):
                next_ids = next_token(
                    logits + never_oov, seen, settings, tf.stack([seed, tf.cast(t, tf.int64)]), in_use
                )
                ended = tf.equal(next_ids, document_end)  # a document's end: not part of the text
                active = tf.logical_and(tf.logical_not(done), tf.logical_not(ended))
                out = out.write(t, tf.where(active, next_ids, 0))
                count += tf.cast(active, tf.int32)
                seen = tf.cond(
                    in_use[0],
                    lambda: tf.logical_or(
                        seen, tf.one_hot(tf.where(active, next_ids, -1), vocab, on_value=True, off_value=False)
                    ),
                    lambda: seen,
                )  # only the penalty reads it
                if stop is None:
                    matched = tf.zeros_like(done)
                else:  # string ops only when some row has a stop string
                    tail, matched = tf.cond(
                        has_stop, lambda: check_stop(tail, prev_ids, next_ids), lambda: (tail, tf.zeros_like(done))
                    )
                done = tf.logical_or(tf.logical_or(done, ended), tf.logical_or(count >= max_new_chars, matched))
                logits, states = self.step(next_ids, states, weights)
                return t + 1, logits, states, next_ids, seen, done, count, tail, out

            def more(t, logits, states, prev_ids, seen, done, *_):
                return tf.logical_and(t < num_steps, tf.logical_not(tf.reduce_all(done)))

            start = (0, logits, states, prev_ids, seen, done, count, tail, tf.TensorArray(tf.int32, size=num_steps))
            steps, *_, counts, _, out = tf.while_loop(more, body, start)
            return tf.transpose(out.stack())[:, :steps], counts  # (batch, steps) padded with 0, (batch,)

        def plain_loop():
            """Temperature only (no row uses a processor or a stop string): the same draws as
            `general_loop`, without its per-step conditionals and stop bookkeeping (each row runs its
            `max_new_chars`); decided once per call, so the common case pays for none of them."""

            def body(t, logits, states, out):
                next_ids = sample_next(logits + never_oov, settings.temperature, tf.stack([seed, tf.cast(t, tf.int64)]))
                logits, states = self.step(next_ids, states, weights)
                return t + 1, logits, states, out.write(t, next_ids)

            start = (0, logits, states, tf.TensorArray(tf.int32, size=num_steps))
            out = tf.while_loop(lambda t, *_: t < num_steps, body, start)[-1]
            counts = tf.maximum(max_new_chars, 0)
            return tf.where(tf.sequence_mask(counts, num_steps), tf.transpose(out.stack()), 0), counts

        documents = tf.constant(self.document_end is not None)  # rows end at the end marker: the general loop
        return tf.cond(tf.reduce_any(tf.stack([*in_use, has_stop, documents])), general_loop, plain_loop)

    def never_sampled(self, vocab) -> tf.Tensor:
        """`(vocab,)` logit offsets: -1e9 on the ids never generated (OOV, a document's start marker), else 0."""
        banned = [0] if self.document_start is None else [0, self.document_start]
        return tf.reduce_sum(tf.one_hot(banned, vocab, on_value=-1e9, off_value=0.0), axis=0)

    def seen_ids(self, ids: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        """Bool `(batch, vocab)`: which ids occur in each row's first `lengths` `ids` `(batch, time)`."""
        positions = tf.where(tf.sequence_mask(lengths, tf.shape(ids)[1]))  # (n, 2): row, time
        pairs = tf.stack([positions[:, 0], tf.cast(tf.gather_nd(ids, positions), tf.int64)], axis=1)
        shape = tf.cast(tf.stack([tf.shape(ids)[0], len(self.vocabulary) + 1]), tf.int64)
        return tf.scatter_nd(pairs, tf.ones(tf.shape(pairs)[:1], tf.int32), shape) > 0

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

        Args:
            prompt: tf.string `(batch,)`.
            temperature: float `()` or `(batch,)`, >= 0; 0 is greedy.
            max_new_chars: int `()` or `(batch,)`, 0..MAX_NEW_CHARS, characters generated per row.
            seed: int `()` or `(batch,)`; the first value seeds the batch, a negative one draws a random seed.
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
        seed = tf.reshape(tf.cast(seed, tf.int64), [-1])[0]
        temperature, top_k, top_p, penalty = settings
        checks = [
            tf.debugging.assert_all_finite(temperature, "temperature must be a finite number"),
            tf.debugging.assert_greater_equal(temperature, 0.0, message="temperature must be >= 0"),
            tf.debugging.assert_greater_equal(max_new_chars, 0, message="max_new_chars must be >= 0"),
            tf.debugging.assert_less_equal(
                max_new_chars, MAX_NEW_CHARS, message=f"max_new_chars must be <= {MAX_NEW_CHARS}"
            ),
            tf.debugging.assert_greater_equal(top_k, 0, message="top_k must be >= 0 (0 = off)"),
            tf.debugging.assert_greater(top_p, 0.0, message="top_p must be in (0, 1] (1 = off)"),
            tf.debugging.assert_less_equal(top_p, 1.0, message="top_p must be in (0, 1] (1 = off)"),
            tf.debugging.assert_all_finite(penalty, "repetition_penalty must be a finite number"),
            tf.debugging.assert_greater(penalty, 0.0, message="repetition_penalty must be > 0 (1 = off)"),
        ]
        with tf.control_dependencies(checks):  # before anything is sized by max_new_chars
            seed = tf.where(seed < 0, tf.random.uniform([], 0, 2**31 - 1, dtype=tf.int64), seed)
            max_new_chars = tf.identity(max_new_chars)
        ids, lengths = self.encode(prompt)
        logits, states = self.prime(ids, lengths)
        last_ids = tf.gather(ids, lengths - 1, batch_dims=1)  # (batch,) the last prompt id
        new_ids, counts = self.sample_ids(
            logits,
            states,
            settings,
            max_new_chars,
            seed,
            seen=self.seen_ids(ids, lengths),
            prev_ids=last_ids,
            stop=stop,
        )
        generated = self.detokenize(last_ids, new_ids, counts)
        if self.level == "word":  # "to be " + " or" would double the space
            ends_in_space = tf.strings.regex_full_match(prompt, r"(?s).*\s")
            generated = tf.where(ends_in_space, tf.strings.regex_replace(generated, "^ ", ""), generated)
        return {"text": prompt + generated, "generated": generated}

    # --- Python convenience API ---
    def generate(
        self,
        prompts: str | Sequence[str],
        temperature: float | Sequence[float] = 0.8,
        max_new_chars: int = 500,
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

        Args:
            prompts: str or list[str].
            temperature: float, or one per prompt, >= 0 (0 = greedy); several for one prompt give one
                row per temperature (`generate("A", [0.2, 1.0])` → 2 texts). Default 0.8.
            max_new_chars: int in 1..MAX_NEW_CHARS. Default 500.
            seed: int >= 0 for reproducible output, None for a random draw.
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
        top_k, top_p = check_top_k(top_k), check_top_p(top_p)
        repetition_penalty, stop = check_repetition_penalty(repetition_penalty), check_stop(stop)
        if oov not in OOV_POLICIES[self.level]:
            raise ChargenError(
                f"oov must be one of {', '.join(OOV_POLICIES[self.level])} for a {self.level}-level model; got {oov!r}"
            )
        if oov == "error":
            self._check_known(prompts)
        if self._compiled is None:  # trace once; every call reuses the graph
            self._compiled = tf.function(
                self.call,
                input_signature=[
                    tf.TensorSpec([None], tf.string),
                    tf.TensorSpec([None], tf.float32),
                    tf.TensorSpec([None], tf.int32),
                    tf.TensorSpec([None], tf.int64),
                    tf.TensorSpec([None], tf.int32),
                    tf.TensorSpec([None], tf.float32),
                    tf.TensorSpec([None], tf.float32),
                    tf.TensorSpec([None], tf.string),
                ],
            )
        rows = len(prompts)
        outputs = self._compiled(
            tf.constant(prompts),
            tf.constant(temps, tf.float32),
            tf.fill([rows], max_new_chars),
            tf.constant([-1 if seed is None else seed], tf.int64),
            tf.fill([rows], top_k),
            tf.fill([rows], top_p),
            tf.fill([rows], repetition_penalty),
            tf.fill([rows], stop),
        )
        return [s.decode("utf-8") for s in outputs["text" if include_prompt else "generated"].numpy()]

    def _check_known(self, prompts: Sequence[str]) -> None:
        """Raise `ChargenError` naming the prompt tokens outside the vocabulary."""
        known = set(self.vocabulary)
        tokens = (t for p in prompts for t in (p if self.level == "char" else tokenize(p, self.lowercase)))
        unknown = list(dict.fromkeys(t for t in tokens if t not in known))
        if unknown:
            if self.level == "char":
                shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in unknown[:10])
                what, hint = "characters", "--oov skip to drop them"
            else:
                shown, what, hint = ", ".join(repr(w) for w in unknown[:10]), "words", "--oov unk to feed them as [UNK]"
            raise ChargenError(
                f"prompt has {what} not in the model's vocabulary: {shown}"
                f"{' …' if len(unknown) > 10 else ''}; use {hint}"
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
    for value in temps:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or math.isnan(value):
            raise ChargenError(f"temperature must be a number >= 0; got {value!r}")
        if value < 0 or math.isinf(value):
            raise ChargenError(f"temperature must be a finite number >= 0; got {value}")
    if isinstance(max_new_chars, bool) or not isinstance(max_new_chars, (int, np.integer)):
        raise ChargenError(f"length must be an integer; got {max_new_chars!r}")
    if not 1 <= max_new_chars <= MAX_NEW_CHARS:
        raise ChargenError(f"length must be between 1 and {MAX_NEW_CHARS}; got {max_new_chars}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ChargenError(f"seed must be an integer >= 0; got {seed!r}")
    return [float(t) for t in temps]


def ends_with_stop(tail: tf.Tensor, piece: tf.Tensor, stop: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Append `piece` to `tail` (all tf.string `(batch,)`), keep as many last bytes as `stop` has.

    Returns the new tail and whether it equals `stop` (never for an empty `stop`): since the tail
    holds the last bytes of the generated text, that is "the text now ends with `stop`" (a UTF-8
    suffix match on bytes is a match on characters).
    """
    size = tf.strings.length(stop)  # bytes
    text = tail + piece
    start = tf.maximum(tf.strings.length(text) - size, 0)
    tail = tf.strings.substr(text, start, size)
    return tail, tf.logical_and(size > 0, tf.equal(tail, stop))


def check_stop(stop: str | None) -> str:
    """A stop string: a non-empty str of at most MAX_STOP_CHARS characters ("" = off for None)."""
    if stop is None:
        return ""
    if not isinstance(stop, str) or not stop:
        raise ChargenError(f"stop must be a non-empty string; got {stop!r}")
    if len(stop) > MAX_STOP_CHARS:
        raise ChargenError(f"stop has {len(stop)} characters; the maximum is {MAX_STOP_CHARS}")
    return stop


def expand_temperatures(prompts: list[str], temperature) -> list[str]:
    """One prompt with several temperatures → the prompt once per temperature (one row each)."""
    if len(prompts) == 1 and isinstance(temperature, (list, tuple, np.ndarray)) and len(temperature) > 1:
        return prompts * len(temperature)
    return prompts

"""`IdGenerator`: the step function and the whole generation loop on ids only, for TFLite and ONNX.

String ops (UnicodeDecode/Encode, lookup tables, ReduceJoin) and stateless random ops convert
neither to TFLite builtins nor to ONNX, so these graphs take and return ids and sample with
`tf.random.categorical` (TFLite MULTINOMIAL, ONNX Multinomial). The recurrent step and the
prompt priming are the `CharGenerator`'s own (`RecurrentStep`, `CharGenerator.prime`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_chargen.generation import CharGenerator
from keras_chargen.sampling import apply_temperature


class IdGenerator:
    """Id-level graphs of a `CharGenerator`: `step` (one character) and `generate` (the whole loop).

    `step(ids, *states)`: ids int32 `(batch,)` and one float32 `(batch, units)` tensor per state
    (`h_0, c_0, h_1, …`) → `{"logits": (batch, vocab), <prefix>h_0: …, …}`.

    `generate(prompt_ids, temperature, num_chars)`: prompt ids int32 `(batch, time)`, right-padded
    with 0 (a row of zeros is an empty prompt, primed on a newline as in `CharGenerator`; a 0 before
    the row's last non-zero id is the `[UNK]` token, which word-level models were trained on),
    temperature float32 `(batch,)` (<= 0 is greedy), num_chars int32 `()` → `{"ids": (batch, num_chars)}`.

    Args:
        generator: CharGenerator whose model and vocabulary are exported.
        state_output_prefix: str, prefix of the new-state output names. Default "" (outputs are
            named like the inputs, convenient for signature runners); ONNX needs distinct names.

    Example:
    >>> ids = IdGenerator(load_generator("models/tiny"))  # doctest: +SKIP
    >>> ids.generate(tf.constant([[5, 9, 2]]), tf.constant([0.0]), tf.constant(20))["ids"].shape  # doctest: +SKIP
    TensorShape([1, 20])
    """

    def __init__(self, generator: CharGenerator, state_output_prefix: str = "") -> None:
        self.generator = generator
        self.state_output_prefix = state_output_prefix
        self.recurrent_step = generator.step
        self.vocab_size = len(generator.vocabulary) + 1
        never_oov = np.zeros([self.vocab_size], np.float32)
        never_oov[0] = -1e9  # the OOV id 0 is never generated
        if generator.document_start is not None:
            never_oov[generator.document_start] = -1e9  # nor a document's start marker
        self._never_oov = never_oov
        self.document_start, self.document_end = generator.document_start, generator.document_end

    @property
    def state_names(self) -> list[str]:
        """Input names of the states, e.g. `h_0, c_0, h_1, c_1`."""
        return self.recurrent_step.state_names

    @property
    def output_state_names(self) -> list[str]:
        """Output names of the new states (the input names with `state_output_prefix`)."""
        return [self.state_output_prefix + name for name in self.state_names]

    def step_signature(self) -> list[tf.TensorSpec]:
        """`ids (batch,)` int32, then one `(batch, units)` float32 spec per state."""
        return [tf.TensorSpec([None], tf.int32, name="ids")] + [
            tf.TensorSpec([None, size], tf.float32, name=name)
            for name, size in zip(self.state_names, self.recurrent_step.state_sizes)
        ]

    @staticmethod
    def generate_signature() -> list[tf.TensorSpec]:
        return [
            tf.TensorSpec([None, None], tf.int32, name="prompt_ids"),
            tf.TensorSpec([None], tf.float32, name="temperature"),
            tf.TensorSpec([], tf.int32, name="num_chars"),
        ]

    def step(self, ids: tf.Tensor, *states: tf.Tensor) -> dict[str, tf.Tensor]:
        """One character for every row: logits `(batch, vocab)` and the new states, by name."""
        logits, new_states = self.recurrent_step(ids, list(states))
        return {"logits": logits, **dict(zip(self.output_state_names, new_states))}

    def sample(self, logits: tf.Tensor, temperature: tf.Tensor) -> tf.Tensor:
        """Next ids `(batch,)`: `categorical(logits / T)` where `T > 0`, argmax elsewhere; never OOV."""
        logits = logits + self._never_oov  # (batch, vocab)
        greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
        sampled = tf.random.categorical(apply_temperature(logits, temperature), 1, dtype=tf.int32)[:, 0]
        return tf.where(temperature > 0, sampled, greedy)

    def prompt_lengths(self, prompt_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Ids with empty rows set to the start id, and the row lengths (>= 1)."""
        # the length is up to the last non-zero id: trailing zeros pad, inner zeros are [UNK] words
        positions = tf.range(1, tf.shape(prompt_ids)[1] + 1)[None, :] * tf.cast(prompt_ids > 0, tf.int32)
        lengths = tf.reduce_max(tf.concat([positions, tf.zeros_like(positions[:, :1])], 1), axis=1)  # (batch,)
        # tf.range == 0 rather than tf.one_hot: a boolean OneHot does not convert to ONNX
        first = tf.equal(tf.range(tf.shape(prompt_ids)[1]), 0)  # (time,)
        empty_start = tf.logical_and((lengths == 0)[:, None], first[None, :])
        return tf.where(empty_start, self.generator.start_id, prompt_ids), tf.maximum(lengths, 1)

    def document_prompts(self, prompt_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Document model: every row primed on the start marker followed by its prompt ids; (ids, lengths)."""
        ids, lengths = self.prompt_lengths(prompt_ids)
        has_prompt = tf.reduce_max(prompt_ids, axis=1) > 0  # (batch,)
        lengths = tf.where(has_prompt, lengths + 1, 1)
        starts = tf.fill(tf.stack([tf.shape(prompt_ids)[0], 1]), tf.constant(self.document_start, tf.int32))
        return tf.concat([starts, prompt_ids], axis=1), lengths

    def generate(self, prompt_ids: tf.Tensor, temperature: tf.Tensor, num_chars: tf.Tensor) -> dict[str, tf.Tensor]:
        """Prime on the prompts, then sample up to `num_chars` ids per row in one `tf.while_loop`.

        A document model's rows stop after sampling the end marker (written as the padding id 0,
        as is everything after it); the loop ends when every row has stopped, so `ids` may be
        shorter than `num_chars`.
        """
        if self.document_end is None:
            ids, lengths = self.prompt_lengths(prompt_ids)
        else:
            ids, lengths = self.document_prompts(prompt_ids)
        logits, states = self.generator.prime(ids, lengths, per_gate=False)  # whole-layer products run faster there
        batch = tf.shape(ids)[0]
        end = -1 if self.document_end is None else self.document_end

        def body(t, logits, states, done, out):
            next_ids = self.sample(logits, temperature)
            done = tf.logical_or(done, tf.equal(next_ids, end))  # (batch,) the end marker is not text
            # a growing tensor, not a TensorArray: TFLite lowers TensorLists to builtins only when
            # the element shape is static, and the batch is not
            out = tf.concat([out, tf.where(done, 0, next_ids)[:, None]], axis=1)
            logits, states = self.recurrent_step(next_ids, states)
            return t + 1, logits, states, done, out

        def more(t, logits, states, done, out):
            # REDUCE_MAX of ints: a builtin in TFLite and ONNX (unlike a boolean "all")
            return tf.logical_and(t < num_chars, tf.reduce_max(1 - tf.cast(done, tf.int32)) > 0)

        out = tf.zeros(tf.stack([batch, 0]), tf.int32)
        done = tf.zeros([batch], tf.bool)
        invariants = (
            tf.TensorShape([]),
            logits.shape,
            [s.shape for s in states],
            tf.TensorShape([None]),
            tf.TensorShape([None, None]),
        )
        *_, out = tf.while_loop(more, body, (0, logits, states, done, out), shape_invariants=invariants)
        return {"ids": out}  # (batch, at most num_chars)

    def archive(self) -> keras.export.ExportArchive:
        """An `ExportArchive` with the `step` and `generate` endpoints.

        TFLite converts from this archive's SavedModel: converting `tf.saved_model.save` of a
        `tf.Module` holding Keras 3 layers silently drops the weights.
        """
        archive = keras.export.ExportArchive()
        archive.track(self.generator.model)
        archive.add_endpoint("step", self.step, input_signature=self.step_signature())
        archive.add_endpoint("generate", self.generate, input_signature=self.generate_signature())
        return archive

"""`IdGenerator`: the step function and the whole generation loop on ids only, for TFLite and ONNX.

String ops (UnicodeDecode/Encode, lookup tables, ReduceJoin) convert neither to TFLite builtins
nor to ONNX, so these graphs take and return ids. Everything else is the `CharGenerator`'s own: the
recurrent step, the prompt priming and the decode loop of `keras_chargen.decoding` with the full
sampler and its counter-based seeded draw (built from ops that convert to builtins), so the same
prompt ids, seed and settings give the same ids as the SavedModel.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_chargen import decoding
from keras_chargen.generation import CharGenerator
from keras_chargen.sampling import SamplingSettings


class IdGenerator:
    """Id-level graphs of a `CharGenerator`: `step` (one character) and `generate` (the whole loop).

    `step(ids, *states)`: ids int32 `(batch,)` and one float32 `(batch, units)` tensor per state
    (`h_0, c_0, h_1, …`) → `{"logits": (batch, vocab), <prefix>h_0: …, …}`.

    `generate(prompt_ids, max_new_chars, temperature, seed, top_k, top_p, repetition_penalty,
    stop_ids)`: prompt ids int32 `(batch, time)`, right-padded with 0 (a row of zeros is an empty
    prompt, primed on a newline as in `CharGenerator`; a 0 before the row's last non-zero id is the
    `[UNK]` token, which word-level models were trained on), max_new_chars int32 `()`, then one value
    per row: temperature float32 (0 = greedy), seed int32, top_k int32 (0 = off), top_p float32 (1 =
    off), repetition_penalty float32 (1 = off), and stop_ids int32 `(batch, s)` right-padded with 0
    (a row stops after generating one of them, which is its last id; all 0 = off) →
    `{"ids": (batch, max_new_chars)}`, 0 after a row stops. A document model's end marker stops a
    row the same way (it is the row's last id); its start marker is put before every prompt.

    Args:
        generator: CharGenerator whose model and vocabulary are exported.
        state_output_prefix: str, prefix of the new-state output names. Default "" (outputs are
            named like the inputs, convenient for signature runners); ONNX needs distinct names.
        conditional: bool, skip unused processors inside the general loop with `tf.cond`. Default
            False: one straight loop body (cheaper than a conditional per step in LiteRT and onnxruntime).
        lean: bool, run the lean loop when no row uses a filter or a stop id (a `tf.cond` around
            the two loops: TFLite `IF`, ONNX `If`). Default True.

    Example:
    >>> ids = IdGenerator(load_generator("models/tiny"))  # doctest: +SKIP
    >>> rows = dict(temperature=[0.8], seed=[1], top_k=[40], top_p=[0.9], repetition_penalty=[1.0])
    >>> ids.generate([[5, 9, 2]], 20, stop_ids=[[0]], **rows)["ids"].shape  # doctest: +SKIP
    TensorShape([1, 20])
    """

    def __init__(
        self, generator: CharGenerator, state_output_prefix: str = "", conditional: bool = False, lean: bool = True
    ) -> None:
        self.generator = generator
        self.conditional, self.lean = conditional, lean
        self.state_output_prefix = state_output_prefix
        self.recurrent_step = generator.step
        self.vocab_size = len(generator.vocabulary) + 1

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
        """The `generate` inputs: ids and every id-level setting, one value per row (`max_new_chars` a scalar)."""
        return [
            tf.TensorSpec([None, None], tf.int32, name="prompt_ids"),
            tf.TensorSpec([], tf.int32, name="max_new_chars"),
            tf.TensorSpec([None], tf.float32, name="temperature"),
            tf.TensorSpec([None], tf.int32, name="seed"),
            tf.TensorSpec([None], tf.int32, name="top_k"),
            tf.TensorSpec([None], tf.float32, name="top_p"),
            tf.TensorSpec([None], tf.float32, name="repetition_penalty"),
            tf.TensorSpec([None, None], tf.int32, name="stop_ids"),
        ]

    def step(self, ids: tf.Tensor, *states: tf.Tensor) -> dict[str, tf.Tensor]:
        """One character for every row: logits `(batch, vocab)` and the new states, by name."""
        logits, new_states = self.recurrent_step(ids, list(states))
        return {"logits": logits, **dict(zip(self.output_state_names, new_states))}

    def prompt_lengths(self, prompt_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The ids each row is primed on `(batch, time')` and their lengths `(batch,)` (>= 1).

        A row's length runs to its last non-zero id (trailing zeros pad; inner zeros are `[UNK]`
        words). A document model puts its start marker first; otherwise an empty row is the start id.
        """
        start = self.generator.document_start
        if start is not None:
            prompt_ids = tf.concat([tf.fill(tf.stack([tf.shape(prompt_ids)[0], 1]), start), prompt_ids], axis=1)
        positions = tf.range(1, tf.shape(prompt_ids)[1] + 1)[None, :] * tf.cast(prompt_ids > 0, tf.int32)
        lengths = tf.reduce_max(tf.concat([positions, tf.zeros_like(positions[:, :1])], 1), axis=1)  # (batch,)
        if start is not None:
            return prompt_ids, lengths
        # an empty row: the start id in a first column of its own (tf.range == 0, not a boolean OneHot: ONNX)
        prompt_ids = tf.concat([prompt_ids, tf.zeros_like(prompt_ids[:, :1])], axis=1)
        first = tf.equal(tf.range(tf.shape(prompt_ids)[1]), 0)  # (time,)
        empty_start = tf.logical_and((lengths == 0)[:, None], first[None, :])
        return tf.where(empty_start, self.generator.start_id, prompt_ids), tf.maximum(lengths, 1)

    def generate(
        self,
        prompt_ids: tf.Tensor,
        max_new_chars: tf.Tensor,
        temperature: tf.Tensor,
        seed: tf.Tensor,
        top_k: tf.Tensor,
        top_p: tf.Tensor,
        repetition_penalty: tf.Tensor,
        stop_ids: tf.Tensor,
    ) -> dict[str, tf.Tensor]:
        """Prime on the prompts, then the decode loop: `{"ids": (batch, max_new_chars)}`, 0 after a row stops."""
        ids, lengths = self.prompt_lengths(prompt_ids)
        logits, states = self.generator.prime(ids, lengths, per_gate=False)  # whole-layer products run faster there
        batch = tf.shape(ids)[0]
        settings = SamplingSettings(temperature, top_k, top_p, repetition_penalty)
        if self.generator.end_ids:  # the document-end marker stops every row
            stop_ids = tf.concat([stop_ids, tf.fill(tf.stack([batch, 1]), self.generator.end_ids[0])], axis=1)
        prev_ids = tf.gather(ids, lengths - 1, batch_dims=1)
        seen = decoding.seen_from_ids(ids, lengths, self.vocab_size)
        max_new = tf.fill([batch], max_new_chars)
        state = decoding.start_state(logits, states, prev_ids, seen, max_new)
        out, _ = decoding.decode(
            self.recurrent_step,
            state,
            settings,
            decoding.row_seeds(seed, batch),
            max_new,
            max_new_chars,
            banned=self.generator.banned_ids,
            stop_ids=stop_ids,
            conditional=self.conditional,
            lean=self.lean,
            growing_output=True,
        )
        # the loop ends early once every row has stopped: pad to the promised width
        width = tf.maximum(max_new_chars, 0)
        return {"ids": tf.pad(out, tf.stack([[0, 0], [0, width - tf.shape(out)[1]]]))}  # (batch, max_new_chars)

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

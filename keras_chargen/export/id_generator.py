"""`IdGenerator`: the step function and the whole generation loop on ids only, for TFLite and ONNX.

String ops (UnicodeDecode/Encode, lookup tables, ReduceJoin) convert neither to TFLite builtins
nor to ONNX, so these graphs take and return ids. Everything else is the `CharGenerator`'s own: the
recurrent step, the prompt priming and the decode loop of `keras_chargen.decoding` with the full
sampler and its counter-based seeded draw (built from ops that convert to builtins), so the same
prompt ids, seed and settings give the same ids as the SavedModel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from keras_chargen import contract, decoding
from keras_chargen.generation import CharGenerator, tensor_specs, with_parameters
from keras_chargen.sampling import settings_from


class IdGenerator:
    """Id-level graphs of a `CharGenerator`: `step` (one token) and `generate` (the whole loop).

    Their inputs and outputs are `keras_chargen.contract.STEP` and `contract.GENERATE`:

    `step(ids, *states)`: ids int32 `(batch,)` and one float32 `(batch, units)` tensor per state
    (`h_0, c_0, h_1, …`) → `{"logits": (batch, vocab), h_0: …, …}`.

    `generate(prompt_ids, <settings>)`: prompt ids int32 `(batch, time)`, right-padded with 0 (a
    row of zeros is an empty prompt, primed on a newline as in `CharGenerator`; a 0 before the row's
    last non-zero id, or any negative id, is the `[UNK]` token, which word-level models were trained
    on), then every setting of `keras_chargen.settings` in its id form, one value per row
    (`max_new_chars` one int32 for the batch; `stop_ids` int32 `(batch, n, s)`, n stop sequences
    right-padded with 0; `seed` negative = draw one) → `{"ids": (batch, max_new_chars), "seed":
    (batch,)}`: 0 after a row stops, and the seed each row used. A document model's end marker stops
    a row the same way (it is the row's last id); its start marker is put before every prompt.

    Args:
        generator: CharGenerator whose model and vocabulary are exported.
        onnx_names: bool, name the outputs that share an input's name as ONNX needs
            (`contract.onnx_output_name`: `new_h_0`, `new_seed`). Default False (the names of the
            contract, convenient for signature runners).
        conditional: bool, skip unused processors inside the general loop with `tf.cond`. Default
            False: one straight loop body (cheaper than a conditional per step in LiteRT and onnxruntime).
        lean: bool, run the lean loop when no row uses a filter or a stop sequence (a `tf.cond` around
            the two loops: TFLite `IF`, ONNX `If`). Default True.

    Example:
    >>> ids = IdGenerator(load_generator("models/tiny"))  # doctest: +SKIP
    >>> inputs = generate_inputs([[5, 9, 2]], 20, 0.8, seed=1, top_k=40)  # keras_chargen.export.runtimes
    >>> ids.generate(**{k: tf.constant(v) for k, v in inputs.items()})["ids"].shape  # doctest: +SKIP
    TensorShape([1, 20])
    """

    def __init__(
        self, generator: CharGenerator, onnx_names: bool = False, conditional: bool = False, lean: bool = True
    ) -> None:
        self.generator = generator
        self.conditional, self.lean = conditional, lean
        self.onnx_names = onnx_names
        self.recurrent_step = generator.step
        self.vocab_size = generator.vocab_size

    @property
    def state_names(self) -> list[str]:
        """Input names of the states, e.g. `h_0, c_0, h_1, c_1`."""
        return self.recurrent_step.state_names

    def output_name(self, signature: contract.Signature, name: str) -> str:
        """An output's name in the exported file (`contract.onnx_output_name` for ONNX)."""
        return contract.onnx_output_name(signature, name) if self.onnx_names else name

    def step_signature(self) -> list[tf.TensorSpec]:
        """`ids (batch,)` int32, then one `(batch, units)` float32 spec per state."""
        return tensor_specs(contract.STEP.inputs, self.generator.state_specs)

    @staticmethod
    def generate_signature() -> list[tf.TensorSpec]:
        """The `generate` inputs: `prompt_ids` and every setting in its id form (`contract.GENERATE`)."""
        return tensor_specs(contract.GENERATE.inputs)

    def step(self, ids: tf.Tensor, *states: tf.Tensor) -> dict[str, tf.Tensor]:
        """One token for every row: logits `(batch, vocab)` and the new states, by name."""
        logits, new_states = self.recurrent_step(ids, list(states))
        outputs = {"logits": logits, **dict(zip(self.state_names, new_states))}
        return {self.output_name(contract.STEP, k): v for k, v in outputs.items()}

    def prompt_lengths(self, prompt_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The ids each row is primed on `(batch, time')` and their lengths `(batch,)` (>= 1).

        A row's length runs to its last non-zero id (trailing zeros pad; inner zeros and negative ids are
        `[UNK]` words, id 0). A document model puts its start marker first; otherwise an empty row is the
        start id.
        """
        prompt_ids = tf.cast(prompt_ids, tf.int32)
        start = self.generator.document_start
        if start is not None:
            prompt_ids = tf.concat([tf.fill(tf.stack([tf.shape(prompt_ids)[0], 1]), start), prompt_ids], axis=1)
        positions = tf.range(1, tf.shape(prompt_ids)[1] + 1)[None, :] * tf.cast(prompt_ids != 0, tf.int32)
        lengths = tf.reduce_max(tf.concat([positions, tf.zeros_like(positions[:, :1])], 1), axis=1)  # (batch,)
        prompt_ids = tf.maximum(prompt_ids, 0)  # a negative id is [UNK]
        if start is not None:
            return prompt_ids, lengths
        # an empty row: the start id in a first column of its own (tf.range == 0, not a boolean OneHot: ONNX)
        prompt_ids = tf.concat([prompt_ids, tf.zeros_like(prompt_ids[:, :1])], axis=1)
        first = tf.equal(tf.range(tf.shape(prompt_ids)[1]), 0)  # (time,)
        empty_start = tf.logical_and((lengths == 0)[:, None], first[None, :])
        return tf.where(empty_start, self.generator.start_id, prompt_ids), tf.maximum(lengths, 1)

    def generate(self, prompt_ids: tf.Tensor, *values: tf.Tensor, **named: tf.Tensor) -> dict[str, tf.Tensor]:
        """Prime on the prompts, then the decode loop: `{"ids": (batch, max_new_chars), "seed": (batch,)}`.

        The settings follow `prompt_ids` in the order of `contract.GENERATE` (or by name).
        """
        given = {**dict(zip(contract.GENERATE.input_names[1:], values)), **named}
        ids, lengths = self.prompt_lengths(prompt_ids)
        batch = tf.shape(ids)[0]
        length = tf.cast(given["max_new_chars"], tf.int32)
        max_new = tf.fill([batch], length)
        seeds = decoding.resolve_seeds(given["seed"], batch)
        state, stop_ids = self.generator.begin(ids, lengths, max_new, given["stop_ids"], per_gate=False)
        out, _ = self.generator.run(
            state,
            settings_from(given, batch),
            seeds,
            max_new,
            stop_ids,
            length,
            per_gate=False,  # whole-layer products run faster in LiteRT and onnxruntime
            conditional=self.conditional,
            lean=self.lean,
            growing_output=True,
        )
        # the loop ends early once every row has stopped: pad to the promised width
        width = tf.maximum(length, 0)
        ids_out = tf.pad(out, tf.stack([[0, 0], [0, width - tf.shape(out)[1]]]))  # (batch, max_new_chars)
        return {self.output_name(contract.GENERATE, k): v for k, v in {"ids": ids_out, "seed": seeds}.items()}

    def decode_signature(self) -> list[tf.TensorSpec]:
        """The `decode` inputs (`contract.DECODE`), states expanded."""
        return tensor_specs(contract.DECODE.inputs, self.generator.state_specs)

    def decode(self, *inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """A stream on ids (`contract.DECODE`): with `start`, prime on `prompt_ids` (as `generate` does); otherwise
        go on from the carried state. Then up to `steps` tokens per row: `{"ids": (batch, <= steps), <the state>,
        "seed": (batch,)}`. The draws are keyed by (seed, token index), so any chunking gives `generate`'s ids."""
        names = [t.name for t in contract.expand(contract.DECODE.inputs, self.generator.state_specs)]
        given = dict(zip(names, inputs))
        vocab = self.vocab_size
        batch = tf.shape(given["count"])[0]
        seeds = decoding.resolve_seeds(given["seed"], batch)  # the resolved seeds go back in unchanged
        max_new = tf.cast(given["max_new_chars"], tf.int32)

        def begin() -> decoding.DecodeState:
            ids, lengths = self.prompt_lengths(given["prompt_ids"])
            state, _ = self.generator.begin(ids, lengths, max_new, given["stop_ids"], per_gate=False)
            return state

        def carried() -> decoding.DecodeState:
            states = [given[name] for name in self.state_names]
            logits, seen = (tf.ensure_shape(given[n], [None, vocab]) for n in ("logits", "seen"))
            return decoding.DecodeState(
                logits, states, given["prev_ids"], seen, given["done"], given["count"], given["recent"]
            )

        state = tf.cond(tf.cast(given["start"], tf.bool), begin, carried)
        state = state._replace(logits=tf.ensure_shape(state.logits, [None, vocab]))
        stop_ids = decoding.with_end_ids(given["stop_ids"], self.generator.end_ids)  # as `begin` prepares them
        ids, final = self.generator.run(
            state,
            settings_from(given, batch),
            seeds,
            max_new,
            stop_ids,
            tf.cast(given["steps"], tf.int32),
            per_gate=False,
            conditional=self.conditional,
            lean=self.lean,
            growing_output=True,
        )
        values = {**final._asdict(), **dict(zip(self.state_names, final.states)), "ids": ids, "seed": seeds}
        names = [t.name for t in contract.expand(contract.DECODE.outputs, self.generator.state_specs)]
        return {self.output_name(contract.DECODE, name): values[name] for name in names}

    def archive(self, endpoints: tuple[str, ...] = ("step", "generate")) -> keras.export.ExportArchive:
        """An `ExportArchive` with the `endpoints` (`step`, `generate`, `decode`).

        TFLite converts from this archive's SavedModel: converting `tf.saved_model.save` of a
        `tf.Module` holding Keras 3 layers silently drops the weights.
        """
        archive = keras.export.ExportArchive()
        archive.track(self.generator.model)
        functions: dict[str, tuple[Callable[..., Any], list[tf.TensorSpec]]] = {
            "step": (self.step, self.step_signature()),
            "generate": (self.generate, self.generate_signature()),
            "decode": (self.decode, self.decode_signature()),
        }
        for name in endpoints:
            fn, specs = functions[name]
            archive.add_endpoint(name, with_parameters(fn, specs), input_signature=specs)
        return archive

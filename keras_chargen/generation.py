"""`CharGenerator`: a Keras layer that generates text in-graph, strings in and strings out.

Preprocess (the level's codec splits the prompt and looks it up) → prime the recurrent state on the
whole prompt in one `tf.while_loop` pass → the decode loop of `keras_chargen.decoding` (the same
loop every export runs), carrying the states and sampling each token in-graph → postprocess (the
codec's text of each token, joined). One compiled function, no Python per character.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from keras_chargen import contract, decoding
from keras_chargen.codecs import make_codec
from keras_chargen.errors import ChargenError
from keras_chargen.model import RecurrentStep
from keras_chargen.sampling import SamplingSettings, settings_from
from keras_chargen.settings import (
    BY_NAME,
    MAX_NEW_CHARS,
    SETTINGS,
    check_api,
    check_generation_args,
    check_stops,
    expand_temperatures,
    offs,
)

SIGNATURE_DTYPES = {"float32": tf.float32, "int32": tf.int32, "string": tf.string, "bool": tf.bool}
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

    def build(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to build: the model and the codec are built already (the settings are not shapes to build from)."""
        self.built = True

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

    # --- graph pieces, reused by the exporters (`serving_default`, `generate`, `decode_start`, `decode_chunk`) ---
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

    def stop_ids(self, stop: tf.Tensor) -> tf.Tensor:
        """Stop strings `(batch, n)` → stop sequences `(batch, n, s)` (`keras_chargen.contract`), by the codec."""
        return self.codec.stop_ids(stop)

    def begin(
        self, ids: tf.Tensor, lengths: tf.Tensor, max_new: tf.Tensor, stop_ids: tf.Tensor, per_gate: bool = True
    ) -> tuple[decoding.DecodeState, tf.Tensor]:
        """`decoding.begin` for this model: prime on `ids` `(batch, time)` / `lengths`, with the end marker as a
        stop sequence. Returns the start state and the stop sequences to decode with."""
        return decoding.begin(
            lambda i, n: self.prime(i, n, per_gate), ids, lengths, max_new, stop_ids, self.vocab_size, self.end_ids
        )

    def run(
        self,
        state: decoding.DecodeState,
        settings: SamplingSettings,
        seeds: tf.Tensor,
        max_new: tf.Tensor,
        stop_ids: tf.Tensor | None,
        num_steps: tf.Tensor,
        per_gate: bool = True,
        **options: Any,
    ) -> tuple[tf.Tensor, decoding.DecodeState]:
        """Up to `num_steps` tokens per row from `state` with the decode loop; ids `(batch, steps)` and the new state.

        Args:
            state: from `begin` (or an earlier `run`); settings: one value per row; seeds: int32 `(batch,)`, >= 0.
            max_new: int32 `(batch,)`, tokens per row in all; stop_ids: from `begin`, or None for none at all.
            per_gate: step with `RecurrentStep.loop_weights` (TF); False: the weights as they are (TFLite, ONNX).
            options: `conditional`, `lean`, `growing_output` of `decoding.decode`.
        """
        weights = self.step.loop_weights() if per_gate else None
        return decoding.decode(
            lambda i, s: self.step(i, s, weights),
            state,
            settings,
            seeds,
            max_new,
            num_steps,
            banned=self.banned_ids,
            stop_ids=stop_ids,
            **options,
        )

    def detokenize(self, prev_ids: tf.Tensor, ids: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        """Generated ids `(batch, steps)` (the first one following `prev_ids` `(batch,)`) → text `(batch,)`."""
        previous = tf.concat([prev_ids[:, None], ids[:, :-1]], axis=1)  # (batch, steps)
        text = self.pieces(previous, ids)
        keep = tf.sequence_mask(lengths, tf.shape(ids)[1])  # padding adds nothing
        return tf.strings.reduce_join(tf.where(keep, text, ""), axis=1)

    def start(self, prompt, *values, **named) -> tuple[dict[str, tf.Tensor], decoding.DecodeState, tf.Tensor]:
        """Check the settings, resolve the seeds, encode and prime: what `call` and a stream's start share.

        Takes the arguments of `call`. Returns the settings in their id form (`contract.decode_settings`:
        `seed` as used, `stop_ids`), the start state and the prompts `(batch,)`.
        """
        prompt = tf.reshape(tf.convert_to_tensor(prompt, tf.string), [-1])
        batch = tf.shape(prompt)[0]
        given = setting_arguments(values, named)
        with tf.control_dependencies(row_checks(given, batch)):  # before broadcasting: a clear message
            rows = {s.name: per_row(given[s.name], s.dtype, batch) for s in SETTINGS}
        with tf.control_dependencies(in_graph_checks({k: v for k, v in rows.items() if k in NUMERIC})):
            seeds = decoding.resolve_seeds(given["seed"], batch)  # before anything is sized by max_new_chars
            max_new = tf.identity(rows["max_new_chars"])
        rows.update(seed=seeds, max_new_chars=max_new)
        ids, lengths = self.encode(prompt)
        state, stop_ids = self.begin(ids, lengths, max_new, self.stop_ids(rows.pop("stop")))
        return {**rows, "stop_ids": stop_ids}, state, prompt

    def call(self, prompt, *values, **named):
        """Generate; returns `{"text", "generated", "seed"}`: prompt + continuation, the continuation, each row's seed.

        The settings follow `prompt` in the order of `keras_chargen.settings.SETTINGS` (positionally or by
        name; those `settings.offs()` lists may be left out) and are checked in-graph.

        Args:
            prompt: tf.string `(batch,)`.
            temperature: float `()` or `(batch,)`, >= 0; 0 is greedy.
            max_new_chars: int `()` or `(batch,)`, 0..MAX_NEW_CHARS, tokens generated per row.
            seed: int32 `()`, `(1,)` or `(batch,)`: each row's seed (one seed for several rows seeds
                row i with seed + i); a negative one draws a random seed for its row (returned as `seed`).
            top_k: int `()` or `(batch,)`, >= 0; 0 = off.
            top_p: float `()` or `(batch,)`, in (0, 1]; 1 = off.
            repetition_penalty: float `()` or `(batch,)`, > 0; 1 = off.
            stop: tf.string `()`, `(batch,)` or `(batch, n)`: a row stops once its generated tokens end with
                those of one of its stop strings (included in the output); "" = unused.
        """
        rows, state, prompt = self.start(prompt, *values, **named)
        max_new = rows["max_new_chars"]
        ids, final = self.run(
            state,
            settings_from(rows, tf.shape(prompt)[0]),
            rows["seed"],
            max_new,
            rows["stop_ids"],
            tf.reduce_max(tf.concat([max_new, [0]], 0)),
        )
        generated = self.codec.finish(prompt, self.detokenize(state.prev_ids, ids, final.count))
        return {"text": prompt + generated, "generated": generated, "seed": rows["seed"]}

    def decode_start(self, prompt, *values) -> dict[str, tf.Tensor]:
        """The `decode_start` signature (`keras_chargen.contract`): a stream's decode state after priming, and
        its settings in the id form `decode_chunk` takes (arguments as `call`; `stop` may be `(batch, n)`)."""
        rows, state, prompt = self.start(prompt, *values)
        return {**self._state_outputs(state, prompt), **rows}

    def decode_chunk(self, *inputs) -> dict[str, tf.Tensor]:
        """The `decode_chunk` signature: up to `steps` more tokens per row, from and to a carried decode state.

        `inputs` follow `contract.SIGNATURES["decode_chunk"]` (states expanded). Returns the new state
        and `text`, what the chunk added to each row (the first chunk's text follows the prompt as
        `serving_default`'s `generated` does).
        """
        names = [t.name for t in contract.expand(contract.SIGNATURES["decode_chunk"].inputs, self.state_specs)]
        given = dict(zip(names, inputs))
        for name in ("logits", "seen"):  # (batch, vocab): the loop needs the width statically
            given[name] = tf.ensure_shape(given[name], [None, self.vocab_size])
        states = [given[name] for name in self.step.state_names]
        count = given["count"]
        state = decoding.DecodeState(
            given["logits"], states, given["prev_ids"], given["seen"], given["done"], count, given["recent"]
        )
        batch = tf.shape(count)[0]
        with tf.control_dependencies(in_graph_checks({k: v for k, v in given.items() if k in NUMERIC})):
            steps = tf.identity(given["steps"])
        ids, final = self.run(
            state, settings_from(given, batch), given["seed"], given["max_new_chars"], given["stop_ids"], steps
        )
        text = self.detokenize(state.prev_ids, ids, final.count - count)
        text = tf.where(count == 0, self.codec.finish(given["prompt"], text), text)
        return {**self._state_outputs(final, given["prompt"]), "text": text}

    @property
    def state_specs(self) -> list[tuple[str, int]]:
        """`(name, size)` of each recurrent state, in the step's order."""
        return list(zip(self.step.state_names, self.step.state_sizes))

    def _state_outputs(self, state: decoding.DecodeState, prompt: tf.Tensor) -> dict[str, tf.Tensor]:
        """A `DecodeState` by the names of `contract.DECODE_STATE` (states by their own names)."""
        values = {**state._asdict(), **dict(zip(self.step.state_names, state.states)), "prompt": prompt}
        names = [t.name for t in contract.expand(contract.DECODE_STATE, self.state_specs)]
        return {name: values[name] for name in names}

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
        stop: str | Sequence[str] | None = None,
        include_prompt: bool = False,
        **settings: Any,
    ) -> list[str]:
        """Continuations of each prompt (without the prompt, unless `include_prompt`), in one compiled call.

        The settings are those of `keras_chargen.settings`, with None for "off".

        Args:
            prompts: str or list[str].
            temperature: float, or one per prompt, >= 0 (0 = greedy); several for one prompt give one
                row per temperature (`generate("A", [0.2, 1.0])` → 2 texts). Default 0.8.
            max_new_chars: int in 0..MAX_NEW_CHARS (0: empty continuations). Default 500.
            seed: int in 0..2**31-1 for reproducible output (row i draws with seed + i, as the
                SavedModel, TFLite, ONNX and the stream do), None for a random draw per row
                (`generate_with_seeds` returns the seeds drawn).
            oov: what to do with prompt tokens outside the vocabulary: "error" (default) names them;
                "skip" drops unknown characters (char level); "unk" feeds unknown words as the `[UNK]`
                token the model was trained on (word level).
            top_k: int >= 1, sample only from the k most likely tokens; None (default) = off.
            top_p: float in (0, 1], sample only from the nucleus of probability p; None (default) = off.
            repetition_penalty: float > 0 (CTRL's; > 1 discourages tokens already in the prompt or
                the generated text); None (default) = off.
            stop: str or list[str]: stop each row once its generated tokens end with those of a stop string
                (it is included in the output); None (default) = generate `max_new_chars`.
            include_prompt: bool, return prompt + continuation, as the CLI prints it and the SavedModel's
                `text` output gives it; False (default) = the continuation only (`generated`).
            settings: any other setting of `keras_chargen.settings`, by name.
        """
        arguments = {k: v for k, v in locals().items() if k not in ("self", "settings")}
        return self.generate_with_seeds(**arguments, **settings)[0]

    def generate_with_seeds(
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
        stop: str | Sequence[str] | None = None,
        include_prompt: bool = False,
        **settings: Any,
    ) -> tuple[list[str], list[int]]:
        """`generate`, and the seed each row used (drawn where `seed` is None): `(texts, seeds)`.

        Passing `seeds[i]` as the seed of row i alone gives its text again.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        prompts = expand_temperatures(prompts, temperature)
        temps = check_generation_args(prompts, temperature, max_new_chars, seed)
        unknown = sorted(set(settings) - set(BY_NAME))
        if unknown:
            raise ChargenError(f"unknown settings {', '.join(unknown)}; the settings are {', '.join(BY_NAME)}")
        named = {**locals(), **settings}
        given = {name: named.get(name) for name in BY_NAME if name != "temperature"}  # None: off
        values: dict[str, Any] = {
            name: check_stops(value) if BY_NAME[name].dtype == "string" else check_api(name, value)
            for name, value in given.items()
        }
        values["temperature"] = temps
        if oov not in self.codec.oov_policies:
            raise ChargenError(
                f"oov must be one of {', '.join(self.codec.oov_policies)} for a {self.level}-level model; got {oov!r}"
            )
        if oov == "error":
            self._check_known(prompts)
        if self._compiled is None:  # trace once; every call reuses the graph
            self._compiled = compiled(self.call, signature(several_stops=True))
        rows = len(prompts)
        inputs = [tf.constant(prompts)]
        for spec in SETTINGS:
            value = values[spec.name]
            if spec.dtype == "string":  # one or several strings for every row: (rows, n)
                value = tf.constant([value] * rows, tf.string)
            elif spec.name == "seed":  # one seed: row i draws with seed + i
                value = tf.constant([value], tf.int32)
            else:
                value = tf.constant(value if isinstance(value, list) else [value] * rows, SIGNATURE_DTYPES[spec.dtype])
            inputs.append(value)
        outputs = self._compiled(*inputs)
        texts = [s.decode("utf-8") for s in outputs["text" if include_prompt else "generated"].numpy()]
        return texts, outputs["seed"].numpy().tolist()

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


def tensor_spec(tensor: contract.Tensor) -> tf.TensorSpec:
    """The `tf.TensorSpec` of a contract `Tensor`."""
    return tf.TensorSpec(list(tensor.shape), SIGNATURE_DTYPES[tensor.dtype], name=tensor.name)


def tensor_specs(tensors: Sequence[contract.Tensor], states: Sequence[tuple[str, int]] = ()) -> list[tf.TensorSpec]:
    """The specs of `tensors`, with `contract.STATES` expanded to one per `(name, size)` of `states`."""
    return [tensor_spec(t) for t in contract.expand(tensors, states)]


def with_parameters(fn: Callable[..., Any], specs: Sequence[tf.TensorSpec]) -> Callable[..., Any]:
    """`fn(*args)` as a function whose parameters are named after `specs` (so that a `tf.function` over it, and
    the signatures made from it, take those names as keywords too)."""
    parameters = inspect.Signature(
        [inspect.Parameter(spec.name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for spec in specs]
    )

    def named(*args: Any, **kwargs: Any) -> Any:
        return fn(*parameters.bind(*args, **kwargs).args)

    named.__signature__ = parameters  # type: ignore[attr-defined]
    named.__name__ = getattr(fn, "__name__", "function")
    return named


def compiled(fn: Callable[..., Any], specs: Sequence[tf.TensorSpec]) -> Any:
    """`tf.function(fn)` with the input signature `specs`, its parameters named after them."""
    return tf.function(with_parameters(fn, specs), input_signature=list(specs))


def signature(several_stops: bool = False) -> list[tf.TensorSpec]:
    """The serving signature: `prompt`, then every setting of `keras_chargen.settings`, each `(batch,)`
    (`several_stops`: string settings `(batch, n)`, as the Python API and `decode_start` take them)."""
    if several_stops:
        return tensor_specs(contract.SIGNATURES["decode_start"].inputs)
    return tensor_specs(contract.SIGNATURES[contract.DEFAULT_SIGNATURE].inputs)


NUMERIC = frozenset(s.name for s in SETTINGS if s.dtype != "string")  # the settings `in_graph_checks` checks


def setting_arguments(values: Sequence[Any], named: dict[str, Any]) -> dict[str, Any]:
    """`{setting: value}` from values in `SETTINGS` order and by name; those `settings.offs()` lists may be left out."""
    names = [s.name for s in SETTINGS]
    if len(values) > len(names):
        raise TypeError(f"got {len(values)} settings; there are {len(names)}: {', '.join(names)}")
    given = {**dict(zip(names, values)), **named}
    unknown = [k for k in given if k not in BY_NAME]
    missing = [k for k in names if k not in given and k not in offs()]
    if unknown or missing:
        raise TypeError(f"unknown settings {unknown}, missing settings {missing}")
    return {k: given.get(k, offs().get(k)) for k in names}


def per_row(value: Any, dtype: str, batch: tf.Tensor) -> tf.Tensor:
    """A setting broadcast over the rows: numbers `(batch,)`; strings `(batch, n)` (one or several per row)."""
    if dtype != "string":
        return tf.broadcast_to(tf.cast(value, SIGNATURE_DTYPES[dtype]), tf.reshape(batch, [1]))
    value = tf.convert_to_tensor(value, tf.string)
    if value.shape.rank is not None and value.shape.rank <= 1:
        return tf.broadcast_to(value, tf.reshape(batch, [1]))[:, None]
    return tf.broadcast_to(value, tf.stack([batch, tf.shape(value)[1]]))


def row_checks(values: dict[str, Any], batch: tf.Tensor) -> list[tf.Operation]:
    """`tf.debugging` assertions that each setting has one value, or one per row (strings: per row, any number)."""
    checks = []
    for name, value in values.items():
        value = tf.convert_to_tensor(value)  # any dtype (an int64 seed is cast later): only the shape matters
        rows = tf.shape(tf.reshape(value, [-1]))[0] if value.shape.rank in (0, 1) else tf.shape(value)[0]
        ok = tf.logical_or(tf.equal(rows, 1), tf.equal(rows, batch))
        checks.append(tf.debugging.Assert(ok, [f"{name} must have one value, or one per prompt"]))
    return checks


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

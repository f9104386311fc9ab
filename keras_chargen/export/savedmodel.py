"""SavedModel export of the in-graph generator and its pieces: loads without keras_chargen (or Keras).

Its signatures are `keras_chargen.contract.SIGNATURES` (every input has a leading batch dimension, as
TF Serving's row format needs):
- `serving_default`: prompt, then the settings of `keras_chargen.settings` → text, generated
  (strings), seed (each row's); TF Serving needs every input in every request (off values:
  `settings.offs()`);
- `step`: ids + states (`h_0, c_0, …`) → logits + new states under the same names;
- `encode`: prompt → ids (right-padded with 0), lengths;
- `decode`: ids → text (ids outside 1..vocab-1, such as the padding 0, are dropped; words are detokenized);
- `decode_start` / `decode_chunk`: a stream, a chunk of tokens at a time (what `keras-chargen serve`'s
  `:stream` runs): the decode state after priming, then up to `steps` more tokens per row;
- `inspect`: text + layer + cell → per position the token, its probability, the top alternatives and the
  layer's activations; `explain_sampling`: prompt + the sampler's settings → the next-token distribution
  before and after each setting (`keras_chargen.inspection`).
"""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf

from keras_chargen import contract
from keras_chargen.export.id_generator import IdGenerator
from keras_chargen.export.layout import staged_dirs
from keras_chargen.generation import CharGenerator, compiled, signature, tensor_specs
from keras_chargen.inspection import Inspector
from keras_chargen.io import atomic_write_text


class GeneratorModule(tf.Module):
    """The tf.Module that is saved: the generator layer and one function per signature of `contract.SIGNATURES`."""

    def __init__(self, generator: CharGenerator, vocab_file: str | Path | None = None) -> None:
        super().__init__(name="chargen")
        self.generator = generator
        if vocab_file is not None:
            self.vocab_asset = tf.saved_model.Asset(str(vocab_file))  # copied into assets/
        ids = IdGenerator(generator)
        states = generator.state_specs
        self.serve = compiled(self._serve, signature())
        self.step = compiled(ids.step, ids.step_signature())
        self.decode_start = compiled(generator.decode_start, signature(several_stops=True))
        self.decode_chunk = compiled(
            generator.decode_chunk, tensor_specs(contract.SIGNATURES["decode_chunk"].inputs, states)
        )
        inspector = Inspector(generator)
        self.inspect = compiled(inspector.inspect, tensor_specs(contract.SIGNATURES[contract.INSPECT].inputs))
        self.explain_sampling = compiled(
            inspector.explain_sampling, tensor_specs(contract.SIGNATURES[contract.EXPLAIN_SAMPLING].inputs)
        )

    def _serve(self, prompt, *settings):
        """All inputs have a leading batch dimension (TF Serving's row format needs it); `[1]` broadcasts.

        `seed`: each row's int32 seed; a single seed for several rows seeds row i with seed + i; a
        negative value draws a random seed (the `seed` output says which). `top_k` 0, `top_p` 1,
        `repetition_penalty` 1 and `stop` "" are off.
        """
        return self.generator(prompt, *settings)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="prompt")])
    def encode(self, prompt):
        """Prompts → ids `(batch, time)` right-padded with 0, and lengths `(batch,)`.

        These are the ids the model is primed on: unknown characters are dropped; a document model's
        start marker comes first; otherwise an empty prompt becomes the newline's id (length 1).
        """
        ids, lengths = self.generator.encode(prompt)
        ids = tf.where(tf.sequence_mask(lengths, tf.shape(ids)[1]), ids, 0)
        return {"ids": ids, "lengths": lengths}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="ids")])
    def decode(self, ids):
        """Ids `(batch, time)` → text `(batch,)`; ids outside `1..vocab-1` (padding 0) are dropped.

        Word level: the words are joined by the detokenization rules (no space before punctuation, …).
        """
        ids = tf.ragged.boolean_mask(ids, tf.logical_and(ids > 0, ids <= len(self.generator.vocabulary)))
        ids = ids.to_tensor(default_value=0)
        start = tf.fill(tf.stack([tf.shape(ids)[0], 1]), self.generator.start_id)
        pieces = self.generator.pieces(tf.concat([start, ids[:, :-1]], 1), ids)  # (batch, time) strings
        return {"text": tf.strings.reduce_join(tf.where(ids > 0, pieces, ""), axis=1)}

    def signatures(self) -> dict:
        """The functions by the names of `contract.SIGNATURES`."""
        functions = {
            contract.DEFAULT_SIGNATURE: self.serve,
            "step": self.step,
            "encode": self.encode,
            "decode": self.decode,
            "decode_start": self.decode_start,
            "decode_chunk": self.decode_chunk,
            contract.INSPECT: self.inspect,
            contract.EXPLAIN_SAMPLING: self.explain_sampling,
        }
        assert list(functions) == list(contract.SIGNATURES), "one function per contract signature"
        return functions


def write_savedmodel(generator: CharGenerator, directory: str | Path, vocab_file: str | Path | None = None) -> None:
    """Save `generator` with all signatures into the (existing, empty) `directory`, and `assets/generation.json`."""
    module = GeneratorModule(generator, vocab_file)
    tf.saved_model.save(module, str(directory), signatures=module.signatures())
    assets = Path(directory) / contract.ASSETS_DIR
    assets.mkdir(exist_ok=True)
    atomic_write_text(assets / contract.GENERATION_FILE, json.dumps(generation_info(generator)) + "\n")


def generation_info(generator: CharGenerator) -> dict:
    """What a client of the `step` signature needs besides the vocabulary to decode exactly as `serving_default`."""
    return {key: getattr(generator, key) for key in contract.GENERATION_KEYS}


def export_savedmodel(
    generator: CharGenerator, path: str | Path, vocab_file: str | Path | None = None, overwrite: bool = False
) -> Path:
    """Save `generator` as a SavedModel at `path` (written to a temp dir, then renamed).

    Args:
        generator: CharGenerator to export.
        path: str | Path, the version directory to create, e.g. `exported/NAME/1`.
        vocab_file: str | Path | None, the model's `vocab.json`, shipped as an asset. Default None.
        overwrite: bool, replace an existing `path`. Default False (a `ChargenError`).
    """
    path = Path(path)
    with staged_dirs([path], overwrite) as (tmp,):
        write_savedmodel(generator, tmp, vocab_file)
    return path

"""SavedModel export of the in-graph generator and its pieces: loads without keras_chargen (or Keras).

Signatures (every input has a leading batch dimension, as TF Serving's row format needs):
- `serving_default`: prompt, then the settings of `keras_chargen.settings` (temperature,
  max_new_chars, seed, top_k, top_p, repetition_penalty, stop) → text, generated (strings); TF
  Serving needs every input in every request (off values as in `SERVING_DEFAULTS`);
- `step`: ids + states (`h_0, c_0, …`) → logits + new states under the same names;
- `encode`: prompt → ids (right-padded with 0), lengths;
- `decode`: ids → text (ids outside 1..vocab-1, such as the padding 0, are dropped; words are detokenized);
- `inspect`: text + layer → per position the token, its probability, the top alternatives and the layer's
  activations (`keras_chargen.inspection`);
- `explain_sampling`: prompt + sampling settings → the next-token distribution before and after each setting.
"""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf

from keras_chargen.export.id_generator import IdGenerator
from keras_chargen.export.layout import staged_dirs
from keras_chargen.generation import CharGenerator, signature
from keras_chargen.inspection import Inspector
from keras_chargen.io import atomic_write_text
from keras_chargen.settings import offs

SERVING_SIGNATURE = signature()  # prompt + every setting of `keras_chargen.settings`, each (batch,)
# The "off" value of each optional input: what `keras-chargen serve` fills in for a request that
# leaves the input out (TF Serving itself requires them all).
SERVING_DEFAULTS = offs()
GENERATION_ASSET = "generation.json"  # beside vocab.json in assets/: `generation_info`
SIGNATURE_NAMES = ("serving_default", "step", "encode", "decode", "inspect", "explain_sampling")


class GeneratorModule(tf.Module):
    """The tf.Module that is saved: the generator layer and one function per signature."""

    def __init__(self, generator: CharGenerator, vocab_file: str | Path | None = None) -> None:
        super().__init__(name="chargen")
        self.generator = generator
        if vocab_file is not None:
            self.vocab_asset = tf.saved_model.Asset(str(vocab_file))  # copied into assets/
        ids = IdGenerator(generator)
        self.step = tf.function(ids.step, input_signature=ids.step_signature())
        inspector = Inspector(generator)
        self.inspect, self.explain_sampling = inspector.signature(), inspector.explain_signature()

    @tf.function(input_signature=SERVING_SIGNATURE)
    def serve(self, prompt, temperature, max_new_chars, seed, top_k, top_p, repetition_penalty, stop):
        """All inputs have a leading batch dimension (TF Serving's row format needs it); `[1]` broadcasts.

        `seed`: each row's int32 seed; a single seed for several rows seeds row i with seed + i; a
        negative value draws a random seed. `top_k` 0, `top_p` 1, `repetition_penalty` 1 and `stop` "" are off.
        """
        return self.generator(prompt, temperature, max_new_chars, seed, top_k, top_p, repetition_penalty, stop)

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
        return {
            "serving_default": self.serve,
            "step": self.step,
            "encode": self.encode,
            "decode": self.decode,
            "inspect": self.inspect,
            "explain_sampling": self.explain_sampling,
        }


def write_savedmodel(generator: CharGenerator, directory: str | Path, vocab_file: str | Path | None = None) -> None:
    """Save `generator` with all signatures into the (existing, empty) `directory`, and `assets/generation.json`."""
    module = GeneratorModule(generator, vocab_file)
    tf.saved_model.save(module, str(directory), signatures=module.signatures())
    assets = Path(directory) / "assets"
    assets.mkdir(exist_ok=True)
    atomic_write_text(assets / GENERATION_ASSET, json.dumps(generation_info(generator)) + "\n")


def generation_info(generator: CharGenerator) -> dict:
    """What a client of the `step` signature needs besides the vocabulary to decode exactly as `serving_default`
    (the `:stream` runs the same decode loop over `step`)."""
    return {
        "level": generator.level,
        "lowercase": generator.lowercase,
        "document_start": generator.document_start,
        "document_end": generator.document_end,
        "start_id": generator.start_id,
    }


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

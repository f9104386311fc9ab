"""SavedModel export of the whole in-graph generator: strings in, strings out, no keras_chargen needed to load."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from keras_chargen.errors import ChargenError
from keras_chargen.generation import CharGenerator
from keras_chargen.io import atomic_dir

SERVING_SIGNATURE = [
    tf.TensorSpec([None], tf.string, name="prompt"),
    tf.TensorSpec([None], tf.float32, name="temperature"),
    tf.TensorSpec([None], tf.int32, name="max_new_chars"),
    tf.TensorSpec([None], tf.int64, name="seed"),
]


class GeneratorModule(tf.Module):
    """The tf.Module that is saved: the generator layer and its `serving_default` function."""

    def __init__(self, generator: CharGenerator, vocab_file: str | Path | None = None) -> None:
        super().__init__(name="chargen")
        self.generator = generator
        if vocab_file is not None:
            self.vocab_asset = tf.saved_model.Asset(str(vocab_file))  # copied into assets/

    @tf.function(input_signature=SERVING_SIGNATURE)
    def serve(self, prompt, temperature, max_new_chars, seed):
        """All inputs have a leading batch dimension (TF Serving's row format needs it).

        `seed`: the first row's value seeds the whole batch; a negative value draws a random seed.
        """
        return self.generator(prompt, temperature, max_new_chars, seed)


def export_savedmodel(generator: CharGenerator, path: str | Path, vocab_file: str | Path | None = None,
                      overwrite: bool = False) -> Path:
    """Save `generator` as a SavedModel at `path` (written to a temp dir, then renamed).

    The `serving_default` signature maps prompt (string), temperature (float32), max_new_chars
    (int32) and seed (int64), each `[batch]`, to `text` (prompt + continuation) and `generated`.
    """
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise ChargenError(f"{path} already exists; pass --overwrite to replace it")
        import shutil

        shutil.rmtree(path)
    module = GeneratorModule(generator, vocab_file)
    with atomic_dir(path) as tmp:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
    return path

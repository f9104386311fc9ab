"""The model directory: `config.json` + `vocab.json` + `model.keras`, and loading it back."""

from __future__ import annotations

from pathlib import Path

import keras

from keras_chargen.config import ChargenConfig
from keras_chargen.errors import ChargenError
from keras_chargen.generation import CharGenerator
from keras_chargen.model import build_model
from keras_chargen.vocab import Vocabulary

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "model.keras"


def load_model(model_dir: str | Path) -> tuple[ChargenConfig, Vocabulary, keras.Model]:
    """Config, vocabulary and the batch-flexible inference model of a trained model directory."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ChargenError(f"model directory not found: {model_dir}")
    config = ChargenConfig.load(model_dir / CONFIG_FILE)
    vocab = Vocabulary.load(model_dir / VOCAB_FILE)
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise ChargenError(f"missing weights {weights} (training has not finished an epoch yet?)")
    model = build_model(config, vocab.size)
    try:
        model.load_weights(weights)
    except Exception as err:  # h5py/zipfile/ValueError: all mean the file is unusable
        raise ChargenError(
            f"corrupt or incompatible weights file {weights}: {str(err).splitlines()[0][:200]}"
        ) from None
    return config, vocab, model


def load_generator(model_dir: str | Path) -> CharGenerator:
    """A `CharGenerator` over the trained model in `model_dir`."""
    _, vocab, model = load_model(model_dir)
    return generator_for(model, vocab)


def generator_for(model: keras.Model, vocab: Vocabulary) -> CharGenerator:
    """A `CharGenerator` over `model` with `vocab`; a document model's generator primes on the start
    marker and stops at the end marker."""
    return CharGenerator(
        model,
        vocab.tokens,
        vocab.level,
        vocab.lowercase,
        document_start=vocab.document_start,
        document_end=vocab.document_end,
    )

"""Shared fixtures: the small corpus kept in tests/, the package's tiny-shakespeare, a tiny trained model."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_chargen import ChargenConfig, FileSource, train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "data" / "corpus.txt"
# The package's embedded copy (keras_chargen/corpora), so these tests run on a fresh clone too (no ../shared).
SHAKESPEARE = REPO / "keras_chargen" / "corpora" / "tinyshakespeare.txt"

needs_shakespeare = pytest.mark.skipif(
    not SHAKESPEARE.exists(), reason="keras_chargen/corpora/tinyshakespeare.txt is missing (an incomplete checkout)"
)

# Small enough that the whole suite runs in minutes on 2 CPU cores.
TINY = dict(
    units=48,
    num_layers=1,
    embedding_dim=16,
    seq_len=32,
    batch_size=8,
    epochs=3,
    patience=0,
    save_every=50,
    learning_rate=5e-3,
)


def tiny_config(**overrides) -> ChargenConfig:
    return ChargenConfig(**{**TINY, **overrides})


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory) -> Path:
    """A tiny LSTM trained for 3 epochs on tests/data/corpus.txt (shared by the tests that only read it)."""
    out = tmp_path_factory.mktemp("models") / "tiny"
    train(tiny_config(), FileSource((CORPUS,)), out, verbose=0, sample_every_epoch=False)
    return out


@pytest.fixture(scope="session")
def generator(trained_dir):
    from keras_chargen import load_generator

    return load_generator(trained_dir)


def keras_step_logits(generator, ids) -> np.ndarray:
    """Reference logits `(len(ids), vocab)` from the Keras sequence model over the whole id sequence
    (independent of `RecurrentStep`, which the exports reuse)."""
    return generator.model(np.array([list(ids)], np.int32)).numpy()[0]


@pytest.fixture(scope="session")
def exported_all(trained_dir, tmp_path_factory) -> Path:
    """Every artifact of the tiny trained model under one base path, once per session: the SavedModel
    (`1/`), TFLite float32, dynamic-range int8 and float16, ONNX (shared by the export and decoding tests)."""
    from keras_chargen.export import export_model

    base = tmp_path_factory.mktemp("exported_all") / "tiny"
    export_model(trained_dir, base, "all")
    for quantize in ("dynamic", "float16"):
        export_model(trained_dir, base, "tflite", quantize=quantize)
    return base


@pytest.fixture(scope="session")
def word_dir(tmp_path_factory) -> Path:
    """A tiny word-level LSTM trained for 2 epochs on tests/data/corpus.txt."""
    out = tmp_path_factory.mktemp("models") / "words"
    config = tiny_config(level="word", seq_len=16, epochs=2, learning_rate=1e-2)
    train(config, FileSource((CORPUS,)), out, verbose=0, sample_every_epoch=False)
    return out


@pytest.fixture(scope="session")
def word_generator(word_dir):
    from keras_chargen import load_generator

    return load_generator(word_dir)


@pytest.fixture(scope="session")
def word_exported(word_dir, tmp_path_factory) -> Path:
    """The SavedModel (`1/`), TFLite float32 and ONNX of the tiny word model, once per session."""
    from keras_chargen.export import export_model

    base = tmp_path_factory.mktemp("word_exported") / "words"
    export_model(word_dir, base, "all")
    return base


@pytest.fixture(scope="module")
def base(trained_dir, tmp_path_factory) -> Path:
    """Serving tests: the exported base path (versions 1 and 2) of the tiny trained model."""
    from serving_support import exported_base

    return exported_base(trained_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def server(request, tmp_path_factory, base):
    """Serving tests: the shared `keras-chargen serve` process over `base`."""
    from serving_support import shared_server

    return shared_server(request, tmp_path_factory, base)

"""keras-chargen: character- and word-level language models with Keras: train, generate in-graph, export, serve.

The public API is imported lazily (PEP 562), so `import keras_chargen.client` does not load TensorFlow.
"""

import importlib
import os

# TensorFlow's C++ info and warning lines off for Python API users too (the CLI silences the rest: quiet.py)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

_EXPORTS = {
    "ChargenConfig": "config",
    "ChargenError": "errors",
    "Vocabulary": "vocab",
    "FileSource": "corpus",
    "TfdsSource": "corpus",
    "EmbeddedSource": "corpora",
    "PreparedCorpus": "corpus",
    "make_source": "corpus",
    "prepare_corpus": "corpus",
    "stateful_dataset": "data",
    "shuffled_dataset": "data",
    "build_model": "model",
    "RecurrentStep": "model",
    "BitsPerChar": "metrics",
    "Perplexity": "metrics",
    "CharGenerator": "generation",
    "MAX_NEW_CHARS": "settings",
    "SETTINGS": "settings",
    "train": "training",
    "recommended_config": "recommended",
    "inherit_config": "finetune",
    "DirectoryLock": "lock",
    "prepare_documents": "documents",
    "evaluate": "evaluation",
    "inspect_text": "inspection",
    "Inspector": "inspection",
    "Inspection": "inspection",
    "load_model": "saving",
    "load_generator": "saving",
    "export_model": "export",
    "export_savedmodel": "export",
    "CharNGram": "ngram",
    "tokenize": "tokenizer",
    "detokenize": "tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'keras_chargen' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"keras_chargen.{_EXPORTS[name]}"), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)

"""keras-chargen: character-level language models with Keras: train, generate in-graph, export."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the CLI

# isort: split

from keras_chargen.config import ChargenConfig
from keras_chargen.corpus import FileSource, PreparedCorpus, TfdsSource, make_source, prepare_corpus
from keras_chargen.data import shuffled_dataset, stateful_dataset
from keras_chargen.errors import ChargenError
from keras_chargen.evaluate import evaluate
from keras_chargen.export import export_savedmodel
from keras_chargen.generation import MAX_NEW_CHARS, CharGenerator
from keras_chargen.metrics import BitsPerChar, Perplexity
from keras_chargen.model import RecurrentStep, build_model
from keras_chargen.saving import load_generator, load_model
from keras_chargen.training import train
from keras_chargen.vocab import Vocabulary

__version__ = "0.1.0"

__all__ = [
    "BitsPerChar", "CharGenerator", "ChargenConfig", "ChargenError", "FileSource", "MAX_NEW_CHARS", "Perplexity",
    "PreparedCorpus", "RecurrentStep", "TfdsSource", "Vocabulary", "build_model", "evaluate", "export_savedmodel",
    "load_generator", "load_model", "make_source", "prepare_corpus", "shuffled_dataset", "stateful_dataset",
    "train",
]

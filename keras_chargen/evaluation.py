"""`evaluate`: loss (nats), bits per character and perplexity of a trained model on a text."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import keras

from keras_chargen.callbacks import ResetStates
from keras_chargen.corpus import TextSource, prepare_corpus
from keras_chargen.data import num_stateful_batches, stateful_dataset
from keras_chargen.errors import ChargenError
from keras_chargen.metrics import BitsPerChar, Perplexity
from keras_chargen.model import build_model
from keras_chargen.saving import load_model


def evaluate(model_dir: str | Path, source: TextSource, split: str = "val", verbose: int = 0) -> dict[str, float]:
    """Evaluate on the last `val_fraction` of `source` (`split="val"`, as in training) or all of it.

    The text is read as contiguous streams with the state carried (as in training), so each
    character is predicted with its full left context. Characters the model has never seen count
    as the OOV id (the model cannot predict them, which costs loss, honestly).

    Returns:
        dict with `loss` (nats per token: per character, or per word at the word level), `bpc` (bits per
        token), `perplexity` and `chars` (tokens scored).
    """
    if split not in ("val", "all"):
        raise ChargenError(f"split must be 'val' or 'all'; got {split!r}")
    config, vocab, inference = load_model(model_dir)
    if config.documents:  # whole documents from the zero state, as trained
        from keras_chargen.documents import evaluate_documents

        return evaluate_documents(model_dir, source, split)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = prepare_corpus(source, tmp, config.val_fraction if split == "val" else 1.0, vocab)
        num = corpus.num_val
        batch = max(1, min(config.batch_size, (num - 1) // config.seq_len))
        if num_stateful_batches(num, batch, config.seq_len) == 0:
            raise ChargenError(
                f"evaluation text has {num} {config.level}s, fewer than one window (seq_len + 1 = {config.seq_len + 1})"
            )
        dataset = stateful_dataset(corpus.val_path, num, vocab.id_dtype, batch, config.seq_len, "evaluation")
        model = build_model(config, vocab.size, batch, stateful=True)
        model.set_weights(inference.get_weights())
        model.compile(
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=[BitsPerChar(), Perplexity()]
        )
        results = model.evaluate(dataset, callbacks=[ResetStates()], verbose=verbose, return_dict=True)
    bpc = float(results["bpc"])
    return {
        "loss": bpc * math.log(2.0),
        "bpc": bpc,
        "perplexity": float(results["perplexity"]),
        "chars": num_stateful_batches(num, batch, config.seq_len) * batch * config.seq_len,
    }


def ngram_baseline(model_dir: str | Path, source: TextSource, order: int) -> float:
    """Validation nats per token of a `CharNGram` trained on the training part of `source` (same split as
    the model). Word level: the n-gram runs over the model's word ids (unknown words are one `[UNK]` token)."""
    from keras_chargen.config import ChargenConfig
    from keras_chargen.corpus import split_sizes
    from keras_chargen.ngram import CharNGram
    from keras_chargen.saving import CONFIG_FILE, VOCAB_FILE
    from keras_chargen.vocab import Vocabulary

    if order < 1:
        raise ChargenError(f"ngram order must be >= 1; got {order}")
    config = ChargenConfig.load(Path(model_dir) / CONFIG_FILE)
    if config.level == "word":  # one character per word id, so the character n-gram counts word n-grams
        with tempfile.TemporaryDirectory() as tmp:
            corpus = prepare_corpus(source, tmp, config.val_fraction, Vocabulary.load(Path(model_dir) / VOCAB_FILE))
            text = "".join(map(chr, corpus.read_ids("train").tolist() + corpus.read_ids("val").tolist()))
    else:
        text = "".join(source.chunks())  # the n-gram counts need the text in memory anyway
    num_train, num_val = split_sizes(len(text), config.val_fraction)
    if num_val == 0:
        raise ChargenError("the validation split is empty")
    return CharNGram(order).fit(text[:num_train]).nats_per_char(text, num_train)

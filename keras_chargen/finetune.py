"""Fine-tuning (`train --init-from MODEL_DIR`): a new model that starts from a trained one on new text.

The source's vocabulary is kept with every id unchanged and the tokens new in the new text's
training part are appended (`Vocabulary.extend`); the embedding and output layers grow by one row
(column) per new token and every other weight is copied. A new token's embedding row and output
column are the mean of the existing ones, and its output bias is the smallest existing one, so the
new tokens start as unlikely as the rarest known token and the old predictions barely move. The
optimizer starts fresh.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from keras_chargen.config import ChargenConfig, flag_name
from keras_chargen.errors import ChargenError
from keras_chargen.vocab import Vocabulary

if TYPE_CHECKING:  # TensorFlow loads only when weights are grown, not when the CLI checks the flags
    import keras

# The settings that define the weights' shapes and the tokens: a fine-tuned model inherits them.
ARCHITECTURE_FIELDS = ("level", "lowercase", "cell", "num_layers", "units", "embedding_dim")


def inherit_config(init_from: str | Path, given: dict[str, Any]) -> ChargenConfig:
    """The config of a fine-tuning run: the source model's architecture, `given` settings for the rest.

    Args:
        init_from: the source model directory.
        given: dict, the settings given explicitly (e.g. the CLI flags typed); an architecture
            setting that differs from the source's is a `ChargenError`.
    """
    source = ChargenConfig.load(_source_dir(init_from) / "config.json")  # saving.CONFIG_FILE (saving loads Keras)
    inherited = {name: getattr(source, name) for name in ARCHITECTURE_FIELDS}
    _check_conflicts(init_from, {k: v for k, v in given.items() if k in inherited}, inherited)
    return ChargenConfig(**{**given, **inherited, "init_from": str(init_from)})


def check_architecture(config: ChargenConfig, source: ChargenConfig) -> None:
    """`ChargenError` naming the architecture settings of `config` that differ from the source model's."""
    _check_conflicts(config.init_from, {k: getattr(config, k) for k in ARCHITECTURE_FIELDS}, source.to_dict())


def _check_conflicts(init_from: str | Path, given: dict[str, Any], source: dict[str, Any]) -> None:
    conflicts = [f"{flag_name(k)} {v!r} (it has {source[k]!r})" for k, v in given.items() if source[k] != v]
    if conflicts:
        raise ChargenError(
            f"--init-from {init_from}: the architecture comes from that model; conflicting settings: "
            f"{'; '.join(conflicts)}. Drop them, or train from scratch without --init-from"
        )


def _source_dir(init_from: str | Path) -> Path:
    path = Path(init_from)
    if not path.is_dir():
        raise ChargenError(f"--init-from: model directory not found: {path}")
    return path


def grown_vocabulary(base: Vocabulary, text_vocab: Vocabulary, max_vocab: int = 0) -> Vocabulary:
    """`base` with the tokens of `text_vocab` it lacks appended (in `text_vocab`'s order).

    At the word level with `max_vocab`, only as many new words as keep the total within it are
    added (the most frequent first); the source's words are always kept.
    """
    new = [t for t in text_vocab.tokens if base.token_id(t) == 0]
    if base.level == "word" and max_vocab:
        new = new[: max(max_vocab - len(base.tokens), 0)]
    return base.extend(new)


def grow_weights(source: keras.Model, target: keras.Model) -> int:
    """Copy `source`'s weights into `target`, whose vocabulary is the source's with tokens appended.

    Returns the number of new tokens. Layer names (`embedding`, `rnn_i`, `logits`) match by
    construction (`build_model`).
    """
    old = source.get_layer("embedding").input_dim
    new = target.get_layer("embedding").input_dim
    if new < old:
        raise ChargenError(f"cannot shrink a vocabulary of {old} ids to {new}")
    for layer in source.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if layer.name == "embedding":
            (table,) = weights
            weights = [np.concatenate([table, np.repeat(table.mean(0, keepdims=True), new - old, 0)])]
        elif layer.name == "logits":
            kernel, bias = weights  # (units, vocab), (vocab,)
            kernel = np.concatenate([kernel, np.repeat(kernel.mean(1, keepdims=True), new - old, 1)], axis=1)
            bias = np.concatenate([bias, np.full(new - old, bias[1:].min() if old > 1 else 0.0, bias.dtype)])
            weights = [kernel, bias]
        target.get_layer(layer.name).set_weights(weights)
    return new - old

"""The language model (Embedding → stacked RNN → Dense logits) and its one-step form.

`build_model` is what `fit` trains; `RecurrentStep` runs the same layers one character at a time
with explicit states, and is what generation and every export reuse.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_chargen.config import ChargenConfig

RNN_LAYERS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "rnn": keras.layers.SimpleRNN}


def build_model(config: ChargenConfig, vocab_size: int, batch_size: int | None = None,
                stateful: bool = False) -> keras.Model:
    """A Keras model mapping ids `(batch, time)` to next-character logits `(batch, time, vocab_size)`.

    Args:
        config: ChargenConfig, the architecture.
        vocab_size: int, number of ids including the OOV id 0.
        batch_size: int | None, static batch size (required when `stateful`).
        stateful: bool, carry the recurrent state across batches (char-rnn style training).

    Layer names are fixed (`embedding`, `rnn_0..`, `logits`) so a stateful training model and a
    batch-flexible inference model exchange weights directly.
    """
    if stateful and batch_size is None:
        raise ValueError("a stateful model needs a static batch_size")
    rnn_class = RNN_LAYERS[config.cell]
    inputs = keras.Input(batch_shape=(batch_size, None), dtype="int32", name="ids")
    x = keras.layers.Embedding(vocab_size, config.embedding_dim, name="embedding")(inputs)
    for i in range(config.num_layers):
        x = rnn_class(config.units, return_sequences=True, stateful=stateful, name=f"rnn_{i}")(x)
        if config.dropout > 0:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{i}")(x)
    logits = keras.layers.Dense(vocab_size, name="logits")(x)
    return keras.Model(inputs, logits, name="chargen")


def stateful_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's stateful recurrent layers (Keras 3 has no `model.reset_states()`)."""
    return [layer for layer in model.layers if getattr(layer, "stateful", False)]


def reset_states(model: keras.Model) -> None:
    """Zero the carried state of every stateful layer."""
    for layer in stateful_layers(model):
        layer.reset_state()


class RecurrentStep:
    """One step of the model: ids `(batch,)` + states → logits `(batch, vocab)` + new states.

    States are a flat list of `(batch, units)` tensors, per layer `[h, c]` for LSTM and `[h]` for
    GRU / SimpleRNN, in layer order. The step calls the trained Keras cells themselves, so it
    computes exactly what the sequence model computes.

    Args:
        model: keras.Model from `build_model` (stateful or not; only its weights are used).
    """

    def __init__(self, model: keras.Model) -> None:
        self.embedding = model.get_layer("embedding")
        self.cells = [layer.cell for layer in model.layers if isinstance(layer, tuple(RNN_LAYERS.values()))]
        self.dense = model.get_layer("logits")
        self.state_sizes = [size for cell in self.cells for size in _state_sizes(cell)]

    @property
    def state_names(self) -> list[str]:
        """Names for the flat state list, e.g. `h_0, c_0, h_1, c_1`."""
        names = []
        for i, cell in enumerate(self.cells):
            names += [f"{kind}_{i}" for kind in ("h", "c")[: len(_state_sizes(cell))]]
        return names

    def initial_states(self, batch_size) -> list[tf.Tensor]:
        return [tf.zeros(tf.stack([batch_size, size])) for size in self.state_sizes]

    def __call__(self, ids: tf.Tensor, states: list[tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor]]:
        x = self.embedding(ids)  # (batch, embedding_dim)
        new_states, offset = [], 0
        for cell in self.cells:
            count = len(_state_sizes(cell))
            x, cell_states = cell(x, states[offset: offset + count], training=False)
            new_states += list(cell_states) if isinstance(cell_states, (list, tuple)) else [cell_states]
            offset += count
        return self.dense(x), new_states  # (batch, vocab)


def _state_sizes(cell) -> list[int]:
    size = cell.state_size
    return list(size) if isinstance(size, (list, tuple)) else [size]

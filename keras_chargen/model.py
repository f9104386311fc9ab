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
    GRU / SimpleRNN, in layer order. The step reads the trained Keras weights and computes the
    cells' equations with plain TF ops (Keras LSTM gate order i, f, c, o; GRU z, r, h with
    `reset_after=True`, the Keras 3 default), so it computes exactly what the sequence model
    computes, in a graph that XLA compiles and TFLite / ONNX convert to builtins.

    Generation loops call `folded_weights()` once, outside the loop, and pass the result to every
    step: it folds the embedding into the first layer's input kernel and bias, a `(vocab,
    gates * units)` table, so the first layer's input matmul becomes a row gather. Without it
    (`step(ids, states)`), each call gathers the embedding and multiplies, reading the variables
    directly: no per-call copy of the weights, which suits a single step (the `step` signature).

    Args:
        model: keras.Model from `build_model` (stateful or not; only its weights are used).
    """

    def __init__(self, model: keras.Model) -> None:
        self.embedding = model.get_layer("embedding")
        self.cells = [layer.cell for layer in model.layers if isinstance(layer, tuple(RNN_LAYERS.values()))]
        self.dense = model.get_layer("logits")
        for cell in self.cells:
            _check_cell(cell)
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

    def folded_weights(self) -> tf.Tensor:
        """The first layer's input projection of every id, `embedding @ kernel + input bias`: `(vocab, gates * units)`.

        Build it once per graph, outside the loop (vocab × embedding_dim × gates × units multiply-adds).
        """
        cell = self.cells[0]
        return tf.matmul(self.embedding.embeddings.value, cell.kernel.value) + _input_bias(cell)

    def __call__(self, ids: tf.Tensor, states: list[tf.Tensor],
                 folded: tf.Tensor | None = None) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """Logits `(batch, vocab)` and the new states after feeding `ids` `(batch,)`.

        Args:
            ids: int32 `(batch,)`.
            states: list of float32 `(batch, units)`, see `state_names`.
            folded: the result of `folded_weights()` in this graph, or None to compute from the
                embedding. Default None.
        """
        ids = tf.cast(ids, tf.int32)
        new_states, offset = [], 0
        x = None
        for i, cell in enumerate(self.cells):
            count = len(_state_sizes(cell))
            if i == 0 and folded is not None:
                projected = tf.gather(folded, ids)  # (batch, gates * units)
            else:
                if i == 0:
                    x = tf.gather(self.embedding.embeddings.value, ids)  # (batch, embedding_dim)
                projected = tf.matmul(x, cell.kernel.value) + _input_bias(cell)
            x, cell_states = _cell_step(cell, projected, states[offset: offset + count])
            new_states += cell_states
            offset += count
        return tf.matmul(x, self.dense.kernel.value) + self.dense.bias.value, new_states  # (batch, vocab)


def _state_sizes(cell) -> list[int]:
    size = cell.state_size
    return list(size) if isinstance(size, (list, tuple)) else [size]


def _check_cell(cell) -> None:
    """`RecurrentStep` hard-codes the cell equations of `build_model`'s cells; refuse any other setting."""
    expected = {"activation": "tanh", "use_bias": True}
    if isinstance(cell, (keras.layers.LSTMCell, keras.layers.GRUCell)):
        expected["recurrent_activation"] = "sigmoid"
    if isinstance(cell, keras.layers.GRUCell):
        expected["reset_after"] = True
    config = cell.get_config()
    for name, value in expected.items():
        if config.get(name) != value:
            raise ValueError(f"RecurrentStep supports {name}={value!r} only; cell {cell.name} has {config.get(name)!r}")


def _input_bias(cell) -> tf.Tensor:
    """The bias added to `x @ kernel` (a GRU with `reset_after` keeps a second, recurrent bias row)."""
    bias = cell.bias.value
    return bias[0] if isinstance(cell, keras.layers.GRUCell) else bias


def _cell_step(cell, projected: tf.Tensor, states: list[tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """One cell step from `projected = x @ kernel + input bias` `(batch, gates * units)`: output and new states."""
    h = states[0]
    recurrent = tf.matmul(h, cell.recurrent_kernel.value)  # (batch, gates * units)
    if isinstance(cell, keras.layers.LSTMCell):
        i, f, c, o = tf.split(projected + recurrent, 4, axis=1)
        c = tf.sigmoid(f) * states[1] + tf.sigmoid(i) * tf.tanh(c)
        h = tf.sigmoid(o) * tf.tanh(c)
        return h, [h, c]
    if isinstance(cell, keras.layers.GRUCell):
        x_z, x_r, x_h = tf.split(projected, 3, axis=1)
        r_z, r_r, r_h = tf.split(recurrent + cell.bias.value[1], 3, axis=1)
        z = tf.sigmoid(x_z + r_z)
        r = tf.sigmoid(x_r + r_r)
        candidate = tf.tanh(x_h + r * r_h)
        h = z * h + (1 - z) * candidate
        return h, [h]
    h = tf.tanh(projected + recurrent)  # SimpleRNN
    return h, [h]

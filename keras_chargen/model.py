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

    Generation loops call `loop_weights()` once, outside the loop, and pass the result to every
    step. It rearranges the weights for speed: the embedding is folded into the first layer's input
    kernel and bias (a `(vocab, gates * units)` table, so that matmul becomes a row gather), a
    deeper LSTM / SimpleRNN layer's kernels are stacked so `[x, h] @ [W; U]` is one matmul, and
    every matrix is stored transposed, `(outputs, inputs)`: TF's CPU MatMul reads a batch-1
    product (a matrix-vector product, bound by reading the weights) much faster in that layout
    (see docs/BENCHMARKS.md, "Profile"). Without it (`step(ids, states)`), each call reads the
    variables as they are, with no per-call copy of the weights, which suits a single step (the
    `step` signature).

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

    def loop_weights(self) -> dict:
        """The weights rearranged for a generation loop (see the class docstring); build once per graph.

        Returns `{"table": (vocab, gates * units), "kernels": [per layer, transposed], "dense": (vocab, units)}`.
        """
        first = self.cells[0]
        table = tf.matmul(self.embedding.embeddings.value, first.kernel.value) + _input_bias(first)
        kernels = [tf.transpose(first.recurrent_kernel.value)]  # (gates * units, units)
        for cell in self.cells[1:]:
            if isinstance(cell, keras.layers.GRUCell):  # reset_after scales the recurrent part alone
                kernels.append((tf.transpose(cell.kernel.value), tf.transpose(cell.recurrent_kernel.value)))
            else:  # (gates * units, inputs + units)
                kernels.append(tf.transpose(tf.concat([cell.kernel.value, cell.recurrent_kernel.value], 0)))
        return {"table": table, "kernels": kernels, "dense": tf.transpose(self.dense.kernel.value)}

    def __call__(self, ids: tf.Tensor, states: list[tf.Tensor],
                 weights: dict | None = None) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """Logits `(batch, vocab)` and the new states after feeding `ids` `(batch,)`.

        Args:
            ids: int32 `(batch,)`.
            states: list of float32 `(batch, units)`, see `state_names`.
            weights: `loop_weights()` built in this graph, or None to read the variables as they
                are. Default None.
        """
        ids = tf.cast(ids, tf.int32)
        new_states, offset, x = [], 0, None
        for i, cell in enumerate(self.cells):
            count = len(_state_sizes(cell))
            h = states[offset]
            if weights is None:
                if i == 0:
                    x = tf.gather(self.embedding.embeddings.value, ids)  # (batch, embedding_dim)
                x_part = tf.matmul(x, cell.kernel.value) + _input_bias(cell)  # (batch, gates * units)
                h_part = tf.matmul(h, cell.recurrent_kernel.value)
            elif i == 0:
                x_part = tf.gather(weights["table"], ids)
                h_part = _matmul_transposed(h, weights["kernels"][0])
            elif isinstance(cell, keras.layers.GRUCell):
                kernel, recurrent_kernel = weights["kernels"][i]
                x_part = _matmul_transposed(x, kernel) + _input_bias(cell)
                h_part = _matmul_transposed(h, recurrent_kernel)
            else:
                x_part = _matmul_transposed(tf.concat([x, h], 1), weights["kernels"][i]) + cell.bias.value
                h_part = None  # already in x_part
            x, cell_states = _cell_step(cell, x_part, h_part, states[offset: offset + count])
            new_states += cell_states
            offset += count
        if weights is None:
            return tf.matmul(x, self.dense.kernel.value) + self.dense.bias.value, new_states  # (batch, vocab)
        return _matmul_transposed(x, weights["dense"]) + self.dense.bias.value, new_states


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


def _matmul_transposed(x: tf.Tensor, kernel_t: tf.Tensor) -> tf.Tensor:
    """`x @ kernel` `(batch, outputs)` from the transposed kernel `(outputs, inputs)`, as `(kernel_t @ x^T)^T`.

    Of the ways to write it, this one is fast at both ends on TF's CPU MatMul (2 cores, 2×512 LSTM,
    see docs/BENCHMARKS.md, "Profile"): at batch 1 as fast as `x @ kernel_t^T` and ~1.5× faster than
    `x @ kernel`; at batch 64 as fast as `x @ kernel`, where `x @ kernel_t^T` is 3-4× slower.
    """
    return tf.transpose(tf.matmul(kernel_t, x, transpose_b=True))


def _input_bias(cell) -> tf.Tensor:
    """The bias added to `x @ kernel` (a GRU with `reset_after` keeps a second, recurrent bias row)."""
    bias = cell.bias.value
    return bias[0] if isinstance(cell, keras.layers.GRUCell) else bias


def _cell_step(cell, x_part: tf.Tensor, h_part: tf.Tensor | None,
               states: list[tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """One cell step from `x_part = x @ kernel + input bias` and `h_part = h @ recurrent_kernel`
    (both `(batch, gates * units)`; `h_part` None when `x_part` already holds the sum): output, new states."""
    h = states[0]
    if isinstance(cell, keras.layers.GRUCell):
        x_z, x_r, x_h = tf.split(x_part, 3, axis=1)
        r_z, r_r, r_h = tf.split(h_part + cell.bias.value[1], 3, axis=1)
        z = tf.sigmoid(x_z + r_z)
        r = tf.sigmoid(x_r + r_r)
        candidate = tf.tanh(x_h + r * r_h)
        h = z * h + (1 - z) * candidate
        return h, [h]
    gates = x_part if h_part is None else x_part + h_part
    if isinstance(cell, keras.layers.LSTMCell):
        i, f, c, o = tf.split(gates, 4, axis=1)
        c = tf.sigmoid(f) * states[1] + tf.sigmoid(i) * tf.tanh(c)
        h = tf.sigmoid(o) * tf.tanh(c)
        return h, [h, c]
    h = tf.tanh(gates)  # SimpleRNN
    return h, [h]

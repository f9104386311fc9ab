"""The language model (Embedding → stacked RNN → Dense logits) and its one-step form.

`build_model` is what `fit` trains; `RecurrentStep` runs the same layers one character at a time
with explicit states, and is what generation and every export reuse.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_chargen.config import ChargenConfig
from keras_chargen.contract import state_names

RNN_LAYERS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "rnn": keras.layers.SimpleRNN}


def build_model(
    config: ChargenConfig,
    vocab_size: int,
    batch_size: int | None = None,
    stateful: bool = False,
    policy: str = "float32",
) -> keras.Model:
    """A Keras model mapping ids `(batch, time)` to next-character logits `(batch, time, vocab_size)`.

    Args:
        config: ChargenConfig, the architecture.
        vocab_size: int, number of ids including the OOV id 0.
        batch_size: int | None, static batch size (required when `stateful`).
        stateful: bool, carry the recurrent state across batches (char-rnn style training).
        policy: str, the Keras dtype policy, `float32` (default) or `mixed_bfloat16` (training only; the
            variables are float32 either way, so the weights load into a float32 model).

    Layer names are fixed (`embedding`, `rnn_0..`, `logits`) so a stateful training model and a
    batch-flexible inference model exchange weights directly.
    """
    if stateful and batch_size is None:
        raise ValueError("a stateful model needs a static batch_size")
    rnn_class = RNN_LAYERS[config.cell]
    inputs = keras.Input(batch_shape=(batch_size, None), dtype="int32", name="ids")
    x = keras.layers.Embedding(vocab_size, config.embedding_dim, name="embedding", dtype=policy)(inputs)
    for i in range(config.num_layers):
        x = rnn_class(config.units, return_sequences=True, stateful=stateful, name=f"rnn_{i}", dtype=policy)(x)
        if config.dropout > 0:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{i}", dtype=policy)(x)
    logits = keras.layers.Dense(vocab_size, name="logits", dtype=policy)(x)
    if policy != "float32":  # the softmax and the loss in float32 (Keras' mixed-precision advice)
        logits = keras.layers.Activation("linear", dtype="float32", name="logits_float32")(logits)
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
    step. It rearranges the weights for speed on TF's CPU executor: the embedding is folded into the
    first layer's input kernel and bias (a `(vocab, gates * units)` table, so that matmul becomes a
    row gather), and every kernel is split into one `(inputs, units)` matrix per gate. A batch-1
    product is bound by reading the weights, and TF's MatMul reads one large matrix on about one
    core; several independent per-gate products run side by side on the inter-op threads, feed
    the gate activations directly (no split) and a layer's recurrent products start before the
    layer below has finished (see docs/profile.md). Without it (`step(ids, states)`), each call
    reads the variables as they are, with no per-call copy of the weights, which suits a single
    step (the `step` signature) and the TFLite / ONNX converters.

    Args:
        model: keras.Model from `build_model` (stateful or not; only its weights are used).
    """

    def __init__(self, model: keras.Model) -> None:
        self.embedding = model.get_layer("embedding")
        self.cells = [layer.cell for layer in model.layers if isinstance(layer, (keras.layers.RNN,))]
        self.dense = model.get_layer("logits")
        for cell in self.cells:
            _check_cell(cell)
        self.state_sizes = [size for cell in self.cells for size in _state_sizes(cell)]

    @property
    def state_names(self) -> list[str]:
        """Names for the flat state list, e.g. `h_0, c_0, h_1, c_1`."""
        return state_names([len(_state_sizes(cell)) for cell in self.cells])

    def initial_states(self, batch_size) -> list[tf.Tensor]:
        return [tf.zeros(tf.stack([batch_size, size])) for size in self.state_sizes]

    def loop_weights(self) -> dict:
        """The weights rearranged for a generation loop (see the class docstring); build once per graph.

        Returns `{"table": [per gate (vocab, units)], "layers": [per layer {"kernel", "bias",
        "recurrent", "recurrent_bias"}: lists with one entry per gate]}`; layer 0 has no `kernel`
        or `bias` (they are in the table), and only a GRU has a `recurrent_bias`.
        """
        first = self.cells[0]
        table = tf.matmul(self.embedding.embeddings.value, first.kernel.value) + _input_bias(first)
        layers = []
        for i, cell in enumerate(self.cells):
            gates = _num_gates(cell)
            recurrent_bias = _recurrent_bias(cell)
            layers.append(
                {
                    "kernel": None if i == 0 else tf.split(cell.kernel.value, gates, axis=1),
                    "bias": None if i == 0 else tf.split(_input_bias(cell), gates),
                    "recurrent": tf.split(cell.recurrent_kernel.value, gates, axis=1),
                    "recurrent_bias": None if recurrent_bias is None else tf.split(recurrent_bias, gates),
                }
            )
        return {"table": tf.split(table, _num_gates(first), axis=1), "layers": layers}

    def __call__(
        self, ids: tf.Tensor, states: list[tf.Tensor], weights: dict | None = None
    ) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """Logits `(batch, vocab)` and the new states after feeding `ids` `(batch,)`.

        Args:
            ids: int32 `(batch,)`.
            states: list of float32 `(batch, units)`, see `state_names`.
            weights: `loop_weights()` built in this graph, or None to read the variables as they
                are. Default None.
        """
        new_states = self.recurrent(ids, states, weights)
        return self.logits(new_states), new_states

    def logits(self, states: list[tf.Tensor]) -> tf.Tensor:
        """Logits `(batch, vocab)` from the states: the output layer on the last layer's `h`."""
        h = states[len(states) - len(_state_sizes(self.cells[-1]))]
        return tf.matmul(h, self.dense.kernel.value) + self.dense.bias.value

    @property
    def gate_names(self) -> list[tuple[str, ...]]:
        """Per layer, the gates `activations` reports: LSTM `(i, f, o)`, GRU `(z, r)`, SimpleRNN none."""
        return [_GATE_NAMES.get(type(cell), ()) for cell in self.cells]

    def activations(
        self, ids: tf.Tensor, states: list[tf.Tensor], weights: dict | None = None
    ) -> tuple[list[tf.Tensor], list[list[tf.Tensor]]]:
        """The new states and, per layer, its gate activations `(batch, units)` in `gate_names` order (after
        the sigmoid), after feeding `ids` `(batch,)` (arguments as `__call__`): what inspection reads."""
        record: list[list[tf.Tensor]] = []
        return self.recurrent(ids, states, weights, record), record

    def recurrent(
        self, ids: tf.Tensor, states: list[tf.Tensor], weights: dict | None = None, record: list | None = None
    ) -> list[tf.Tensor]:
        """The new states after feeding `ids` `(batch,)`, without the output layer (arguments as `__call__`);
        each layer's gate activations are appended to `record` when it is a list."""
        ids = tf.cast(ids, tf.int32)
        new_states, offset, x = [], 0, None
        for i, cell in enumerate(self.cells):
            count, gates = len(_state_sizes(cell)), _num_gates(cell)
            h = states[offset]
            if weights is None:  # full-width products, split into gates
                if i == 0:
                    x = tf.gather(self.embedding.embeddings.value, ids)  # (batch, embedding_dim)
                x_part = tf.matmul(x, cell.kernel.value) + _input_bias(cell)  # (batch, gates * units)
                h_part = _affine(h, cell.recurrent_kernel.value, _recurrent_bias(cell))
                if isinstance(cell, keras.layers.GRUCell):  # reset_after scales the recurrent part alone
                    x_gates, h_gates = tf.split(x_part, gates, axis=1), tf.split(h_part, gates, axis=1)
                else:
                    x_gates, h_gates = tf.split(x_part + h_part, gates, axis=1), None
            else:  # one product per gate
                layer = weights["layers"][i]
                if i == 0:
                    x_gates = [tf.gather(table, ids) for table in weights["table"]]
                else:
                    x_gates = [_affine(x, k, b) for k, b in zip(layer["kernel"], layer["bias"])]
                biases = layer["recurrent_bias"] or [None] * gates
                h_gates = [_affine(h, u, b) for u, b in zip(layer["recurrent"], biases)]
            x, cell_states = _cell_step(cell, x_gates, h_gates, states[offset : offset + count], record)
            new_states += cell_states
            offset += count
        return new_states


def _state_sizes(cell) -> list[int]:
    size = cell.state_size
    return list(size) if isinstance(size, (list, tuple)) else [size]


def _num_gates(cell) -> int:
    """Gate blocks in the cell's kernels: LSTM 4 (i, f, c, o), GRU 3 (z, r, h), SimpleRNN 1."""
    return {keras.layers.LSTMCell: 4, keras.layers.GRUCell: 3}.get(type(cell), 1)


_GATE_NAMES = {keras.layers.LSTMCell: ("i", "f", "o"), keras.layers.GRUCell: ("z", "r")}


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


def _affine(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | None) -> tf.Tensor:
    """`x @ kernel (+ bias)`."""
    product = tf.matmul(x, kernel)
    return product if bias is None else product + bias


def _input_bias(cell) -> tf.Tensor:
    """The bias added to `x @ kernel` (a GRU with `reset_after` keeps a second, recurrent bias row)."""
    bias = cell.bias.value
    return bias[0] if isinstance(cell, keras.layers.GRUCell) else bias


def _recurrent_bias(cell) -> tf.Tensor | None:
    """The bias added to `h @ recurrent_kernel`: a GRU's second bias row; None for the other cells."""
    return cell.bias.value[1] if isinstance(cell, keras.layers.GRUCell) else None


def _cell_step(
    cell,
    x_gates: list[tf.Tensor],
    h_gates: list[tf.Tensor] | None,
    states: list[tf.Tensor],
    record: list | None = None,
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """One cell step from per-gate pre-activations `(batch, units)`: `x_gates[g] = x @ kernel_g +
    input bias_g`, `h_gates[g] = h @ recurrent_kernel_g (+ recurrent bias_g)`, or `h_gates` None when
    `x_gates` already hold the sums (never for a GRU, whose reset gate scales the recurrent part):
    output, new states. The gate activations (`_GATE_NAMES` order) are appended to `record` if given."""
    h = states[0]
    if isinstance(cell, keras.layers.GRUCell):
        assert h_gates is not None  # a GRU's reset gate scales the recurrent part alone
        (x_z, x_r, x_h), (r_z, r_r, r_h) = x_gates, h_gates
        z = tf.sigmoid(x_z + r_z)
        r = tf.sigmoid(x_r + r_r)
        candidate = tf.tanh(x_h + r * r_h)
        h = z * h + (1 - z) * candidate
        if record is not None:
            record.append([z, r])
        return h, [h]
    gates = x_gates if h_gates is None else [a + b for a, b in zip(x_gates, h_gates)]
    if isinstance(cell, keras.layers.LSTMCell):
        i, f, c, o = gates
        c = tf.sigmoid(f) * states[1] + tf.sigmoid(i) * tf.tanh(c)
        h = tf.sigmoid(o) * tf.tanh(c)
        if record is not None:  # the same sigmoids (a graph computes them once)
            record.append([tf.sigmoid(i), tf.sigmoid(f), tf.sigmoid(o)])
        return h, [h, c]
    h = tf.tanh(gates[0])  # SimpleRNN
    if record is not None:
        record.append([])
    return h, [h]

"""`FusedLSTM`: Keras' LSTM decomposed, so that scripts/profile_train.py can time each part (not used by the model:
it ran 0.5-1.1x of `keras.layers.LSTM` on a 2-core AMD EPYC Zen 3; docs/training.md).

Keras' generic recurrent loop calls `LSTMCell.call` once per time step: the input product
`x_t @ kernel`, the recurrent product, the gates, and, in the backward pass TensorFlow derives from
that loop, one small weight-gradient product per step plus its accumulation. `FusedLSTM` runs the
same equations (gate order i, f, c, o, sigmoid gates, tanh activations, `cell.kernel`,
`cell.recurrent_kernel`, `cell.bias`) with the work moved out of the loop:

- forward: the input projection for every step is one `(batch * time, inputs) @ (inputs, 4 * units)`
  product before the loop; the loop does one `(batch, units) @ (units, 4 * units)` product and the
  gate arithmetic per step;
- backward (hand-written, `tf.custom_gradient`): the loop does one `(batch, 4 * units) @ (4 * units,
  units)` product per step for the gradient of `h`; the recurrent-kernel gradient is one
  `(units, batch * time) @ (batch * time, 4 * units)` product after the loop, and the gradients of
  the input kernel and bias flow through the hoisted projection's ordinary derivative.

The layer is a `keras.layers.LSTM` (same cell, same variables, same state handling, `stateful`
included), so weights saved from either load into the other, and `RecurrentStep`, generation and
every export read it unchanged. Masks, `go_backwards`, `unroll` and the cell's own (recurrent)
dropout are not supported: those fall back to Keras' loop.

Not used by `build_model`: on a 2-core AVX2 CPU it did not beat Keras' loop (0.5–1.1× at batch 64,
about 0.5× at 128–256, docs/training.md): Keras' per-step weight-gradient products keep the second
core busy beside the sequential chain, which the hoisted products serialise. It stays for
`scripts/profile_train.py`, which measures it against `keras.layers.LSTM` on each machine.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_chargen")
class FusedLSTM(keras.layers.LSTM):
    """A `keras.layers.LSTM` whose loop hoists the input projection and has a hand-written gradient.

    Takes `keras.layers.LSTM`'s arguments; the activations must be the defaults (tanh, sigmoid).

    Example:
    >>> layer = FusedLSTM(8, return_sequences=True)
    >>> layer(tf.zeros((2, 5, 3))).shape
    TensorShape([2, 5, 8])
    """

    def __init__(self, units: int, **kwargs) -> None:
        super().__init__(units, **kwargs)
        activation = keras.activations.serialize(self.cell.activation)
        recurrent = keras.activations.serialize(self.cell.recurrent_activation)
        if activation != "tanh" or recurrent != "sigmoid":
            raise ValueError(
                f"FusedLSTM supports activation='tanh', recurrent_activation='sigmoid' only; got {activation!r}, "
                f"{recurrent!r}"
            )

    def _fusable(self, mask) -> bool:
        return (
            mask is None
            and not self.go_backwards
            and not self.unroll
            and not self.cell.dropout
            and not self.cell.recurrent_dropout
            and self.cell.use_bias
        )

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self._fusable(mask):
            return super().inner_loop(sequences, initial_state, mask, training)
        h0, c0 = initial_state
        outputs, h, c = lstm_sequence(
            tf.convert_to_tensor(sequences),
            h0,
            c0,
            self.cell.kernel.value,
            self.cell.recurrent_kernel.value,
            self.cell.bias.value,
        )
        return h, outputs, [h, c]


def lstm_sequence(
    x: tf.Tensor, h0: tf.Tensor, c0: tf.Tensor, kernel: tf.Tensor, recurrent: tf.Tensor, bias: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Run an LSTM over `x` `(batch, time, inputs)` from `(h0, c0)` `(batch, units)`, Keras' equations.

    Returns the outputs `(batch, time, units)` and the final `h`, `c`. Differentiable (with respect to
    every argument) through the hoisted projection and `recurrence`'s hand-written gradient.
    """
    time_major = tf.transpose(x, [1, 0, 2])  # (time, batch, inputs): small, unlike the projection
    steps, batch = tf.shape(time_major)[0], tf.shape(time_major)[1]
    projected = tf.matmul(tf.reshape(time_major, [-1, tf.shape(x)[2]]), to_icfo(kernel)) + to_icfo(bias)
    projected = tf.reshape(projected, [steps, batch, -1])  # (time, batch, 4 * units), gates i, c, f, o
    outputs, h, c = recurrence(projected, h0, c0, to_icfo(recurrent))
    return tf.transpose(outputs, [1, 0, 2]), h, c


def to_icfo(weights: tf.Tensor) -> tf.Tensor:
    """Gate blocks (last axis) from Keras' order i, f, c, o to i, c, f, o (TensorFlow's fused LSTM ops' order)."""
    i, f, c, o = tf.split(weights, 4, axis=-1)
    return tf.concat([i, c, f, o], axis=-1)


@tf.custom_gradient
def recurrence(projected: tf.Tensor, h0: tf.Tensor, c0: tf.Tensor, recurrent: tf.Tensor):
    """The recurrent part: `z_t = projected_t + h_{t-1} @ recurrent`, then the cell; time-major, gates i, c, f, o.

    Args:
        projected: `(time, batch, 4 * units)`, `x_t @ kernel + bias` for every step.
        h0, c0: `(batch, units)`.
        recurrent: `(units, 4 * units)`.

    Returns the outputs `(time, batch, units)` and the final `h`, `c`, with a gradient whose loop holds
    one matrix product and one fused gate-gradient op (`LSTMBlockCellGrad`) per step.
    """
    steps = tf.shape(projected)[0]

    def forward(t, h, c, hs, cs, acts):
        z = projected[t] + tf.matmul(h, recurrent)
        i, g, f, o = tf.split(z, 4, axis=1)
        i, g, f, o = tf.sigmoid(i), tf.tanh(g), tf.sigmoid(f), tf.sigmoid(o)
        c = f * c + i * g
        h = o * tf.tanh(c)
        return t + 1, h, c, hs.write(t, h), cs.write(t, c), acts.write(t, tf.concat([i, g, f, o], 1))

    def array(like: tf.Tensor) -> tf.TensorArray:
        return tf.TensorArray(projected.dtype, size=steps, element_shape=like.shape)

    _, h, c, hs, cs, acts = tf.while_loop(
        lambda t, *_: t < steps,
        forward,
        (tf.constant(0), h0, c0, array(h0), array(c0), array(projected[0])),
    )
    outputs, cells, activations = hs.stack(), cs.stack(), acts.stack()

    def grad(d_outputs, d_h, d_c):
        d_outputs = tf.zeros_like(outputs) if d_outputs is None else d_outputs
        d_h = tf.zeros_like(h0) if d_h is None else d_h
        d_c = tf.zeros_like(c0) if d_c is None else d_c
        no_input = tf.zeros([tf.shape(h0)[0], 0], h0.dtype)  # the op's x: the input product is outside the loop
        peephole = tf.zeros([tf.shape(h0)[1]], h0.dtype)
        zero_bias = tf.zeros([tf.shape(recurrent)[1]], h0.dtype)

        def backward(t, dh, dc, dz):
            t = t - 1
            i, g, f, o = tf.split(activations[t], 4, axis=1)
            c_t = cells[t]
            c_prev = tf.cond(t > 0, lambda: cells[tf.maximum(t - 1, 0)], lambda: c0)
            dh = dh + d_outputs[t]
            dc, dz_t, *_ = tf.raw_ops.LSTMBlockCellGrad(
                x=no_input, cs_prev=c_prev, h_prev=dh, w=recurrent, wci=peephole, wcf=peephole, wco=peephole,
                b=zero_bias, i=i, cs=c_t, f=f, o=o, ci=g, co=tf.tanh(c_t), cs_grad=dc, h_grad=dh,
                use_peephole=False,
            )  # fmt: skip
            return t, tf.matmul(dz_t, recurrent, transpose_b=True), dc, dz.write(t, dz_t)

        _, dh0, dc0, dz = tf.while_loop(
            lambda t, *_: t > 0,
            backward,
            (steps, d_h, d_c, tf.TensorArray(projected.dtype, size=steps, element_shape=projected.shape[1:])),
        )
        dz = dz.stack()  # (time, batch, 4 * units)
        previous_h = tf.concat([h0[None], outputs[:-1]], 0)  # (time, batch, units): h_{t-1}
        units = tf.shape(h0)[1]
        d_recurrent = tf.matmul(
            tf.reshape(previous_h, [-1, units]), tf.reshape(dz, [-1, 4 * units]), transpose_a=True
        )  # one product over every step
        return dz, dh0, dc0, d_recurrent

    return (outputs, h, c), grad

"""scripts/fused_lstm.py, the decomposed LSTM that scripts/profile_train.py times part by part, computes what
keras.layers.LSTM computes: outputs, states, gradients, carried state, weights (so its profile is the LSTM's)."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from fused_lstm import FusedLSTM  # noqa: E402


def _pair(units=6, inputs=5, **kwargs):
    """A Keras LSTM and a FusedLSTM holding the same random weights."""
    keras.utils.set_random_seed(3)
    ref = keras.layers.LSTM(units, return_sequences=True, return_state=True, **kwargs)
    fused = FusedLSTM(units, return_sequences=True, return_state=True, **kwargs)
    x = tf.zeros((kwargs.get("batch", 3), 4, inputs)) if "stateful" not in kwargs else None
    ref(x if x is not None else tf.zeros((3, 4, inputs)))
    fused(x if x is not None else tf.zeros((3, 4, inputs)))
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.5, w.shape).astype(np.float32) for w in ref.get_weights()]
    ref.set_weights(weights)
    fused.set_weights(weights)
    return ref, fused


def _loss_and_grads(layer, x, h0, c0):
    with tf.GradientTape() as tape:
        tape.watch([x, h0, c0])
        outputs, h, c = layer(x, initial_state=[h0, c0])
        loss = tf.reduce_sum(outputs * tf.sin(outputs)) + tf.reduce_sum(2 * h) + tf.reduce_sum(c * c)
    return (outputs, h, c), tape.gradient(loss, [x, h0, c0, *layer.trainable_weights])


@pytest.mark.parametrize("graph", [False, True])
def test_outputs_and_gradients_match_keras_lstm(graph):
    ref, fused = _pair()
    rng = np.random.default_rng(1)
    x, h0, c0 = (tf.constant(rng.normal(size=s).astype(np.float32)) for s in ((3, 7, 5), (3, 6), (3, 6)))
    expected, expected_grads = _loss_and_grads(ref, x, h0, c0)
    run = tf.function(_loss_and_grads) if graph else _loss_and_grads
    got, got_grads = run(fused, x, h0, c0)
    for a, b in zip(expected, got):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert len(got_grads) == 6 and all(g is not None for g in got_grads)  # x, h0, c0, kernel, recurrent, bias
    for a, b in zip(expected_grads, got_grads):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_stateful_carry_across_batches_matches_keras():
    layers = []
    for cls in (keras.layers.LSTM, FusedLSTM):
        keras.utils.set_random_seed(5)
        layers.append(cls(4, return_sequences=True, stateful=True))
    x = tf.constant(np.random.default_rng(2).normal(size=(2, 10, 3)).astype(np.float32))
    for layer in layers:
        layer(x[:, :5])
    layers[1].set_weights(layers[0].get_weights())
    for layer in layers:
        layer.reset_state()
    # two chunks with the state carried equal one pass over the whole sequence
    whole = layers[0](x)
    layers[0].reset_state()
    chunks = [tf.concat([layer(x[:, :5]), layer(x[:, 5:])], 1) for layer in layers]
    np.testing.assert_allclose(chunks[0], whole, atol=1e-5)
    np.testing.assert_allclose(chunks[1], whole, atol=1e-5)


def test_weights_and_cell_are_keras_lstms():
    ref, fused = _pair()
    assert isinstance(fused, keras.layers.LSTM) and isinstance(fused.cell, keras.layers.LSTMCell)
    assert [w.shape for w in fused.weights] == [w.shape for w in ref.weights]


def test_other_activations_are_refused():
    with pytest.raises(ValueError, match="activation='tanh'"):
        FusedLSTM(4, activation="relu")

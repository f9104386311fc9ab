import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_chargen import ChargenConfig, RecurrentStep, build_model


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_step_function_matches_the_sequence_model(cell):
    config = ChargenConfig(cell=cell, units=24, num_layers=2, embedding_dim=8)
    model = build_model(config, vocab_size=11)
    ids = np.random.default_rng(0).integers(1, 11, size=(3, 15)).astype(np.int32)
    expected = model(ids).numpy()  # (3, 15, 11)
    step = RecurrentStep(model)
    states = step.initial_states(3)
    assert len(states) == (4 if cell == "lstm" else 2)
    for t in range(15):
        logits, states = step(tf.constant(ids[:, t]), states)
        np.testing.assert_allclose(logits.numpy(), expected[:, t], atol=1e-5)
    assert step.state_names == (["h_0", "c_0", "h_1", "c_1"] if cell == "lstm" else ["h_0", "h_1"])


def test_stateful_training_model_carries_state_and_shares_weights():
    config = ChargenConfig(units=16, num_layers=1, embedding_dim=4)
    stateful = build_model(config, vocab_size=7, batch_size=2, stateful=True)
    flexible = build_model(config, vocab_size=7)
    flexible.set_weights(stateful.get_weights())
    ids = np.random.default_rng(1).integers(1, 7, size=(2, 12)).astype(np.int32)
    stateful(ids[:, :6])
    second_half = stateful(ids[:, 6:]).numpy()  # continues from the carried state
    np.testing.assert_allclose(second_half, flexible(ids).numpy()[:, 6:], atol=1e-5)
    with pytest.raises(ValueError):
        build_model(config, vocab_size=7, stateful=True)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_raw_op_step_equals_the_keras_cells_with_and_without_loop_weights(cell, num_layers):
    config = ChargenConfig(cell=cell, units=16, num_layers=num_layers, embedding_dim=6)
    model = build_model(config, vocab_size=9)
    rng = np.random.default_rng(2)
    # weights large enough that a wrong gate order or bias shows, small enough that 12 steps do not amplify rounding
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in model.get_weights()])
    embedding = model.get_layer("embedding")
    cells = [layer.cell for layer in model.layers if hasattr(layer, "cell")]
    dense = model.get_layer("logits")
    step = RecurrentStep(model)
    weights = step.loop_weights()
    ids = rng.integers(0, 9, size=(4, 12)).astype(np.int32)
    keras_states = plain = with_loop_weights = step.initial_states(4)
    for t in range(12):
        x = embedding(ids[:, t])
        new_keras_states, offset = [], 0
        for keras_cell in cells:  # the Keras cells themselves, one step
            count = 2 if cell == "lstm" else 1
            x, cell_states = keras_cell(x, keras_states[offset : offset + count], training=False)
            new_keras_states += list(cell_states)
            offset += count
        keras_states, expected = new_keras_states, dense(x).numpy()
        logits, plain = step(tf.constant(ids[:, t]), plain)
        loop_logits, with_loop_weights = step(tf.constant(ids[:, t]), with_loop_weights, weights)
        np.testing.assert_allclose(logits.numpy(), expected, atol=1e-5)
        np.testing.assert_allclose(loop_logits.numpy(), expected, atol=1e-5)
        for ours, theirs in zip(with_loop_weights, keras_states):
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-5)


def test_step_refuses_cell_settings_it_does_not_implement():
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(5, 3, name="embedding")(inputs)
    x = keras.layers.GRU(4, reset_after=False, return_sequences=True, name="rnn_0")(x)
    model = keras.Model(inputs, keras.layers.Dense(5, name="logits")(x))
    with pytest.raises(ValueError, match="reset_after"):
        RecurrentStep(model)

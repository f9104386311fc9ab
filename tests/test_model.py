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

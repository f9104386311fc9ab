import numpy as np
import tensorflow as tf

from keras_chargen.sampling import apply_temperature, sample_next


def test_temperature_zero_is_argmax_and_scaling_is_per_row():
    logits = tf.constant([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]])
    temperature = tf.constant([0.0, 2.0])
    np.testing.assert_allclose(apply_temperature(logits, temperature).numpy(), [[0, 3, 1], [1, 0, 0.5]])
    for step in range(20):
        ids = sample_next(logits, tf.constant([0.0, 0.0]), tf.constant([step, 0], tf.int64)).numpy()
        assert ids.tolist() == [1, 0]


def test_draws_follow_the_tempered_softmax_and_are_seeded():
    logits = tf.math.log(tf.constant([[0.1, 0.2, 0.7]] * 20_000))
    temperature = tf.fill([20_000], 0.5)
    ids = sample_next(logits, temperature, tf.constant([1, 2], tf.int64)).numpy()
    expected = np.array([0.1, 0.2, 0.7]) ** 2 / (np.array([0.1, 0.2, 0.7]) ** 2).sum()  # softmax(log p / 0.5)
    np.testing.assert_allclose(np.bincount(ids, minlength=3) / len(ids), expected, atol=0.012)
    again = sample_next(logits, temperature, tf.constant([1, 2], tf.int64)).numpy()
    other = sample_next(logits, temperature, tf.constant([1, 3], tf.int64)).numpy()
    assert np.array_equal(ids, again) and not np.array_equal(ids, other)


def test_sampling_compiles_with_xla():
    run = tf.function(sample_next, jit_compile=True)
    ids = run(tf.constant([[0.0, 5.0]]), tf.constant([1.0]), tf.constant([0, 0], tf.int64))
    assert ids.shape == (1,)

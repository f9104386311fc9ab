import math

import numpy as np
import pytest
import tensorflow as tf

from keras_chargen import ChargenError
from keras_chargen.sampling import (
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    check_repetition_penalty,
    check_top_k,
    check_top_p,
    next_token,
    sample_next,
    sampling_settings,
)


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


# --- the logit processors on hand-made logits ---

NEG_INF = -np.inf


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens():
    logits = tf.constant([[2.0, -2.0, 1.0, 0.0], [2.0, -2.0, 1.0, 0.0]])
    seen = tf.constant([[True, True, False, True], [True, True, True, True]])
    out = apply_repetition_penalty(logits, seen, tf.constant([2.0, 1.0])).numpy()
    np.testing.assert_allclose(out, [[1.0, -4.0, 1.0, 0.0], [2.0, -2.0, 1.0, 0.0]])  # row 2: penalty 1 = off
    # a penalty below 1 rewards repetition instead
    np.testing.assert_allclose(
        apply_repetition_penalty(logits[:1], seen[:1], tf.constant([0.5])).numpy(), [[4.0, -1.0, 1.0, 0.0]]
    )


def test_top_k_keeps_exactly_k_per_row_with_ties_towards_the_lower_id():
    logits = tf.constant([[1.0, 5.0, 3.0, 3.0, 0.0]] * 4)
    out = apply_top_k(logits, tf.constant([1, 3, 0, 9])).numpy()
    assert np.isinf(out[0]).tolist() == [True, False, True, True, True]
    assert np.isinf(out[1]).tolist() == [True, False, False, False, True]
    np.testing.assert_array_equal(out[2], logits[2])  # 0 = off
    np.testing.assert_array_equal(out[3], logits[3])  # k above the vocabulary keeps everything
    tied = apply_top_k(tf.constant([[3.0, 3.0, 3.0]]), tf.constant([2])).numpy()
    assert np.isinf(tied[0]).tolist() == [False, False, True]


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = tf.math.log(tf.constant([[0.15, 0.5, 0.05, 0.3]] * 5))
    out = apply_top_p(logits, tf.constant([1e-7, 0.6, 0.9, 0.97, 1.0])).numpy()
    kept = [np.flatnonzero(np.isfinite(row)).tolist() for row in out]
    assert kept == [[1], [1, 3], [0, 1, 3], [0, 1, 2, 3], [0, 1, 2, 3]]
    np.testing.assert_array_equal(out[1][[1, 3]], logits.numpy()[1][[1, 3]])  # kept logits are unchanged


def test_top_p_sees_the_tempered_distribution():
    # softmax(log [0.5, 0.3, 0.2] / 0.5) = [0.66, 0.24, 0.11]: at p = 0.6 only the first token stays
    logits = tf.math.log(tf.constant([[0.5, 0.3, 0.2]] * 2000))
    ids = sample_next(logits, tf.fill([2000], 0.5), tf.constant([4, 4], tf.int64), top_p=tf.fill([2000], 0.6))
    assert set(ids.numpy().tolist()) == {0}
    ids = sample_next(logits, tf.fill([2000], 1.0), tf.constant([4, 4], tf.int64), top_p=tf.fill([2000], 0.6))
    assert set(ids.numpy().tolist()) == {0, 1}


def test_top_k_and_top_p_draws_follow_the_renormalized_softmax():
    rows = 20_000
    probs = np.array([0.05, 0.4, 0.1, 0.25, 0.2])
    logits = tf.math.log(tf.constant([probs] * rows, tf.float32))
    ids = sample_next(
        logits,
        tf.fill([rows], 1.0),
        tf.constant([1, 2], tf.int64),
        top_k=tf.fill([rows], 3),
        top_p=tf.fill([rows], 1.0),
    ).numpy()
    expected = np.where(probs >= 0.2, probs, 0) / 0.85
    np.testing.assert_allclose(np.bincount(ids, minlength=5) / rows, expected, atol=0.012)
    ids = sample_next(
        logits,
        tf.fill([rows], 1.0),
        tf.constant([1, 2], tf.int64),
        top_k=tf.fill([rows], 0),
        top_p=tf.fill([rows], 0.7),
    ).numpy()  # 0.4 + 0.25 < 0.7: the 0.2 token is the last one in
    np.testing.assert_allclose(np.bincount(ids, minlength=5) / rows, expected, atol=0.012)


def test_filters_off_give_the_plain_temperature_draw():
    logits = tf.random.stateless_normal([64, 30], [0, 1])
    temperature = tf.fill([64], 0.9)
    seed = tf.constant([3, 5], tf.int64)
    plain = sample_next(logits, temperature, seed).numpy()
    off = sample_next(logits, temperature, seed, top_k=tf.fill([64], 0), top_p=tf.fill([64], 1.0)).numpy()
    np.testing.assert_array_equal(plain, off)


def test_next_token_mixes_strategies_per_row():
    logits = tf.constant([[0.0, 3.0, 2.9, 2.8]] * 4)
    seen = tf.constant([[False, True, False, False]] * 4)
    settings = sampling_settings(
        4,
        [0.0, 0.0, 5.0, 5.0],
        top_k=[0, 0, 1, 0],
        top_p=[1.0, 1.0, 1.0, 1e-6],
        repetition_penalty=[1.0, 2.0, 1.0, 1.0],
    )
    for step in range(10):
        ids = next_token(logits, seen, settings, tf.constant([step, 0], tf.int64)).numpy()
        assert ids.tolist() == [1, 2, 1, 1]  # greedy, greedy after the penalty, top-1, top-p -> 0


def test_all_processors_compile_with_xla():
    run = tf.function(next_token, jit_compile=True)
    settings = sampling_settings(2, [1.0, 0.0], top_k=[2, 0], top_p=[0.9, 1.0], repetition_penalty=[1.3, 1.0])
    ids = run(
        tf.constant([[0.0, 5.0, 4.0], [1.0, 0.0, 2.0]]),
        tf.constant([[False, True, False]] * 2),
        settings,
        tf.constant([0, 0], tf.int64),
    )
    assert ids.shape == (2,) and ids.numpy()[1] == 2 and ids.numpy()[0] in (1, 2)


@pytest.mark.parametrize(
    "check, good, bad, message",
    [
        (
            check_top_k,
            [(None, 0), (1, 1), (np.int64(40), 40)],
            [0, -1, 2.0, True, "3"],
            "top_k must be an integer >= 1",
        ),
        (
            check_top_p,
            [(None, 1.0), (1, 1.0), (0.9, 0.9), (np.float32(0.5), 0.5)],
            [0, 0.0, -0.1, 1.5, math.nan, "0.9", False],
            r"top_p must be a number in",
        ),
        (
            check_repetition_penalty,
            [(None, 1.0), (1.2, 1.2), (0.8, 0.8)],
            [0, -1.0, math.inf, math.nan, "1.2", True],
            "repetition_penalty must be a finite number > 0",
        ),
    ],
)
def test_explicit_values_are_checked(check, good, bad, message):
    for value, expected in good:
        assert check(value) == expected
    for value in bad:
        with pytest.raises(ChargenError, match=message):
            check(value)

import numpy as np
import tensorflow as tf

from keras_chargen.sampling import (
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_k_top_p,
    apply_top_p,
    gumbel_noise,
    processors_in_use,
    sampling_settings,
    seed_keys,
    uniform_noise,
)
from keras_chargen.sampling import next_token as next_token_from_keys


def next_token(logits, seen, settings, seeds, steps, in_use=None):
    """`next_token` from the rows' seeds."""
    return next_token_from_keys(logits, seen, settings, seed_keys(seeds), steps, in_use)


def reference_uniform(seed: int, step: int, vocab: int) -> np.ndarray:
    """The counter-based generator in plain int32 NumPy (arithmetic shifts, wrapping multiplies): the spec."""

    def mix(x):
        x = np.asarray(x, np.int32)
        with np.errstate(over="ignore"):
            x = (x ^ (x >> 16)) * np.int32(-2048144789)
            return (x ^ (x >> 13)) * np.int32(-1028477387)

    with np.errstate(over="ignore"):
        key = mix(np.int32(seed) * np.int32(-1640531535))
        row = mix(key + np.int32(step) * np.int32(1779033703))
        bits = mix(row + np.arange(vocab, dtype=np.int32) * np.int32(668265263))
    return ((bits >> 9) * 2 + 2**23 + 1).astype(np.float64) / 2**24


def test_uniform_noise_is_the_documented_pure_function_of_seed_step_and_token():
    seeds = tf.constant([0, 1, 123456789, 2**31 - 1, -5], tf.int32)
    steps = tf.constant([0, 7, 99999, 3, 1], tf.int32)
    noise = uniform_noise(seeds, steps, 70).numpy()
    for row, (seed, step) in enumerate(zip(seeds.numpy(), steps.numpy())):
        np.testing.assert_array_equal(noise[row], reference_uniform(int(seed), int(step), 70).astype(np.float32))
    assert noise.min() > 0 and noise.max() < 1
    np.testing.assert_array_equal(uniform_noise(seeds, steps, 70).numpy(), noise)  # no hidden state


def test_uniform_noise_is_uniform_and_independent_across_steps():
    u = uniform_noise(tf.fill([2000], 42), tf.range(2000), 64).numpy().ravel()  # 128,000 values
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    counts = np.histogram(u, bins=16, range=(0, 1))[0]
    assert counts.min() > 0.95 * len(u) / 16 and counts.max() < 1.05 * len(u) / 16
    lagged = np.corrcoef(u[:-64], u[64:])[0, 1]  # same token, next step
    assert abs(lagged) < 0.02


def settings_for(rows: int, temperature, **kwargs):
    return sampling_settings(rows, temperature, **kwargs)


def test_temperature_zero_is_argmax_and_scaling_is_per_row():
    logits = tf.constant([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]])
    np.testing.assert_allclose(apply_temperature(logits, tf.constant([0.0, 2.0])).numpy(), [[0, 3, 1], [1, 0, 0.5]])
    seen = tf.zeros([2, 3], tf.bool)
    for step in range(5):
        ids = next_token(logits, seen, settings_for(2, 0.0), tf.constant([1, 2]), tf.fill([2], step))
        assert ids.numpy().tolist() == [1, 0]


def test_one_hot_logits_draw_their_token_at_any_temperature_and_seed():
    logits = tf.constant([[-1e9, -1e9, 0.0, -1e9], [0.0, -1e9, -1e9, -1e9], [-1e9, -1e9, -1e9, 0.0]])
    seen = tf.zeros([3, 4], tf.bool)
    for temperature in (0.0, 0.5, 1.0, 5.0):
        for seed in range(5):
            settings = settings_for(3, temperature, top_k=2, top_p=0.5, repetition_penalty=1.3)
            ids = next_token(logits, seen, settings, tf.fill([3], seed), tf.constant([0, 9, 99]))
            assert ids.numpy().tolist() == [2, 0, 3]


def test_the_draw_is_argmax_of_tempered_logits_plus_the_seeded_gumbel_noise():
    logits = tf.random.stateless_normal([64, 30], [0, 1])
    temperature = tf.fill([64], 0.7)
    seeds, steps = tf.range(64) * 3, tf.range(64) + 10
    ids = next_token(logits, tf.zeros([64, 30], tf.bool), settings_for(64, temperature), seeds, steps).numpy()
    scaled = logits.numpy() * (np.float32(1) / np.float32(0.7))  # times 1 / T, as every runtime does it
    expected = np.argmax(scaled + gumbel_noise(seeds, steps, 30).numpy(), axis=1)
    np.testing.assert_array_equal(ids, expected)
    other = next_token(logits, tf.zeros([64, 30], tf.bool), settings_for(64, temperature), seeds + 1, steps).numpy()
    assert (other != ids).sum() > 20  # another seed, other draws


def test_draws_follow_the_tempered_softmax():
    rows = 20_000
    logits = tf.math.log(tf.constant([[0.1, 0.2, 0.7]] * rows))
    ids = next_token(
        logits, tf.zeros([rows, 3], tf.bool), settings_for(rows, 0.5), tf.range(rows), tf.zeros([rows], tf.int32)
    )
    expected = np.array([0.1, 0.2, 0.7]) ** 2 / (np.array([0.1, 0.2, 0.7]) ** 2).sum()  # softmax(log p / 0.5)
    np.testing.assert_allclose(np.bincount(ids.numpy(), minlength=3) / rows, expected, atol=0.012)


def test_sampling_compiles_with_xla():
    run = tf.function(next_token_from_keys, jit_compile=True)
    settings = sampling_settings(2, [1.0, 0.0], top_k=[2, 0], top_p=[0.9, 1.0], repetition_penalty=[1.3, 1.0])
    logits = tf.constant([[0.0, 5.0, 4.0], [1.0, 0.0, 2.0]])
    seen = tf.constant([[False, True, False]] * 2)
    args = (logits, seen, settings, seed_keys(tf.constant([3, 4])), tf.constant([0, 0]))
    np.testing.assert_array_equal(run(*args).numpy(), next_token_from_keys(*args).numpy())


# --- the logit processors on hand-made logits ---


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens():
    logits = tf.constant([[2.0, -2.0, 1.0, 0.0], [2.0, -2.0, 1.0, 0.0]])
    seen = tf.constant([[True, True, False, True], [True, True, True, True]])
    out = apply_repetition_penalty(logits, seen, tf.constant([2.0, 1.0])).numpy()
    np.testing.assert_allclose(out, [[1.0, -4.0, 1.0, 0.0], [2.0, -2.0, 1.0, 0.0]])  # row 2: penalty 1 = off
    np.testing.assert_allclose(  # a penalty below 1 rewards repetition instead
        apply_repetition_penalty(logits[:1], seen[:1], tf.constant([0.5])).numpy(), [[4.0, -1.0, 1.0, 0.0]]
    )


def test_top_k_keeps_the_logits_at_or_above_the_kth_value():
    logits = tf.constant([[1.0, 5.0, 3.0, 2.5, 0.0]] * 4)
    out = apply_top_k(logits, tf.constant([1, 3, 0, 9])).numpy()
    assert np.isinf(out[0]).tolist() == [True, False, True, True, True]
    assert np.isinf(out[1]).tolist() == [True, False, False, False, True]
    np.testing.assert_array_equal(out[2], logits[2])  # 0 = off
    np.testing.assert_array_equal(out[3], logits[3])  # k above the vocabulary keeps everything
    tied = apply_top_k(tf.constant([[3.0, 1.0, 3.0, 3.0]]), tf.constant([2])).numpy()
    assert np.isinf(tied[0]).tolist() == [False, True, False, False]  # ties at the k-th value stay


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = tf.math.log(tf.constant([[0.15, 0.5, 0.05, 0.3]] * 5))
    out = apply_top_p(logits, tf.constant([1e-7, 0.6, 0.9, 0.97, 1.0])).numpy()
    kept = [np.flatnonzero(np.isfinite(row)).tolist() for row in out]
    assert kept == [[1], [1, 3], [0, 1, 3], [0, 1, 2, 3], [0, 1, 2, 3]]
    np.testing.assert_array_equal(out[1][[1, 3]], logits.numpy()[1][[1, 3]])  # kept logits are unchanged


def test_top_p_sees_the_tempered_distribution():
    # softmax(log [0.5, 0.3, 0.2] / 0.5) = [0.66, 0.24, 0.11]: at p = 0.6 only the first token stays
    rows = 2000
    logits = tf.math.log(tf.constant([[0.5, 0.3, 0.2]] * rows))
    seen = tf.zeros([rows, 3], tf.bool)
    cold = next_token(logits, seen, settings_for(rows, 0.5, top_p=0.6), tf.range(rows), tf.zeros([rows], tf.int32))
    assert set(cold.numpy().tolist()) == {0}
    warm = next_token(logits, seen, settings_for(rows, 1.0, top_p=0.6), tf.range(rows), tf.zeros([rows], tf.int32))
    assert set(warm.numpy().tolist()) == {0, 1}


def test_top_k_and_top_p_draws_follow_the_renormalized_softmax():
    rows = 20_000
    probs = np.array([0.05, 0.4, 0.1, 0.25, 0.2])
    logits = tf.math.log(tf.constant([probs] * rows, tf.float32))
    seen, seeds, steps = tf.zeros([rows, 5], tf.bool), tf.range(rows), tf.zeros([rows], tf.int32)
    expected = np.where(probs >= 0.2, probs, 0) / 0.85
    ids = next_token(logits, seen, settings_for(rows, 1.0, top_k=3), seeds, steps).numpy()
    np.testing.assert_allclose(np.bincount(ids, minlength=5) / rows, expected, atol=0.012)
    ids = next_token(logits, seen, settings_for(rows, 1.0, top_p=0.7), seeds, steps).numpy()  # 0.4 + 0.25 < 0.7
    np.testing.assert_allclose(np.bincount(ids, minlength=5) / rows, expected, atol=0.012)


def test_skipping_unused_processors_changes_nothing():
    logits = tf.random.stateless_normal([64, 30], [0, 1])
    seen = tf.random.stateless_uniform([64, 30], [1, 2]) < 0.3
    rows = np.arange(64)
    settings = sampling_settings(
        64,
        np.where(rows % 4 == 0, 0.0, 0.9),
        top_k=np.where(rows % 3 == 0, 5, 0),
        top_p=np.where(rows % 5 == 0, 0.8, 1.0),
        repetition_penalty=np.where(rows % 2 == 0, 1.4, 1.0),
    )
    seeds, steps = tf.range(64), tf.fill([64], 3)
    straight = next_token(logits, seen, settings, seeds, steps).numpy()
    skipping = next_token(logits, seen, settings, seeds, steps, processors_in_use(settings)).numpy()
    np.testing.assert_array_equal(straight, skipping)
    # with every processor off, the draw is the plain temperature draw
    plain = sampling_settings(64, 0.9)
    off = next_token(logits, seen, plain, seeds, steps, processors_in_use(plain)).numpy()
    scaled = logits.numpy() * (np.float32(1) / np.float32(0.9))
    expected = np.argmax(scaled + gumbel_noise(seeds, steps, 30).numpy(), axis=1)
    np.testing.assert_array_equal(off, expected)


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
        ids = next_token(logits, seen, settings, tf.fill([4], 7), tf.fill([4], step)).numpy()
        assert ids.tolist() == [1, 2, 1, 1]  # greedy, greedy after the penalty, top-1, top-p -> 0


def test_top_k_then_top_p_from_one_sort():
    logits = tf.math.log(tf.constant([[0.15, 0.5, 0.05, 0.3]] * 3))
    out = apply_top_k_top_p(logits, tf.constant([2, 3, 0]), tf.constant([0.9, 0.7, 0.7])).numpy()
    kept = [np.flatnonzero(np.isfinite(row)).tolist() for row in out]
    # top-2 = {1, 3}, renormalized 0.625 / 0.375: p 0.9 keeps both; top-3 {1, 3, 0}: 0.526 < 0.7 keeps 1, 3
    assert kept == [[1, 3], [1, 3], [1, 3]]


def test_stage_probabilities_show_each_processor_in_order():
    from keras_chargen.sampling import STAGES, stage_probabilities

    logits = tf.constant([[2.0, 1.0, 0.0, -1.0], [2.0, 1.0, 0.0, -1.0], [0.5, 3.0, 0.0, -1.0]])
    seen = tf.constant([[True, False, False, True], [False] * 4, [False, True, False, False]])
    settings = sampling_settings(3, [0.5, 2.0, 0.0], [0, 3, 2], [0.9, 1.0, 0.5], [2.0, 1.0, 1.5])
    probs = stage_probabilities(logits, seen, settings).numpy()  # (rows, stages, vocab)
    assert STAGES == ("model", "repetition_penalty", "temperature", "top_k", "top_p") and probs.shape == (3, 5, 4)

    def softmax(x):
        e = np.exp(np.array(x) - np.max(x))
        return e / e.sum()

    np.testing.assert_allclose(probs[:, 0], tf.nn.softmax(logits).numpy(), rtol=1e-6)
    penalized = [1.0, 1.0, 0.0, -2.0]  # row 0: 2 / 2 and -1 * 2 on the seen tokens
    np.testing.assert_allclose(probs[0, 1], softmax(penalized), rtol=1e-6)
    tempered = softmax(np.array(penalized) / 0.5)
    np.testing.assert_allclose(probs[0, 2], tempered, rtol=1e-6)
    np.testing.assert_allclose(probs[0, 3], tempered, rtol=1e-6)  # top-k off
    nucleus = np.where(np.arange(4) < 2, tempered, 0) / tempered[:2].sum()  # the first alone is below 0.9
    np.testing.assert_allclose(probs[0, 4], nucleus, rtol=1e-6)
    np.testing.assert_allclose(probs[1, 2], softmax([1.0, 0.5, 0.0, -0.5]), rtol=1e-6)  # T = 2
    top3 = softmax([1.0, 0.5, 0.0])
    np.testing.assert_allclose(probs[1, 3], [*top3, 0], rtol=1e-6)
    np.testing.assert_allclose(probs[1, 4], probs[1, 3], rtol=1e-6)  # top-p off
    # temperature 0: greedy on the penalized logits (3 / 1.5 = 2 still leads), one-hot from the temperature on
    np.testing.assert_allclose(probs[2, 1], softmax([0.5, 2.0, 0.0, -1.0]), rtol=1e-6)
    for stage in (2, 3, 4):
        np.testing.assert_array_equal(probs[2, stage], [0, 1, 0, 0])
    # the last stage is what the draw samples: 2,000 seeded draws per row follow it
    n = 2000
    tiled = sampling_settings(3 * n, *(tf.tile(v, [n]) for v in settings))
    ids = next_token(
        tf.tile(logits, [n, 1]), tf.tile(seen, [n, 1]), tiled, tf.range(3 * n), tf.zeros([3 * n], tf.int32)
    )
    frequencies = np.stack([np.bincount(ids.numpy()[r::3], minlength=4) / n for r in range(3)])
    np.testing.assert_allclose(frequencies, probs[:, 4], atol=0.035)

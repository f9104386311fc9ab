import numpy as np
import pytest

from keras_chargen.cell_features import FEATURES, CellMatch, Correlations, FeatureTracker, best_cells, ranked_cells


def column(values: np.ndarray, name: str) -> list[float]:
    return values[:, FEATURES.index(name)].tolist()


def test_features_after_each_character():
    text = 'AB(c "d)"\nEF[x'
    values = FeatureTracker().values(list(text))
    assert column(values, "in_quotes") == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert column(values, "bracket_depth") == [0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1]
    assert column(values, "line_position") == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4]
    assert column(values, "in_word") == [1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 1, 1, 0, 1]
    assert column(values, "after_newline") == [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert column(values, "upper_run") == [1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0]


def test_features_carry_across_calls_and_read_words_character_by_character():
    whole = FeatureTracker().values(list("((a)\n“b"))
    tracker = FeatureTracker()
    split = np.concatenate([tracker.values(list("((a")), tracker.values(list(")\n“b"))])
    np.testing.assert_array_equal(whole, split)
    words = FeatureTracker().values(["((", "a", ")", "\n", "“b"])  # a word is read to its last character
    np.testing.assert_array_equal(words, whole[[1, 2, 3, 4, 6]])
    assert column(whole, "bracket_depth")[-1] == 1 and column(whole, "in_quotes")[-1] == 1
    assert FeatureTracker().values(list(")))"))[:, FEATURES.index("bracket_depth")].tolist() == [0, 0, 0]


def test_chunked_correlations_equal_numpy_corrcoef():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(1000, 3)) + 50.0  # a large offset: the pairwise update must not lose it
    x = np.concatenate([f[:, :1] * 2 + rng.normal(size=(1000, 1)), rng.normal(size=(1000, 4)) * 10 + 100], axis=1)
    acc = Correlations(3, 5)
    for start in range(0, 1000, 137):
        acc.add(f[start : start + 137], x[start : start + 137])
    expected = np.corrcoef(np.concatenate([f, x], axis=1).T)[:3, 3:]
    np.testing.assert_allclose(acc.correlations(), expected, atol=1e-5)
    assert acc.correlations()[0, 0] > 0.85


def test_constant_columns_have_no_correlation_and_are_never_ranked():
    f = np.zeros((10, len(FEATURES)))
    f[:, 1] = np.arange(10)  # only bracket_depth varies
    x = np.stack([np.arange(10.0), np.ones(10), -(np.arange(10.0) ** 2)], axis=1)  # (10, 3)
    acc = Correlations(len(FEATURES), 3)
    acc.add(f, x)
    r = acc.correlations()
    assert np.isnan(r[0]).all() and np.isnan(r[1, 1])
    ranked = ranked_cells(r.reshape(len(FEATURES), 1, 1, 3), ("h",))
    assert [(m.feature, m.cell) for m in ranked] == [("bracket_depth", 0), ("bracket_depth", 2)]  # no NaN cell
    assert ranked[0].correlation == pytest.approx(1.0)
    assert best_cells(ranked) == [ranked[0]]
    assert ranked[0].to_json() == {"feature": "bracket_depth", "layer": 0, "kind": "h", "cell": 0, "correlation": 1.0}
    assert isinstance(ranked[1], CellMatch) and ranked[1].correlation < -0.9

"""The inspection pass against the Keras model: probabilities, activations, gates; chunking; the bracket-depth cell."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from conftest import CORPUS

from keras_chargen import ChargenConfig, CharGenerator, ChargenError, FileSource, build_model, evaluate, train
from keras_chargen.inspection import TOP, Inspector, inspect_text, text_chunks
from keras_chargen.tokenizer import tokenize

TEXT = CORPUS.read_text("utf-8")[:2500]


@pytest.fixture(scope="module")
def inspector(generator) -> Inspector:
    """One `Inspector` of the tiny trained model: its graph is traced once for the module."""
    return Inspector(generator)


def keras_loss(model: keras.Model, ids: np.ndarray) -> float:
    """The Keras model's mean loss (nats) on `ids` read as one stream from the zero state: each id predicts the next."""
    logits = model.predict(ids[None, :-1], verbose=0)[0]  # compiled: a long sequence in eager mode takes seconds
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(ids[1:], logits)
    return float(loss.numpy())


def random_generator(cell: str, tokens: list[str], level: str = "char", seed: int = 0) -> CharGenerator:
    """An untrained 2-layer model with weights large enough that a wrong gate or state shows."""
    config = ChargenConfig(cell=cell, units=12, num_layers=2, embedding_dim=6)
    model = build_model(config, len(tokens) + 1)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    return CharGenerator(model, tokens, level)


def test_mean_surprisal_equals_the_keras_loss_and_evaluate_all(inspector, generator, trained_dir, tmp_path):
    text = TEXT + "§ unknown ☃\n" + TEXT[:500]  # unknown characters are scored as the OOV id, as evaluate does
    result = inspect_text(inspector, text, max_positions=100, chunk_chars=333)  # many chunks: the state is carried
    ids = np.array([generator.vocabulary.index(c) + 1 if c in generator.vocabulary else 0 for c in text], np.int32)
    assert result.total == len(text) and result.scored == len(text) - 1 and (ids == 0).sum() == 2
    nats = result.bits_per_char * math.log(2)
    assert nats == pytest.approx(keras_loss(generator.model, ids), abs=1e-4)
    # evaluate reads the same text as parallel streams (its own state resets): within a few percent
    path = tmp_path / "text.txt"
    path.write_text(text, "utf-8")
    evaluated = evaluate(trained_dir, FileSource((path,)), split="all")
    assert abs(evaluated["loss"] - nats) / nats < 0.05
    assert result.shown == 100 and np.isnan(result.prob[0]) and len(result.tokens) == 100
    assert "".join(result.tokens) == text[:100]
    json = result.to_json()
    assert json["bits_per_char"] == pytest.approx(result.bits_per_char, rel=1e-5)
    assert json["positions"][0] == {"token": text[0], "prob": None, "surprisal_bits": None, "top": []}
    second = json["positions"][1]
    assert second["surprisal_bits"] == pytest.approx(-math.log2(second["prob"]), rel=1e-5)
    assert len(second["top"]) == TOP and second["top"][0][1] >= second["top"][-1][1]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_activations_probabilities_and_gates_equal_the_keras_model_run_step_by_step(cell):
    tokens = list("\n abc(),.")
    generator = random_generator(cell, tokens)
    text = "ab (c, a).\nba c§(b)\n" * 2  # one unknown character per line
    result = inspect_text(generator, text, chunk_chars=7)
    config = ChargenConfig(cell=cell, units=12, num_layers=2, embedding_dim=6)
    stateful = build_model(config, len(tokens) + 1, batch_size=1, stateful=True)  # the Keras layers, one id at a time
    stateful.set_weights(generator.model.get_weights())
    layers = [stateful.get_layer(f"rnn_{i}") for i in range(2)]
    embedding = stateful.get_layer("embedding").embeddings.numpy()
    ids = [tokens.index(c) + 1 if c in tokens else 0 for c in text]
    assert result.kinds == {"lstm": ("h", "c", "i", "f", "o"), "gru": ("h", "z", "r"), "rnn": ("h",)}[cell]
    previous = [np.zeros(12, np.float32) for _ in layers]  # each layer's h before the step
    logits = None
    for t, token in enumerate(ids):
        out = stateful(np.array([[token]], np.int32)).numpy()[0, 0]
        x = embedding[token]
        for i, layer in enumerate(layers):
            states = [s.numpy()[0] for s in layer.states]
            np.testing.assert_allclose(result.activations[t, i, 0], states[0], atol=1e-5)  # h
            if cell == "lstm":
                np.testing.assert_allclose(result.activations[t, i, 1], states[1], atol=1e-5)  # c
            gates = reference_gates(layer.cell, x, previous[i])
            np.testing.assert_allclose(result.activations[t, i, len(states) :], gates, atol=1e-5)
            previous[i], x = states[0], states[0]
        if t > 0:  # the probability the Keras model gave this id after the ids before it
            probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            assert result.prob[t] == pytest.approx(probs[token], rel=1e-4, abs=1e-7)
            np.testing.assert_allclose(result.top_probs[t], np.sort(probs)[::-1][:TOP], rtol=1e-4, atol=1e-7)
            assert result.top_ids[t, 0] == np.argmax(probs)
        logits = out


def reference_gates(cell, x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The gate activations of a Keras cell in numpy, from its own weights: LSTM (i, f, o), GRU (z, r), none."""
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    kernel, recurrent, bias = (w.numpy() for w in (cell.kernel, cell.recurrent_kernel, cell.bias))
    if isinstance(cell, keras.layers.LSTMCell):
        i, f, _, o = np.split(x @ kernel + h @ recurrent + bias, 4)
        return sigmoid(np.stack([i, f, o]))
    if isinstance(cell, keras.layers.GRUCell):  # reset_after: two bias rows
        x_z, x_r, _ = np.split(x @ kernel + bias[0], 3)
        h_z, h_r, _ = np.split(h @ recurrent + bias[1], 3)
        return sigmoid(np.stack([x_z + h_z, x_r + h_r]))
    return np.zeros((0, h.shape[0]))


def test_chunk_size_does_not_change_the_result(inspector):
    whole = inspect_text(inspector, TEXT[:1500], max_positions=1500, chunk_chars=100_000)
    pieces = inspect_text(inspector, iter([TEXT[:700], TEXT[700:1500]]), max_positions=1500, chunk_chars=64)
    assert pieces.total == whole.total == 1500 and pieces.tokens == whole.tokens
    np.testing.assert_allclose(pieces.prob, whole.prob, rtol=1e-5)
    np.testing.assert_allclose(pieces.activations, whole.activations, atol=1e-5)
    np.testing.assert_allclose(pieces.correlations, whole.correlations, atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(pieces.saturation, whole.saturation, atol=1e-9)
    assert pieces.bits == pytest.approx(whole.bits, rel=1e-6)
    capped = inspect_text(inspector, TEXT[:1500], max_positions=10)
    assert capped.shown == 10 and capped.activations.shape == (10, 1, 5, 48) and capped.total == 1500
    assert capped.bits == pytest.approx(whole.bits, rel=1e-6)


def test_word_level_positions_are_words_and_agree_with_keras():
    text = "The king is bright, I think.\nA naive friend (unknown) shall be near!\n" * 3
    tokens = list(dict.fromkeys(t for t in tokenize(text, False) if t != "unknown"))
    generator = random_generator("lstm", tokens, level="word")
    result = inspect_text(generator, iter(text), chunk_chars=20)  # one character at a time, cut at whitespace
    words = tokenize(text, False)
    assert result.total == len(words) and result.level == "word"
    assert result.tokens[:4] == ["The", " king", " is", " bright"] and result.tokens[4] == ","
    assert "".join(result.tokens).startswith("The king is bright, I think.\nA naive friend (unknown)")
    ids = np.array([tokens.index(w) + 1 if w in tokens else 0 for w in words], np.int32)
    assert result.bits_per_char * math.log(2) == pytest.approx(keras_loss(generator.model, ids), abs=1e-4)


@pytest.mark.parametrize("level", ["char", "word"])
def test_text_chunks_end_at_token_boundaries(level):
    text = "aa bb\ncc  dd" * 40 + "x" * 50 + " end"
    chunks = list(text_chunks(iter([text[:37], text[37:]]), level, size=16))
    assert "".join(chunks) == text and max(map(len, chunks)) <= (16 if level == "char" else 55)
    if level == "word":
        assert all(c[0].isspace() for c in chunks[1:])
        assert [t for c in chunks for t in tokenize(c, False)] == tokenize(text, False)


@pytest.mark.parametrize("text", ["", "A"])
def test_too_short_texts_are_one_clear_error(inspector, text):
    with pytest.raises(ChargenError, match="inspecting needs at least 2"):
        inspect_text(inspector, text)


def bracket_text(size: int, seed: int, max_depth: int = 4) -> str:
    """Random nested brackets with filler letters (as LSTMVis' parens data): open, close or a letter at each step."""
    rng = np.random.default_rng(seed)
    draws, letters = rng.random(size), rng.integers(0, 4, size)
    out, depth = [], 0
    for draw, letter in zip(draws, letters):
        if draw < 0.25 and depth < max_depth:
            out.append("(")
            depth += 1
        elif draw < 0.5 and depth > 0:
            out.append(")")
            depth -= 1
        else:
            out.append("abcd"[letter])
    return "".join(out)


@pytest.mark.slow
def test_a_cell_follows_bracket_depth_on_a_synthetic_corpus(tmp_path):
    corpus = tmp_path / "brackets.txt"
    corpus.write_text(bracket_text(64 * 1024, seed=0), "utf-8")
    config = ChargenConfig(
        units=32, num_layers=1, embedding_dim=8, seq_len=64, batch_size=32, epochs=3, learning_rate=0.01, patience=0
    )
    train(config, FileSource((corpus,)), tmp_path / "model", verbose=0, sample_every_epoch=False)
    result = inspect_text(tmp_path / "model", bracket_text(4000, seed=1), max_positions=0)  # new text
    best = {m.feature: m for m in result.cells}["bracket_depth"]
    assert abs(best.correlation) >= 0.8, best
    assert result.constant_features == ["in_quotes", "after_newline", "upper_run"]

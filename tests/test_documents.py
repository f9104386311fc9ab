"""Document mode: markers, the whole-document layout with exact resets, generation that ends by itself."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, tiny_config
from test_cli import run_cli

from keras_chargen import Vocabulary, load_generator, make_source, train
from keras_chargen.documents import document_layout, prepare_documents, read_documents, training_documents
from keras_chargen.model import build_model, stateful_layers
from keras_chargen.tokenizer import tokenize
from keras_chargen.vocab import DOC_END, DOC_START

NAMES = REPO / "tests" / "data" / "names.txt"
CAP = 40  # the length cap in these tests: generated names are 3-12 characters


def test_layout_is_whole_documents_with_resets_and_padding():
    docs = [np.array(d) for d in ([9, 1, 2, 10], [9, 3, 10], [9, 4, 5, 6, 7, 8, 10])]
    inputs, targets, weights, resets = document_layout(docs, batch_size=2, seq_len=3)
    expected_inputs = [[[9, 1, 2], [9, 3, 0]], [[9, 4, 5], [0, 0, 0]], [[6, 7, 8], [0, 0, 0]]]
    expected_targets = [[[1, 2, 10], [3, 10, 0]], [[4, 5, 6], [0, 0, 0]], [[7, 8, 10], [0, 0, 0]]]
    assert inputs.tolist() == expected_inputs and targets.tolist() == expected_targets
    assert weights.tolist() == [[[1, 1, 1], [1, 1, 0]], [[1, 1, 1], [0, 0, 0]], [[1, 1, 1], [0, 0, 0]]]
    assert resets.tolist() == [[True, True], [True, True], [False, True]]  # the 3rd doc's 2nd window carries state


def test_state_is_exact_within_a_document_and_zero_at_its_start():
    """Training through the layout (state carried, reset by the mask) gives each document the logits it has alone."""
    rng = np.random.default_rng(0)
    docs = [np.concatenate([[9], rng.integers(1, 9, size=n), [10]]) for n in (2, 7, 4, 11, 1, 5)]
    inputs, _, weights, resets = document_layout(docs, batch_size=2, seq_len=4)
    config = tiny_config(units=8, embedding_dim=4)
    stateful = build_model(config, 11, batch_size=2, stateful=True)
    plain = build_model(config, 11)
    plain.set_weights(stateful.get_weights())
    streams = [[], []]  # per row: the logits of its real positions, in order
    for k in range(len(inputs)):
        for layer in stateful_layers(stateful):
            for state in layer.states:
                state.assign(state.numpy() * ~resets[k][:, None])
        logits = stateful(inputs[k]).numpy()
        for row in range(2):
            streams[row].extend(logits[row][weights[k, row] > 0])
    flat = [np.stack(s) for s in streams]
    # each stream is its documents' logits, one after another, each computed from the zero state
    heads = [0, 0]
    # the greedy assignment (each document to the row with the fewest windows so far; windows 1, 2, 2, 3, 1, 2)
    order = [0, 1, 0, 1, 0, 0]
    for doc, row in zip(docs, order):
        n = len(doc) - 1
        np.testing.assert_allclose(
            flat[row][heads[row] : heads[row] + n], plain(doc[None, :-1]).numpy()[0], rtol=1e-5, atol=1e-5
        )
        heads[row] += n
    assert heads == [len(flat[0]), len(flat[1])]


def test_reading_documents_lines_and_files(tmp_path):
    (tmp_path / "list.txt").write_text("Anna\n\n  \nBruno\r\nCéline\n", encoding="utf-8")
    assert read_documents(make_source([tmp_path / "list.txt"], documents=True)) == ["Anna", "Bruno", "Céline"]
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "a.txt").write_text("Soup\nwater, salt\n", encoding="utf-8")
    (folder / "b.txt").write_text("Bread\nflour\n", encoding="utf-8")
    (folder / "empty.txt").write_text("\n", encoding="utf-8")
    assert read_documents(make_source([folder], documents=True)) == ["Soup\nwater, salt", "Bread\nflour"]
    assert read_documents(make_source([folder])) == ["Soup", "water, salt", "Bread", "flour"]  # no --documents


def test_markers_are_reserved_ids_never_text(tmp_path):
    corpus = prepare_documents(make_source([NAMES], documents=True), tmp_path, tiny_config(documents=True))
    vocab = corpus.vocab
    assert vocab.tokens[-2:] == [DOC_START, DOC_END] and vocab.document_start == vocab.size - 2
    assert vocab.encode("<doc>").tolist() == [0, vocab.token_id("d"), vocab.token_id("o"), vocab.token_id("c"), 0]
    ids = corpus.read_ids("train")
    first = read_documents(make_source([NAMES], documents=True))[0]
    assert ids[: len(first) + 2].tolist() == [vocab.document_start, *vocab.encode(first), vocab.document_end]
    assert vocab.decode(ids[: len(first) + 2]) == first  # markers decode to ""
    assert json.loads((tmp_path / "corpus.json").read_text())["num_train_documents"] == 540
    assert tokenize("a <doc> b </doc>", False) == ["a", "<", "doc", ">", "b", "<", "/", "doc", ">"]
    words = Vocabulary(["a", "b", DOC_START, DOC_END], "word")
    assert words.encode("a <doc> b").tolist() == [1, 0, 0, 0, 2] and words.decode([3, 1, 2, 4]) == "a b"
    assert Vocabulary.load(_saved(tmp_path, vocab)) == vocab


def _saved(tmp_path: Path, vocab: Vocabulary) -> Path:
    vocab.save(tmp_path / "vocab.json")
    return tmp_path / "vocab.json"


@pytest.fixture(scope="module")
def names_dir(tmp_path_factory) -> Path:
    """A small character model of tests/data/names.txt in document mode."""
    out = tmp_path_factory.mktemp("documents") / "names"
    config = tiny_config(documents=True, seq_len=8, batch_size=16, epochs=6, units=64, learning_rate=1e-2)
    train(config, make_source([NAMES], documents=True), out, verbose=0, sample_every_epoch=False)
    return out


def test_evaluate_scores_whole_documents_as_training_validated_them(names_dir):
    from keras_chargen import evaluate

    rows = (names_dir / "history.csv").read_text().strip().splitlines()[1:]
    header = (names_dir / "history.csv").read_text().splitlines()[0].split(",")
    history = [dict(zip(header, r.split(","))) for r in rows]
    best = min(history, key=lambda r: float(r["val_loss"]))
    result = evaluate(names_dir, make_source([NAMES], documents=True))
    assert result["bpc"] == pytest.approx(float(best["val_bpc"]), rel=1e-4)
    lengths = [len(d) + 1 for d in read_documents(make_source([NAMES], documents=True))[540:]]
    assert result["chars"] == sum(lengths)  # every character and the end marker, no padding


def test_documents_end_by_themselves_in_python(names_dir):
    generator = load_generator(names_dir)
    texts = generator.generate([""] * 20, 0.8, CAP, seed=1)
    assert all(0 < len(t) < CAP and "\n" not in t for t in texts), texts
    capped = generator.generate([""] * 4, 0.8, 2, seed=1)  # --length is a cap
    assert all(len(t) <= 2 for t in capped)
    prompted = generator.generate(["Br"] * 5, 0.8, CAP, seed=2)  # a prompt is the beginning of a document
    assert all(len(t) < CAP for t in prompted)


def test_cli_prints_documents_one_per_line_and_novel_ones(names_dir, capsys):
    code, out, err = run_cli(capsys, "generate", names_dir, "--num-samples", "20", "--length", CAP, "--seed", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 20 and all(0 < len(line) < CAP for line in lines)
    known = training_documents(names_dir)
    assert 590 < len(known) <= 600 and "Bachieth" in known  # val names with unknown capitals decode alike
    code, out, err = run_cli(capsys, "generate", names_dir, "--num-samples", "20", "--novel", "--seed", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 20 and not set(lines) & known


def test_exports_stop_at_the_end_marker(names_dir, tmp_path):
    from test_export_onnx import run_generate as onnx_generate
    from test_export_tflite import run_generate as tflite_generate

    from keras_chargen.export import export_model

    vocab = Vocabulary.load(names_dir / "vocab.json")
    saved, tflite, onnx_dir = export_model(names_dir, tmp_path / "names", "all")
    generator = load_generator(names_dir)
    served = tf.saved_model.load(str(saved)).signatures["serving_default"]
    rows = 8
    outputs = served(
        prompt=tf.constant([""] * rows),
        temperature=tf.fill([rows], 0.8),
        max_new_chars=tf.fill([rows], CAP),
        seed=tf.constant([5], tf.int32),
        top_k=tf.zeros([rows], tf.int32),
        top_p=tf.ones([rows]),
        repetition_penalty=tf.ones([rows]),
        stop=tf.constant([""] * rows),
    )
    texts = [t.decode() for t in outputs["generated"].numpy()]
    assert texts == generator.generate([""] * rows, 0.8, CAP, seed=5)  # the same graph
    assert all(0 < len(t) < CAP for t in texts)
    end = vocab.document_end
    for run in (tflite_generate, onnx_generate):
        ids = run(tflite / "generate.tflite" if run is tflite_generate else onnx_dir / "generate.onnx",
                  [[]] * rows, 0.8, CAP, seed=5)  # fmt: skip
        assert ids.shape == (rows, CAP)  # (batch, max_new_chars), 0 after a row has stopped
        for row in ids:
            real = row[row > 0]
            assert real[-1] == end and (real == end).sum() == 1  # each row ended by itself, at its end marker
            assert vocab.document_start not in real
        assert [vocab.decode(row[row > 0]) for row in ids] == texts  # markers decode to "": the same names
    greedy = generator.generate(["Br"], 0.0, CAP)[0]
    prompt = [vocab.encode("Br").tolist()]
    for ids in (
        tflite_generate(tflite / "generate.tflite", prompt, 0.0, CAP),
        onnx_generate(onnx_dir / "generate.onnx", prompt, 0.0, CAP),
    ):
        assert vocab.decode(ids[0][ids[0] > 0]) == greedy  # primed on the start marker + prompt, as in Python


def test_word_level_documents(tmp_path):
    from conftest import CORPUS

    config = tiny_config(documents=True, level="word", seq_len=8, batch_size=16, epochs=4, learning_rate=1e-2)
    train(config, make_source([CORPUS], documents=True), tmp_path / "w", verbose=0, sample_every_epoch=False)
    vocab = Vocabulary.load(tmp_path / "w" / "vocab.json")
    assert vocab.level == "word" and vocab.tokens[-2:] == [DOC_START, DOC_END]
    texts = load_generator(tmp_path / "w").generate([""] * 10, 0.5, 30, seed=1)
    ended = [t for t in texts if len(tokenize(t, False)) < 30]
    assert len(ended) >= 8 and not any("<" in t or "doc" in t for t in texts), texts
    assert all(t and t[0] != " " for t in texts)  # the first word follows the start marker directly

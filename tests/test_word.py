"""Word level: tokenization rules, the word vocabulary, training, in-graph generation and export."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorflow as tf
from conftest import CORPUS, SHAKESPEARE, keras_step_logits, needs_shakespeare, tiny_config

from keras_chargen import ChargenError, FileSource, Vocabulary, train
from keras_chargen.corpus import prepare_corpus, word_chunks
from keras_chargen.evaluation import evaluate, ngram_baseline
from keras_chargen.tokenizer import detokenize, tokenize

TEXT = "First Citizen:\nBefore we proceed, hear me speak.\n\nAll:\tSpeak,  speak! Don't o'er-reach (well-known)...\r\n"


def test_tokenize_keeps_words_punctuation_and_newlines_apart():
    assert tokenize(TEXT, lowercase=False) == [
        "First",
        "Citizen",
        ":",
        "\n",
        "Before",
        "we",
        "proceed",
        ",",
        "hear",
        "me",
        "speak",
        ".",
        "\n",
        "\n",
        "All",
        ":",
        "Speak",
        ",",
        "speak",
        "!",
        "Don't",
        "o'er-reach",
        "(",
        "well-known",
        ")",
        ".",
        ".",
        ".",
        "\n",
    ]
    assert tokenize("ÉLODIE:\tÜber  naïve\u00a0café", lowercase=True) == ["élodie", ":", "über", "naïve", "café"]


def test_detokenize_rules_and_round_trip():
    tokens = tokenize(TEXT, lowercase=False)
    text = detokenize(tokens)
    assert text == (
        "First Citizen:\nBefore we proceed, hear me speak.\n\nAll: Speak, speak! Don't o'er-reach (well-known)...\n"
    )
    assert " ," not in text and " ." not in text and "( " not in text and " \n" not in text and "\n " not in text
    corpus = CORPUS.read_text(encoding="utf-8")
    tokens = tokenize(corpus, lowercase=False)
    assert tokenize(detokenize(tokens), lowercase=False) == tokens  # words and punctuation survive
    assert detokenize(tokens).split() == corpus.split()  # this corpus is already spaced the standard way


def test_word_chunks_never_split_a_word():
    class Pieces:
        def chunks(self):
            yield from ["The riv", "er is sw", "eet.\nMy lo", "rd"]

    chunks = list(word_chunks(Pieces()))
    assert "".join(chunks) == "The river is sweet.\nMy lord"
    assert all(c[-1].isspace() for c in chunks[:-1])


def test_word_vocabulary_keeps_the_most_frequent_words(tmp_path):
    corpus = prepare_corpus(FileSource((CORPUS,)), tmp_path, 0.1, level="word", max_vocab=10)
    vocab = corpus.vocab
    assert vocab.level == "word" and vocab.size == 11
    tokens = tokenize(CORPUS.read_text(encoding="utf-8"), lowercase=False)
    counts = {}
    for t in tokens[: corpus.num_train]:
        counts[t] = counts.get(t, 0) + 1
    tenth = sorted(counts.values(), reverse=True)[9]
    assert all(counts[t] >= tenth for t in vocab.tokens)  # StringLookup.adapt: most frequent first
    assert corpus.num_train + corpus.num_val == len(tokens)
    ids = np.concatenate([corpus.read_ids("train"), corpus.read_ids("val")])
    expected = [vocab.token_id(t) for t in tokens]
    assert ids.tolist() == expected and 0 in expected  # rare words are [UNK] (id 0)
    vocab.save(tmp_path / "vocab.json")
    assert json.loads((tmp_path / "vocab.json").read_text())["level"] == "word"
    assert Vocabulary.load(tmp_path / "vocab.json") == vocab


def test_word_vocabulary_encode_decode_and_errors():
    vocab = Vocabulary(["the", "river", ",", "\n", "."], level="word", lowercase=True)
    assert vocab.encode("The river, the sea.").tolist() == [1, 2, 3, 1, 0, 5]
    assert vocab.decode([1, 2, 3, 1, 0, 5]) == "the river, the [UNK]."
    assert vocab.unknown_tokens("The sea and the sky") == ["sea", "and", "sky"]
    with pytest.raises(ChargenError, match="invalid word tokens"):
        Vocabulary(["ok", " "], level="word")
    with pytest.raises(ChargenError, match="level must be one of"):
        Vocabulary(["a"], level="bpe")


def test_word_model_knows_its_level_and_generates_readable_text(word_dir, word_generator):
    assert json.loads((word_dir / "vocab.json").read_text())["level"] == "word"
    assert word_generator.level == "word"
    texts = word_generator.generate(["The river", "", "ANNA:\n"], temperature=0.7, max_new_chars=30, seed=3)
    for text in texts:
        assert " ," not in text and " ." not in text and " !" not in text and "\n " not in text
        assert "[UNK]" not in text
        tokens = tokenize(text, lowercase=False)
        assert 20 <= len(tokens) <= 30 or "\n" in text  # one token per step; newlines may merge nothing
        assert set(tokens) <= set(word_generator.vocabulary)
    assert texts[0].startswith(" ")  # "The river" + " is ..."
    assert not texts[1].startswith(" ")  # an empty prompt starts a line
    assert not texts[2].startswith(" ")  # after a newline no space


def test_word_generation_follows_the_step_reference(word_generator):
    """Greedy word generation in-graph equals a step-by-step loop over the Keras cells."""
    vocab = Vocabulary(word_generator.vocabulary, "word")
    prompt_ids = vocab.encode("ANNA:\nThe river").tolist()
    ids, out = list(prompt_ids), []
    for _ in range(12):
        logits = keras_step_logits(word_generator, ids)[-1]
        logits[0] = -np.inf
        out.append(int(np.argmax(logits)))
        ids.append(out[-1])
    text = word_generator.generate("ANNA:\nThe river", temperature=0.0, max_new_chars=12)[0]
    assert text == detokenize(["river"] + [vocab.tokens[i - 1] for i in out])[len("river") :]


def test_unknown_prompt_words(word_generator):
    with pytest.raises(ChargenError, match=r"words not in the model's vocabulary: 'zebra'.*--oov unk"):
        word_generator.generate("The zebra", max_new_chars=5)
    with pytest.raises(ChargenError, match="oov must be one of error, unk"):
        word_generator.generate("The zebra", max_new_chars=5, oov="skip")
    unk = word_generator.generate("The zebra", temperature=0.0, max_new_chars=5, oov="unk")[0]
    other = word_generator.generate("The giraffe", temperature=0.0, max_new_chars=5, oov="unk")[0]
    known = word_generator.generate("The", temperature=0.0, max_new_chars=5)[0]
    assert unk == other != known  # any unknown word is fed as the same [UNK] token, not dropped


def test_word_stop_string_ends_at_a_newline_token(word_generator):
    texts = word_generator.generate("ANNA:\nThe river", temperature=1.0, max_new_chars=60, seed=4, stop="\n")
    assert texts[0].endswith("\n") and texts[0].count("\n") == 1 and not texts[0].endswith(" \n")


def test_trailing_space_in_prompt_is_not_doubled(word_generator):
    text = word_generator.generate("The river ", temperature=0.0, max_new_chars=3)[0]
    assert (
        not text.startswith(" ")
        and text == word_generator.generate("The river", temperature=0.0, max_new_chars=3)[0][1:]
    )


def test_evaluate_and_unigram_baseline_count_words(word_dir):
    result = evaluate(word_dir, FileSource((CORPUS,)))
    unigram = ngram_baseline(word_dir, FileSource((CORPUS,)), order=1)
    assert 0 < result["loss"] < unigram  # even 2 epochs beat word frequencies
    assert math.isclose(result["bpc"] * math.log(2), result["loss"])


def test_cli_generate_and_evaluate_speak_words(word_dir, capsys):
    from keras_chargen.cli import main

    assert main(["generate", str(word_dir), "--prompt", "The zebra", "--length", "5", "--seed", "1"]) == 2
    assert "words not in the model's vocabulary: 'zebra'" in capsys.readouterr().err
    assert main(["generate", str(word_dir), "--prompt", "The zebra", "--length", "5", "--oov", "unk"]) == 0
    assert capsys.readouterr().out.startswith("The zebra")
    assert main(["evaluate", str(word_dir), "--text", str(CORPUS), "--ngram-order", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("order-1 n-gram baseline:") and "nats/word" in lines[0]
    assert lines[1].startswith("words: ") and lines[-1].startswith("bits/word: ")


def test_word_savedmodel_matches_in_process(word_dir, word_generator, tmp_path):
    from keras_chargen.export import export_model

    export_model(word_dir, tmp_path / "exp", "savedmodel")
    loaded = tf.saved_model.load(str(tmp_path / "exp" / "1"))
    prompts = ["The river", "", "ANNA:\nMy lord is"]
    inputs = dict(
        prompt=tf.constant(prompts),
        temperature=tf.constant([0.0, 0.8, 1.0]),
        max_new_chars=tf.constant([10, 10, 10]),
        seed=tf.constant([7, 7, 7]),
        top_k=tf.constant([0, 5, 0]),
        top_p=tf.constant([1.0, 1.0, 0.9]),
        repetition_penalty=tf.constant([1.0, 1.0, 1.2]),
        stop=tf.constant(["", "", "\n"]),
    )
    exported = loaded.signatures["serving_default"](**inputs)["generated"].numpy().tolist()
    assert exported == word_generator(**inputs)["generated"].numpy().tolist()  # same seeded rows in-process
    # the :stream gives the same words, detokenized the same way (spaces, punctuation, newlines)
    from serving_stream import stream_texts

    rows = [{k: v.numpy()[i] for k, v in inputs.items()} for i in range(3)]
    rows = [{k: v.decode() if isinstance(v, bytes) else v.item() for k, v in row.items()} for row in rows]
    assert stream_texts(tmp_path / "exp" / "1", rows) == [t.decode() for t in exported]
    longer = {**rows[2], "prompt": "The river ", "max_new_chars": 40, "temperature": 0.9, "stop": ""}
    predicted = loaded.signatures["serving_default"](**{k: tf.constant([v]) for k, v in longer.items()})
    assert stream_texts(tmp_path / "exp" / "1", [longer]) == [predicted["generated"].numpy()[0].decode()]
    assert exported[0].decode() == word_generator.generate(prompts[0], 0.0, 10)[0]
    encoded = loaded.signatures["encode"](prompt=tf.constant(["My lord is zebra"]))
    ids = encoded["ids"].numpy()[0][: encoded["lengths"].numpy()[0]]
    assert ids[-1] == 0 and len(ids) == 4  # the unknown word is [UNK], not dropped
    decoded = loaded.signatures["decode"](ids=tf.constant([ids[:3].tolist() + [0, 0]], tf.int32))
    assert decoded["text"].numpy()[0].decode() == "My lord is"


def test_word_tflite_generator_matches_keras_greedy(word_dir, word_generator, tmp_path):
    from keras_chargen.export import export_model
    from keras_chargen.export.runtimes import TFLiteStep, greedy_ids

    export_model(word_dir, tmp_path / "exp", "tflite")
    vocab_json = json.loads((tmp_path / "exp" / "tflite" / "1" / "vocab.json").read_text())
    assert vocab_json["level"] == "word"
    vocab = Vocabulary(vocab_json["tokens"], "word", vocab_json["lowercase"])
    prompt_ids = vocab.encode("ANNA:\nThe river").tolist()
    step = TFLiteStep(tmp_path / "exp" / "tflite" / "1" / "step.tflite")
    ids = greedy_ids(step, step.initial_states(1), prompt_ids, 10)
    text = word_generator.generate("ANNA:\nThe river", temperature=0.0, max_new_chars=10)[0]
    assert detokenize(["river"] + [vocab.tokens[i - 1] for i in ids])[len("river") :] == text


@needs_shakespeare
def test_word_model_on_shakespeare_slice_beats_unigram(tmp_path):
    path = tmp_path / "slice.txt"
    path.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:200_000], encoding="utf-8")
    config = tiny_config(
        level="word",
        lowercase=True,
        max_vocab=2000,
        units=96,
        embedding_dim=32,
        seq_len=24,
        batch_size=16,
        epochs=2,
        learning_rate=1e-2,
    )
    out = tmp_path / "model"
    train(config, FileSource((path,)), out, verbose=0, sample_every_epoch=False)
    loss = evaluate(out, FileSource((path,)))["loss"]
    unigram = ngram_baseline(out, FileSource((path,)), order=1)
    assert loss < unigram - 0.3, (loss, unigram)

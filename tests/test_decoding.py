"""One sampler everywhere: the decode loop gives the same text in the Python API, the SavedModel, TFLite, ONNX
and the `:stream`, for the same prompts, seeds and settings; document markers; empty continuations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import CORPUS
from serving_stream import stream_texts

from keras_chargen import CharGenerator, Vocabulary
from keras_chargen.config import ChargenConfig
from keras_chargen.export.runtimes import OnnxGenerator, TFLiteGenerator, generate_inputs, ids_before_stop
from keras_chargen.model import build_model

CHARS, SEED = 200, 1234
# Three setting mixes, each run on the same 20 prompts in one batch of 60 rows (row r seeds with SEED + r).
MIXES = [
    dict(temperature=0.8),
    dict(temperature=1.0, top_k=10, top_p=0.9),
    dict(temperature=0.7, top_p=0.95, repetition_penalty=1.3, stop="."),
]
OFF = dict(top_k=0, top_p=1.0, repetition_penalty=1.0, stop="")


def prompts_from_corpus(count: int = 20) -> list[str]:
    """`count` prompts of varied lengths from the training text (the empty prompt among them)."""
    text = CORPUS.read_text(encoding="utf-8")
    starts = np.linspace(0, len(text) - 80, count - 1).astype(int)
    return [""] + [text[s : s + 3 + (7 * i) % 60] for i, s in enumerate(starts)]


PROMPTS = prompts_from_corpus()


def rows() -> list[dict]:
    """One dict per row: prompt, seed and every setting (the off values where a mix leaves one out)."""
    out = []
    for m, mix in enumerate(MIXES):
        for i, prompt in enumerate(PROMPTS):
            out.append({"prompt": prompt, "seed": SEED + m * len(PROMPTS) + i, **OFF, **mix})
    return out


@pytest.fixture(scope="module")
def exported(exported_all) -> Path:
    return exported_all


@pytest.fixture(scope="module")
def api_texts(generator) -> list[str]:
    texts = []
    for m, mix in enumerate(MIXES):
        settings = {k: v for k, v in mix.items() if k != "temperature"}
        texts += generator.generate(PROMPTS, mix["temperature"], CHARS, seed=SEED + m * len(PROMPTS), **settings)
    return texts


def id_inputs(vocab: Vocabulary) -> dict[str, np.ndarray]:
    table = rows()
    return generate_inputs(
        [vocab.encode(r["prompt"]).tolist() for r in table],
        CHARS,
        [r["temperature"] for r in table],
        SEED,  # one seed: row r draws with SEED + r
        [r["top_k"] for r in table],
        [r["top_p"] for r in table],
        [r["repetition_penalty"] for r in table],
        [[vocab.token_id(r["stop"])] if r["stop"] else [0] for r in table],
    )


def texts_of(vocab: Vocabulary, ids: np.ndarray) -> list[str]:
    return [vocab.decode(ids_before_stop(row)) for row in ids]


def test_savedmodel_python_api_tflite_onnx_and_stream_give_the_same_text(exported, generator, api_texts, capsys):
    vocab = Vocabulary(generator.vocabulary)
    table = rows()
    assert len(table) == 60 and len(set(api_texts)) > 50  # 60 rows, nearly all different

    serve = tf.saved_model.load(str(exported / "1")).signatures["serving_default"]
    columns = {k: tf.constant([r[k] for r in table]) for k in ("prompt", "temperature", "top_k", "top_p", "stop")}
    columns["repetition_penalty"] = tf.constant([r["repetition_penalty"] for r in table], tf.float32)
    saved = serve(**columns, max_new_chars=tf.fill([60], CHARS), seed=tf.constant([SEED]))["generated"]
    assert [t.decode("utf-8") for t in saved.numpy()] == api_texts

    inputs = id_inputs(vocab)
    tflite = TFLiteGenerator(exported / "tflite" / "1" / "generate.tflite")(**inputs)
    assert texts_of(vocab, tflite) == api_texts
    fresh = TFLiteGenerator(exported / "tflite" / "1" / "generate.tflite")(**inputs)  # a new interpreter
    np.testing.assert_array_equal(fresh, tflite)
    onnx = OnnxGenerator(exported / "onnx" / "1" / "generate.onnx")(**inputs)
    np.testing.assert_array_equal(onnx, tflite)

    streamed = stream_texts(exported / "1", [{**r, "max_new_chars": CHARS} for r in table])
    assert streamed == api_texts

    agreement = {}
    for quantize in ("dynamic", "float16"):
        ids = TFLiteGenerator(exported / f"tflite-{quantize}" / "1" / "generate.tflite")(**inputs)
        same = [a == b for a, b in zip(texts_of(vocab, ids), api_texts)]
        first = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), CHARS) for a, b in zip(ids, tflite)]
        agreement[quantize] = (sum(same), float(np.mean(first)))
    with capsys.disabled():  # measured, not asserted: quantization may flip a draw, and the rest follows
        for quantize, (same, first) in agreement.items():
            print(f"\nTFLite {quantize}: {same}/60 rows identical to fp32; mean first differing position {first:.0f}")


def test_same_seed_same_text_and_stop_and_padding_rules(exported, generator, api_texts):
    vocab = Vocabulary(generator.vocabulary)
    stopped = [t for r, t in zip(rows(), api_texts) if r["stop"]]
    assert all(t.endswith(".") and t.count(".") == 1 or len(t) == CHARS for t in stopped)
    ids = TFLiteGenerator(exported / "tflite" / "1" / "generate.tflite")(**id_inputs(vocab))
    for row, text in zip(ids, api_texts):
        assert (row[len(text) :] == 0).all() and (row[: len(text)] > 0).all()  # 0 after a row stops
    again = generator.generate(PROMPTS[:5], 0.8, CHARS, seed=SEED)
    assert again == api_texts[:5]


def test_max_new_chars_zero_returns_the_prompt_everywhere(exported, generator):
    serve = tf.saved_model.load(str(exported / "1")).signatures["serving_default"]
    out = serve(
        prompt=tf.constant(["ANNA:", "BRUNO:"]),
        temperature=tf.constant([0.8, 0.8]),
        max_new_chars=tf.constant([0, 0]),
        seed=tf.constant([1]),
        top_k=tf.constant([0]),
        top_p=tf.constant([1.0]),
        repetition_penalty=tf.constant([1.0]),
        stop=tf.constant([""]),
    )
    assert [t.decode() for t in out["text"].numpy()] == ["ANNA:", "BRUNO:"]
    assert [t.decode() for t in out["generated"].numpy()] == ["", ""]
    mixed = serve(
        prompt=tf.constant(["ANNA:", "BRUNO:"]),
        temperature=tf.constant([0.0, 0.0]),
        max_new_chars=tf.constant([0, 7]),
        seed=tf.constant([1]),
        top_k=tf.constant([0]),
        top_p=tf.constant([1.0]),
        repetition_penalty=tf.constant([1.0]),
        stop=tf.constant([""]),
    )["generated"].numpy()
    assert mixed[0] == b"" and mixed[1].decode() == generator.generate(["BRUNO:"], 0.0, 7)[0]
    assert generator.generate(["ANNA:"], 0.8, 0, seed=3) == [""]
    assert stream_texts(exported / "1", [{"prompt": "ANNA:", "max_new_chars": 0}]) == [""]


# --- document markers ---

DOC_VOCAB = ["\n", "a", "b", "c", "<doc>", "</doc>"]  # ids 1..6: <doc> = 5, </doc> = 6


def doc_generator(favourite: int, document_end: bool = True) -> CharGenerator:
    """An untrained 1-layer model whose logits always favour `favourite` (then `c`, then `b`): its output is known."""
    model = build_model(ChargenConfig(units=8, num_layers=1, embedding_dim=4), len(DOC_VOCAB) + 1)
    dense = model.get_layer("logits")
    bias = np.zeros(len(DOC_VOCAB) + 1, np.float32)
    bias[[favourite, 4, 3]] = [30.0, 20.0, 10.0]
    dense.set_weights([np.zeros_like(dense.get_weights()[0]), bias])
    return CharGenerator(model, DOC_VOCAB, document_start=5, document_end=6 if document_end else None)


def test_document_start_primes_every_prompt_and_is_never_generated():
    generator = doc_generator(favourite=5, document_end=False)  # the start marker is the favourite: banned
    ids, lengths = generator.encode(tf.constant(["ab", ""]))
    assert ids.numpy().tolist() == [[5, 2, 3], [5, 0, 0]] and lengths.numpy().tolist() == [3, 1]
    logits, states = generator.prime(ids, lengths)
    expected = generator.model(np.array([[5, 2, 3]], np.int32)).numpy()[0, -1]
    np.testing.assert_allclose(logits.numpy()[0], expected, atol=1e-5)
    assert generator.generate(["ab", ""], 0.0, 4) == ["cccc", "cccc"]  # the next best, never <doc>
    from keras_chargen.export.id_generator import IdGenerator

    inputs = generate_inputs([[2, 3]] * 8, 50, 50.0, seed=2)  # hot: every id but the banned ones comes up
    ids = IdGenerator(generator).generate(**{k: tf.constant(v) for k, v in inputs.items()})["ids"].numpy()
    assert 5 not in ids and 0 not in ids and {1, 2, 3, 4, 6} <= set(ids.ravel().tolist())


def test_document_end_stops_a_row_and_adds_no_text(tmp_path):
    generator = doc_generator(favourite=6)
    assert generator.generate(["ab", ""], 0.0, 10) == ["", ""]  # the end marker comes first: nothing else
    out = generator(tf.constant(["ab"]), tf.constant([0.0]), tf.constant([10]), tf.constant([0]))
    assert out["text"].numpy()[0].decode() == "ab"
    texts = generator.pieces(tf.constant([1, 5, 2]), tf.constant([5, 2, 6])).numpy().tolist()
    assert texts == [b"", b"a", b""]  # markers decode to ""
    from keras_chargen.export.id_generator import IdGenerator

    inputs = generate_inputs([[2, 3], []], 6, 0.0)
    ids = IdGenerator(generator).generate(**{k: tf.constant(v) for k, v in inputs.items()})["ids"].numpy()
    assert ids.tolist() == [[6, 0, 0, 0, 0, 0]] * 2  # the end id is the row's last id, then padding
    clone = CharGenerator.from_config(generator.get_config())
    assert (clone.document_start, clone.document_end) == (5, 6)


def test_document_markers_in_the_exports_and_the_stream(tmp_path):
    from keras_chargen.export.savedmodel import export_savedmodel

    generator = doc_generator(favourite=6)
    dense = generator.model.get_layer("logits")
    bias = dense.get_weights()[1]
    bias[6] = 15.0  # now: a (30), </doc> (15), b (10), the rest 0
    bias[[2, 5]] = [30.0, 0.0]
    bias[[1, 4]] = 0.0
    dense.set_weights([dense.get_weights()[0], bias])
    vocab_file = tmp_path / "vocab.json"
    vocab_file.write_text('{"level": "char", "lowercase": false, "tokens": []}')
    path = export_savedmodel(generator, tmp_path / "sm" / "1", None)
    (path / "assets").mkdir(exist_ok=True)
    import json

    (path / "assets" / "vocab.json").write_text(json.dumps({"level": "char", "tokens": DOC_VOCAB}))
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    out = serve(
        prompt=tf.constant(["ab"]),
        temperature=tf.constant([0.0]),
        max_new_chars=tf.constant([5]),
        seed=tf.constant([1]),
        top_k=tf.constant([0]),
        top_p=tf.constant([1.0]),
        repetition_penalty=tf.constant([1.0]),
        stop=tf.constant([""]),
    )
    assert out["generated"].numpy()[0].decode() == "aaaaa" == generator.generate(["ab"], 0.0, 5)[0]
    assert stream_texts(path, [{"prompt": "ab", "temperature": 0, "max_new_chars": 5}]) == ["aaaaa"]
    penalized = generator.generate(["ab"], 0.0, 5, repetition_penalty=3.0)[0]  # a: 30 / 3 < </doc> 15 once seen
    assert penalized == ""
    assert stream_texts(path, [{"prompt": "ab", "temperature": 0, "max_new_chars": 5, "repetition_penalty": 3.0}]) == [
        ""
    ]

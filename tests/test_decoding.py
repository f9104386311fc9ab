"""One sampler everywhere: the decode loop gives the same text in the Python API, the SavedModel, TFLite, ONNX
and the `:stream`, for the same prompts, seeds and settings, at the character and the word level; seeds; stop
sequences; document markers; empty continuations."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import CORPUS
from serving_stream import stream_results, stream_texts

from keras_chargen import CharGenerator
from keras_chargen.config import ChargenConfig
from keras_chargen.export.runtimes import OnnxGenerator, TFLiteGenerator, generate_inputs, ids_before_stop
from keras_chargen.model import build_model
from keras_chargen.settings import SETTINGS

SEED_MAX = 2**31 - 1
DTYPES = {"float32": tf.float32, "int32": tf.int32, "string": tf.string}
LENGTH = {"char": 120, "word": 40}  # tokens per row
# Four setting mixes, each run on the same 20 prompts; mix m seeds its rows with SEEDS[m] + i (mod 2**31), so
# the first mix covers the seeds 2**31 - 1, 0, 1, 2, ...
SEEDS = [SEED_MAX, 1234, 77, 2**20]
MIXES = {
    "char": [
        dict(temperature=0.8),
        dict(temperature=1.0, top_k=10, top_p=0.9),
        dict(temperature=0.7, top_p=0.95, repetition_penalty=1.3, stop="\n\n"),  # two characters: a speech's end
        dict(temperature=0.9, stop=["e ", ".\n"]),  # two stop strings
    ],
    "word": [
        dict(temperature=0.8),
        dict(temperature=1.0, top_k=10, top_p=0.9),
        dict(temperature=0.7, top_p=0.95, repetition_penalty=1.3, stop="\n\n"),  # two tokens
        dict(temperature=0.9, stop=["the king", "?"]),  # two stop strings, one of two words
    ],
}


def prompts_from_corpus(count: int = 20) -> list[str]:
    """`count` prompts of varied lengths from the training text (the empty prompt among them)."""
    text = CORPUS.read_text(encoding="utf-8")
    starts = np.linspace(0, len(text) - 80, count - 1).astype(int)
    return [""] + [text[s : s + 3 + (7 * i) % 60] for i, s in enumerate(starts)]


PROMPTS = prompts_from_corpus()


def rows(level: str) -> list[dict]:
    """One request per row (80): prompt, its own seed and every setting (off values where a mix leaves one out)."""
    out = []
    for mix, seed in zip(MIXES[level], SEEDS):
        for i, prompt in enumerate(PROMPTS):
            row = {"prompt": prompt, "seed": (seed + i) % 2**31, "max_new_chars": LENGTH[level], **mix}
            out.append(row)
    return out


@pytest.fixture(scope="module", params=["char", "word"])
def level(request, generator, exported_all, word_generator, word_exported):
    """(level, the in-process generator, the exported base path with SavedModel, TFLite and ONNX)."""
    if request.param == "char":
        return "char", generator, exported_all
    return "word", word_generator, word_exported


def api_texts(generator, level: str) -> list[str]:
    """The Python API, one call per mix (one seed for its 20 rows)."""
    texts = []
    for mix, seed in zip(MIXES[level], SEEDS):
        settings = {k: v for k, v in mix.items() if k != "temperature"}
        texts += generator.generate(
            PROMPTS, mix["temperature"], LENGTH[level], seed, "skip" if level == "char" else "unk", **settings
        )
    return texts


def id_level_texts(runtime, level: str) -> list[str]:
    """`generate_text` of a TFLite or ONNX generator, one call per mix."""
    texts = []
    for mix, seed in zip(MIXES[level], SEEDS):
        texts += runtime.generate_text(PROMPTS, LENGTH[level], seed=seed, **mix)
    return texts


def savedmodel_texts(path, table: list[dict]) -> list[str]:
    """`serving_default` on the rows with one stop string each (it takes one per row), in one batch."""
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    inputs = {"prompt": tf.constant([r["prompt"] for r in table])}
    for spec in SETTINGS:
        inputs[spec.name] = tf.constant([r.get(spec.name, spec.off) for r in table], DTYPES[spec.dtype])
    return [t.decode("utf-8") for t in serve(**inputs)["generated"].numpy()]


def test_savedmodel_python_api_tflite_onnx_and_stream_give_the_same_text(level, capsys):
    name, generator, base = level
    table = rows(name)
    expected = api_texts(generator, name)
    assert len(expected) == 80 and len(set(expected)) > 70  # nearly all different
    stopped = [t for r, t in zip(table, expected) if "stop" in r and len(generator.codec.tokens(t)) < LENGTH[name]]
    assert len(stopped) >= 10  # the stop mixes do stop rows (not only the length)

    single = [i for i, r in enumerate(table) if not isinstance(r.get("stop"), list)]  # serving_default: one stop
    assert savedmodel_texts(base / "1", [table[i] for i in single]) == [expected[i] for i in single]
    assert stream_texts(base / "1", table) == expected  # several stop strings too
    tflite = TFLiteGenerator(base / "tflite" / "1" / "generate.tflite")
    assert id_level_texts(tflite, name) == expected
    onnx = OnnxGenerator(base / "onnx" / "1" / "generate.onnx")
    assert id_level_texts(onnx, name) == expected

    if name == "char":  # measured, not asserted: quantization may flip a draw, and the rest follows
        for quantize in ("dynamic", "float16"):
            texts = id_level_texts(TFLiteGenerator(base / f"tflite-{quantize}" / "1" / "generate.tflite"), name)
            same = sum(a == b for a, b in zip(texts, expected))
            with capsys.disabled():
                print(f"\nTFLite {quantize}: {same}/80 rows identical to fp32")


def test_a_row_stops_where_its_tokens_first_end_with_a_stop_string(level):
    name, generator, _ = level
    tokens = generator.codec.tokens  # characters, or words (the stop matches whole tokens at the word level)
    for row, text in zip(rows(name), api_texts(generator, name)):
        stops = row.get("stop") or []
        stops = [tokens(s) for s in ([stops] if isinstance(stops, str) else stops)]
        out = tokens(text)
        ends = [k for k in range(1, len(out) + 1) if any(s and out[:k][-len(s) :] == s for s in stops)]
        assert ends == ([len(out)] if ends else []), (text, row)  # only at the very end, and included
        assert ends or len(out) == LENGTH[name]  # otherwise the row ran to its length


def test_a_negative_seed_draws_one_per_row_that_reproduces_the_text_everywhere(level):
    name, generator, base = level
    prompts = PROMPTS[1:4]
    texts, seeds = generator.generate_with_seeds(prompts, 1.0, 30, None, "skip" if name == "char" else "unk")
    assert all(0 <= s <= SEED_MAX for s in seeds) and len(set(seeds)) == 3
    for prompt, text, seed in zip(prompts, texts, seeds):
        assert generator.generate([prompt], 1.0, 30, seed, "skip" if name == "char" else "unk") == [text]

    serve = tf.saved_model.load(str(base / "1")).signatures["serving_default"]
    inputs = dict(
        prompt=tf.constant(prompts),
        temperature=tf.constant([1.0] * 3),
        max_new_chars=tf.constant([30] * 3),
        top_k=tf.constant([0]),
        top_p=tf.constant([1.0]),
        repetition_penalty=tf.constant([1.0]),
        stop=tf.constant([""]),
    )
    drawn = serve(**inputs, seed=tf.constant([-1]))
    again = serve(**inputs, seed=drawn["seed"])
    assert drawn["seed"].numpy().min() >= 0 and len(set(drawn["seed"].numpy().tolist())) == 3
    assert again["generated"].numpy().tolist() == drawn["generated"].numpy().tolist()

    [(text, seed)] = stream_results(base / "1", [{"prompt": prompts[0], "max_new_chars": 30, "temperature": 1.0}])
    assert 0 <= seed <= SEED_MAX
    assert stream_texts(
        base / "1", [{"prompt": prompts[0], "max_new_chars": 30, "temperature": 1.0, "seed": seed}]
    ) == [text]
    assert generator.generate([prompts[0]], 1.0, 30, seed, "skip" if name == "char" else "unk") == [text]

    for runtime in (
        TFLiteGenerator(base / "tflite" / "1" / "generate.tflite"),
        OnnxGenerator(base / "onnx" / "1" / "generate.onnx"),
    ):
        inputs = generate_inputs([[3, 4], [5]], 20, 1.0, -1)  # the graph draws
        first = runtime.run(**inputs)
        assert first["seed"].min() >= 0 and first["seed"][0] != first["seed"][1]
        rerun = runtime.run(**generate_inputs([[3, 4], [5]], 20, 1.0, first["seed"].tolist()))
        np.testing.assert_array_equal(rerun["ids"], first["ids"])
        texts, seeds = runtime.generate_text_with_seeds(prompts, 30, temperature=1.0)  # None: drawn in Python
        assert texts == [
            generator.generate([p], 1.0, 30, s, "skip" if name == "char" else "unk")[0] for p, s in zip(prompts, seeds)
        ]


def test_same_seed_same_text_and_padding_rules(exported_all, generator):
    table = rows("char")
    expected = api_texts(generator, "char")
    tflite = TFLiteGenerator(exported_all / "tflite" / "1" / "generate.tflite")
    codec_ids = [tflite_ids for tflite_ids in tflite.run(**generate_inputs([[5, 6]] * 3, 50, 0.9, 11))["ids"]]
    for row in codec_ids:
        kept = ids_before_stop(row)
        assert (row[len(kept) :] == 0).all() and len(kept) == 50
    again = generator.generate(PROMPTS[:5], table[0]["temperature"], LENGTH["char"], seed=SEEDS[0], oov="skip")
    assert again == expected[:5]


def test_max_new_chars_zero_returns_the_prompt_everywhere(exported_all, generator):
    serve = tf.saved_model.load(str(exported_all / "1")).signatures["serving_default"]
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
    assert out["seed"].numpy().tolist() == [1, 2]
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
    assert stream_results(exported_all / "1", [{"prompt": "ANNA:", "max_new_chars": 0, "seed": 5}]) == [("", 5)]
    assert TFLiteGenerator(exported_all / "tflite" / "1" / "generate.tflite").generate_text(["ANNA:"], 0, seed=3) == [
        ""
    ]


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

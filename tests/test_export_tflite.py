"""TFLite artifacts in the LiteRT interpreter: builtins only, Keras parity, quantized quality, vocabulary."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from conftest import CORPUS, keras_step_logits

from keras_chargen import ChargenConfig, FileSource, RecurrentStep, Vocabulary, build_model, load_model, prepare_corpus
from keras_chargen.export import export_model
from keras_chargen.export.runtimes import (
    TFLiteGenerator,
    TFLiteStep,
    bits_per_char,
    cross_entropy_bits,
    generate_inputs,
    greedy_ids,
    ids_before_stop,
    stream_matrix,
)
from keras_chargen.export.tflite import custom_ops, op_names, read_metadata

PARITY_PROMPT = (
    "CÉLINE:\nMy lord is bright, I think.\nThe king remains bright.\n\n"
    "ÉLODIE:\nThe king is quiet?\n\nANNA:\nThe r"
)  # parity feeds its first 100 characters
GREEDY_PROMPT = "ANNA:\n"
STREAMS = 16


@pytest.fixture(scope="module")
def tflite_dirs(exported_all) -> dict[str, Path]:
    """float32, dynamic-range int8 and float16 exports of the tiny trained model, one base path."""
    names = {"none": "tflite", "dynamic": "tflite-dynamic", "float16": "tflite-float16"}
    return {q: exported_all / name / "1" for q, name in names.items()}


@pytest.fixture(scope="module")
def validation_ids(trained_dir, tmp_path_factory) -> np.ndarray:
    """The validation split of the training text, as the model's ids."""
    config, vocab, _ = load_model(trained_dir)
    corpus = prepare_corpus(FileSource((CORPUS,)), tmp_path_factory.mktemp("corpus"), config.val_fraction, vocab)
    return np.array(corpus.read_ids("val"), np.int32)


def run_generate(path: Path, prompt_ids, temperature, num_chars: int, **settings) -> np.ndarray:
    return TFLiteGenerator(path)(**generate_inputs(prompt_ids, num_chars, temperature, **settings))


def test_files_are_builtins_only_with_while_and_the_integer_generator(tflite_dirs):
    for directory in tflite_dirs.values():
        assert sorted(p.name for p in directory.iterdir()) == [
            "generate.tflite",
            "generate_fixed.tflite",
            "generate_fixed.txt",
            "step.tflite",
            "vocab.json",
        ]
        step, generate = (directory / "step.tflite").read_bytes(), (directory / "generate.tflite").read_bytes()
        assert custom_ops(step) == [] and custom_ops(generate) == []
        assert custom_ops((directory / "generate_fixed.tflite").read_bytes()) == []
        assert {"FULLY_CONNECTED", "LOGISTIC", "TANH"} <= op_names(step)
        assert {"WHILE", "TOPK_V2", "CUMSUM", "BITWISE_XOR", "RIGHT_SHIFT"} <= op_names(generate)
        assert "MULTINOMIAL" not in op_names(generate)  # unseedable: replaced by the counter-based draw


def test_float32_files_hold_the_weights(tflite_dirs, generator):
    """4 bytes per parameter: a conversion that lost its variables is a few KB and still 'succeeds'."""
    weights = 4 * generator.model.count_params()
    step_size = (tflite_dirs["none"] / "step.tflite").stat().st_size
    generate_size = (tflite_dirs["none"] / "generate.tflite").stat().st_size
    assert weights <= step_size <= 1.05 * weights + 16_000
    # + the ops of two loops (lean and general), the sampler, the stop sequences: ~105 KB whatever the model size
    assert weights <= generate_size <= 1.05 * weights + 150_000
    assert (tflite_dirs["dynamic"] / "step.tflite").stat().st_size < 0.6 * step_size
    assert (tflite_dirs["float16"] / "step.tflite").stat().st_size < 0.7 * step_size


def test_vocabulary_inside_and_beside(tflite_dirs, trained_dir):
    expected = (trained_dir / "vocab.json").read_bytes()
    path = tflite_dirs["none"] / "step.tflite"
    assert (path.parent / "vocab.json").read_bytes() == expected
    assert read_metadata(path.read_bytes(), "vocab.json") == expected  # flatbuffer Model.metadata
    with zipfile.ZipFile(path) as archive:  # TFLite Support associated file
        assert archive.read("vocab.json") == expected
    assert json.loads(expected)["tokens"]


def test_step_matches_keras_over_100_steps(tflite_dirs, generator):
    ids = Vocabulary(generator.vocabulary).encode(PARITY_PROMPT)[:100]
    expected = keras_step_logits(generator, ids)
    step = TFLiteStep(tflite_dirs["none"] / "step.tflite")
    assert step.state_names == ["h_0", "c_0"]
    states, logits = step.initial_states(1), []
    for i in ids:
        out, states = step(np.array([i]), states)
        logits.append(out[0])
    assert np.abs(np.stack(logits) - expected).max() <= 1e-4


def test_step_client_follows_batch_size_changes_like_the_signature_runner(tflite_dirs):
    """`TFLiteStep` resizes only when the batch size changes; each call must equal the runner's."""

    path = tflite_dirs["none"] / "step.tflite"
    step, runner = TFLiteStep(path), Interpreter(model_path=str(path)).get_signature_runner("step")
    rng = np.random.default_rng(0)
    for batch in (1, 3, 3, 1, 2):
        ids = rng.integers(1, 10, batch).astype(np.int32)
        states = [rng.normal(size=(batch, size)).astype(np.float32) for size in step.state_sizes]
        logits, new_states = step(ids, states)
        expected = runner(ids=ids, **dict(zip(step.state_names, states)))
        assert logits.shape[0] == batch
        np.testing.assert_array_equal(logits, expected["logits"])
        for name, value in zip(step.state_names, new_states):
            np.testing.assert_array_equal(value, expected[name])


def test_greedy_text_from_generate_and_step_loop_matches_keras(tflite_dirs, generator):
    vocab = Vocabulary(generator.vocabulary)
    expected = generator.generate([GREEDY_PROMPT], 0.0, 200)[0]
    prompt = vocab.encode(GREEDY_PROMPT)
    assert vocab.decode(run_generate(tflite_dirs["none"] / "generate.tflite", [prompt], 0.0, 200)[0]) == expected
    step = TFLiteStep(tflite_dirs["none"] / "step.tflite")
    assert vocab.decode(greedy_ids(step, step.initial_states(1), prompt.tolist(), 200)) == expected


def test_generate_batch_of_ragged_prompts(tflite_dirs, generator):
    vocab = Vocabulary(generator.vocabulary)
    prompts = ["ÉLODIE:\nThe garden", "", "A"]
    prompt_ids = [vocab.encode(p).tolist() for p in prompts]  # right-padded with 0 by generate_inputs
    out = run_generate(tflite_dirs["none"] / "generate.tflite", prompt_ids, 0.0, 40)
    assert [vocab.decode(row) for row in out] == generator.generate(prompts, 0.0, 40)
    # sampled with every setting: exactly the ids the Python API draws for the same seed
    settings = dict(top_k=5, top_p=0.9, repetition_penalty=1.2)
    sampled = run_generate(tflite_dirs["none"] / "generate.tflite", prompt_ids, 1.0, 300, seed=7, **settings)
    expected = generator.generate(prompts, 1.0, 300, seed=7, **settings)
    assert sampled.shape == (3, 300)
    assert [vocab.decode(ids_before_stop(row)) for row in sampled] == expected


def test_stop_sequences_end_rows_and_pad_with_zeros(tflite_dirs, generator):
    vocab = Vocabulary(generator.vocabulary)
    greedy = generator.generate(["ANNA:"], 0.0, 60)[0]
    stop = greedy[10:12]  # a two-character stop: the row ends at its first occurrence
    stop_ids = [[[vocab.token_id(c) for c in stop]], [[0, 0]]]  # row 0 one sequence, row 1 none (all 0)
    out = run_generate(
        tflite_dirs["none"] / "generate.tflite", [vocab.encode("ANNA:").tolist()] * 2, 0.0, 60, stop_ids=stop_ids
    )
    end = greedy.index(stop) + 2
    assert vocab.decode(out[0][:end]) == greedy[:end] and (out[0][end:] == 0).all()
    assert vocab.decode(out[1]) == greedy
    assert generator.generate(["ANNA:"], 0.0, 60, stop=stop)[0] == greedy[:end]
    # its first character alone as well (a second sequence): the earlier end wins
    first = [[[vocab.token_id(stop[0])], [vocab.token_id(c) for c in stop]]] * 2
    out = run_generate(
        tflite_dirs["none"] / "generate.tflite", [vocab.encode("ANNA:").tolist()] * 2, 0.0, 60, stop_ids=first
    )
    assert vocab.decode(ids_before_stop(out[0])) == greedy[: greedy.index(stop[0]) + 1]


def test_quantized_quality_on_the_validation_text(tflite_dirs, generator, validation_ids, capsys):
    matrix = stream_matrix(validation_ids, STREAMS)
    keras_bpc = cross_entropy_bits(generator.model(matrix[:, :-1]).numpy(), matrix[:, 1:])
    bpc = {}
    for quantize, directory in tflite_dirs.items():
        step = TFLiteStep(directory / "step.tflite")
        bpc[quantize] = bits_per_char(step, step.initial_states(STREAMS), validation_ids, STREAMS)
    assert abs(bpc["none"] - keras_bpc) <= 1e-4 * keras_bpc
    assert abs(bpc["dynamic"] - bpc["none"]) <= 0.02 * bpc["none"]
    assert abs(bpc["float16"] - bpc["none"]) <= 0.005 * bpc["none"]
    vocab = Vocabulary(generator.vocabulary)
    with capsys.disabled():  # the greedy text of each variant, for the record
        print(f"\nvalidation bits/char: keras {keras_bpc:.5f} " + " ".join(f"{k} {v:.5f}" for k, v in bpc.items()))
        for quantize, directory in tflite_dirs.items():
            out = run_generate(directory / "generate.tflite", [vocab.encode(GREEDY_PROMPT)], 0.0, 80)
            print(f"greedy {quantize}: {vocab.decode(out[0])!r}")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_two_layer_models_convert_with_states_in_layer_order(cell, tmp_path):
    """An untrained 2-layer model (states h_0, c_0, h_1, c_1 or h_0, h_1) written as a model directory."""
    config = ChargenConfig(cell=cell, num_layers=2, units=24, embedding_dim=8)
    vocab = Vocabulary(list("abcdefgh \n"))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    config.save(model_dir / "config.json")
    vocab.save(model_dir / "vocab.json")
    model = build_model(config, vocab.size)
    model.save(model_dir / "model.keras")
    directory = export_model(model_dir, tmp_path / "out", "tflite")[0]
    step = TFLiteStep(directory / "step.tflite")
    assert step.state_names == RecurrentStep(model).state_names
    ids = vocab.encode("a bad cafe\nhead")
    expected = model(ids[None]).numpy()[0]  # the sequence model, not the step
    states, logits = step.initial_states(1), []
    for i in ids:
        out, states = step(np.array([i]), states)
        logits.append(out[0])
    assert np.abs(np.stack(logits) - expected).max() <= 1e-4

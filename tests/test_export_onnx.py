"""ONNX artifacts in onnxruntime: parity with Keras, vocabulary in metadata_props, the seeded full sampler."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import tensorflow as tf

from keras_chargen import RecurrentStep, Vocabulary
from keras_chargen.export.runtimes import GENERATE_INPUTS, OnnxGenerator, OnnxStep, generate_inputs, greedy_ids

PARITY_PROMPT = (
    "CÉLINE:\nMy lord is bright, I think.\nThe king remains bright.\n\n"
    "ÉLODIE:\nThe king is quiet?\n\nANNA:\nThe r"
)  # parity feeds its first 100 characters
GREEDY_PROMPT = "ANNA:\n"


@pytest.fixture(scope="module")
def onnx_dir(exported_all) -> Path:
    return exported_all / "onnx" / "1"


def run_generate(path: Path, prompt_ids, temperature, num_chars: int, **settings) -> np.ndarray:
    return OnnxGenerator(path)(**generate_inputs(prompt_ids, num_chars, temperature, **settings))


def op_types(graph) -> set[str]:
    """Op types of a graph and of its subgraphs (the Loop body)."""
    found = {n.op_type for n in graph.node}
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                found |= op_types(attribute.g)
    return found


def test_files_names_and_metadata(onnx_dir, trained_dir):
    assert sorted(p.name for p in onnx_dir.iterdir()) == ["generate.onnx", "step.onnx", "vocab.json"]
    vocab_text = (trained_dir / "vocab.json").read_text("utf-8")
    assert (onnx_dir / "vocab.json").read_text("utf-8") == vocab_text
    step = onnx.load(str(onnx_dir / "step.onnx"))
    onnx.checker.check_model(step)
    assert sorted(i.name for i in step.graph.input) == ["c_0", "h_0", "ids"]
    assert sorted(o.name for o in step.graph.output) == ["logits", "new_c_0", "new_h_0"]
    meta = {p.key: p.value for p in step.metadata_props}
    assert meta["vocabulary"] == vocab_text and json.loads(meta["state_names"]) == ["h_0", "c_0"]
    generate = onnx.load(str(onnx_dir / "generate.onnx"))
    assert sorted(i.name for i in generate.graph.input) == sorted(GENERATE_INPUTS)  # no stray loop inputs
    assert [o.name for o in generate.graph.output] == ["ids", "new_seed"]  # `seed` is an input: ONNX names are global
    assert {"Loop", "TopK", "CumSum", "BitwiseXor"} <= op_types(generate.graph)
    assert "Multinomial" not in op_types(generate.graph)


def test_step_matches_keras_over_100_steps(onnx_dir, generator):
    ids = Vocabulary(generator.vocabulary).encode(PARITY_PROMPT)[:100]
    keras_step = RecurrentStep(generator.model)
    step = OnnxStep(onnx_dir / "step.onnx")
    assert step.vocabulary == generator.vocabulary
    states, expected_states = step.initial_states(1), keras_step.initial_states(1)
    diff = 0.0
    for i in ids:
        logits, states = step(np.array([i]), states)
        expected, expected_states = keras_step(tf.constant([i]), expected_states)
        diff = max(diff, float(np.abs(logits - expected.numpy()).max()))
    assert diff <= 1e-4


def test_greedy_text_from_generate_and_step_loop_matches_keras(onnx_dir, generator):
    vocab = Vocabulary(generator.vocabulary)
    expected = generator.generate([GREEDY_PROMPT], 0.0, 200)[0]
    prompt = vocab.encode(GREEDY_PROMPT)
    assert vocab.decode(run_generate(onnx_dir / "generate.onnx", [prompt], 0.0, 200)[0]) == expected
    step = OnnxStep(onnx_dir / "step.onnx")
    assert vocab.decode(greedy_ids(step, step.initial_states(1), prompt.tolist(), 200)) == expected


def test_generate_batch_of_ragged_prompts(onnx_dir, generator):
    vocab = Vocabulary(generator.vocabulary)
    prompts = ["ÉLODIE:\nThe garden", "", "A"]
    prompt_ids = [vocab.encode(p).tolist() for p in prompts]
    out = run_generate(onnx_dir / "generate.onnx", prompt_ids, 0.0, 40)
    assert [vocab.decode(row) for row in out] == generator.generate(prompts, 0.0, 40)


def test_the_same_seed_gives_the_same_ids_in_fresh_sessions_and_as_the_python_api(onnx_dir, generator):
    vocab = Vocabulary(generator.vocabulary)
    prompt_ids = [vocab.encode(GREEDY_PROMPT).tolist()] * 2
    path = onnx_dir / "generate.onnx"
    settings = dict(top_k=8, top_p=0.95, repetition_penalty=1.1)
    first = run_generate(path, prompt_ids, 1.0, 150, seed=7, **settings)
    np.testing.assert_array_equal(first, run_generate(path, prompt_ids, 1.0, 150, seed=7, **settings))
    assert not np.array_equal(first, run_generate(path, prompt_ids, 1.0, 150, seed=8, **settings))
    assert not np.array_equal(first[0], first[1])  # row i draws with seed + i
    assert first.min() >= 1  # the OOV id is never generated
    expected = generator.generate([GREEDY_PROMPT] * 2, 1.0, 150, seed=7, **settings)
    assert [vocab.decode(row) for row in first] == expected


def test_max_new_chars_zero_gives_no_ids(onnx_dir):
    # (LiteRT's Python interpreter cannot hand back a zero-size tensor: "Invalid tensor size")
    assert run_generate(onnx_dir / "generate.onnx", [[5, 6]], 0.8, 0, seed=1).shape == (1, 0)

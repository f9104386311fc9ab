"""ONNX artifacts in onnxruntime: parity with Keras, vocabulary in metadata_props, seeding of Multinomial."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import tensorflow as tf

from keras_chargen import RecurrentStep, Vocabulary
from keras_chargen.export import export_model
from keras_chargen.export.runtimes import OnnxStep, greedy_ids

PARITY_PROMPT = (
    "CÉLINE:\nMy lord is bright, I think.\nThe king remains bright.\n\n"
    "ÉLODIE:\nThe king is quiet?\n\nANNA:\nThe r"
)  # parity feeds its first 100 characters
GREEDY_PROMPT = "ANNA:\n"


@pytest.fixture(scope="module")
def onnx_dir(trained_dir, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("exported") / "tiny"
    return export_model(trained_dir, base, "onnx", version=2)[0]


def session(path: Path, seed: int | None = None) -> onnxruntime.InferenceSession:
    if seed is not None:
        onnxruntime.set_seed(seed)  # must precede the session: Multinomial seeds its generator at creation
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_generate(sess, prompt_ids: np.ndarray, temperature, num_chars: int) -> np.ndarray:
    temperature = np.broadcast_to(np.float32(temperature), [len(prompt_ids)]).copy()
    return sess.run(
        ["ids"],
        {
            "prompt_ids": prompt_ids.astype(np.int32),
            "temperature": temperature,
            "num_chars": np.array(num_chars, np.int32),
        },
    )[0]


def multinomials(graph) -> list:
    """Multinomial nodes of a graph and of its subgraphs (the Loop body)."""
    found = [n for n in graph.node if n.op_type == "Multinomial"]
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                found += multinomials(attribute.g)
    return found


def test_files_names_and_metadata(onnx_dir, trained_dir):
    assert sorted(p.name for p in onnx_dir.iterdir()) == ["generate.onnx", "step.onnx", "vocab.json"]
    vocab_text = (trained_dir / "vocab.json").read_text("utf-8")
    assert (onnx_dir / "vocab.json").read_text("utf-8") == vocab_text
    step = onnx.load(str(onnx_dir / "step.onnx"))
    onnx.checker.check_model(step)
    assert [i.name for i in step.graph.input] == ["ids", "h_0", "c_0"]
    assert sorted(o.name for o in step.graph.output) == ["logits", "new_c_0", "new_h_0"]
    meta = {p.key: p.value for p in step.metadata_props}
    assert meta["vocabulary"] == vocab_text and json.loads(meta["state_names"]) == ["h_0", "c_0"]
    generate = onnx.load(str(onnx_dir / "generate.onnx"))
    assert [i.name for i in generate.graph.input] == ["prompt_ids", "temperature", "num_chars"]
    assert "Loop" in {n.op_type for n in generate.graph.node}
    nodes = multinomials(generate.graph)
    assert nodes and all("seed" not in [a.name for a in n.attribute] for n in nodes)


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
    assert vocab.decode(run_generate(session(onnx_dir / "generate.onnx"), prompt[None], 0.0, 200)[0]) == expected
    step = OnnxStep(onnx_dir / "step.onnx")
    assert vocab.decode(greedy_ids(step, step.initial_states(1), prompt.tolist(), 200)) == expected


def test_generate_batch_of_ragged_prompts(onnx_dir, generator):
    vocab = Vocabulary(generator.vocabulary)
    prompts = ["ÉLODIE:\nThe garden", "", "A"]
    width = max(len(p) for p in prompts)
    padded = np.array([np.pad(vocab.encode(p), (0, width - len(p))) for p in prompts])
    out = run_generate(session(onnx_dir / "generate.onnx"), padded, 0.0, 40)
    assert [vocab.decode(row) for row in out] == generator.generate(prompts, 0.0, 40)


def test_seeding_with_onnxruntime_set_seed(onnx_dir, generator):
    vocab = Vocabulary(generator.vocabulary)
    prompt = vocab.encode(GREEDY_PROMPT)[None].repeat(2, axis=0)
    path = onnx_dir / "generate.onnx"
    first = run_generate(session(path, seed=7), prompt, 1.0, 150)
    assert np.array_equal(first, run_generate(session(path, seed=7), prompt, 1.0, 150))  # fresh session, same seed
    assert not np.array_equal(first, run_generate(session(path, seed=8), prompt, 1.0, 150))
    assert not np.array_equal(first[0], first[1])  # rows draw independently
    sess = session(path, seed=7)
    run_generate(sess, prompt, 1.0, 150)
    assert not np.array_equal(first, run_generate(sess, prompt, 1.0, 150))  # a session's draws go on, not repeat
    assert first.min() >= 1  # the OOV id is never generated

import json

import numpy as np
import pytest

from keras_chargen import load_model
from keras_chargen.bench import OneStep, TutorialModel, onestep_loop
from keras_chargen.cli import main

from conftest import CORPUS

REQUIRED_KEYS = {"onestep_b1", "keras_window_b1", "ingraph_b1", "ingraph_b64", "tflite_step_int8_b1",
                 "tflite_generator_b1", "onnx_generator_b1", "train_pipeline", "train_bare"}


def test_tutorial_baseline_runs_our_weights_faithfully(trained_dir):
    config, vocab, model = load_model(trained_dir)
    tutorial = TutorialModel(config, vocab.size)
    ids = np.array([vocab.encode("ANNA:\nThe king")], np.int32)
    tutorial(ids)
    tutorial.set_weights(model.get_weights())
    np.testing.assert_allclose(tutorial(ids).numpy(), model(ids).numpy(), atol=1e-5)
    one_step = OneStep(tutorial, vocab.tokens)
    char, states = one_step.generate_one_step(np.array(["ANNA:"]))
    assert char.shape == (1,) and char.numpy()[0].decode() in vocab.tokens
    onestep_loop(one_step, ["ANNA:", "BRUNO:"], 5)


@pytest.mark.slow
def test_quick_bench_writes_the_report_and_prints_json_last(trained_dir, tmp_path, capsys):
    assert main(["bench", "--model-dir", str(trained_dir), "--text", str(CORPUS), "--quick",
                 "--out-dir", str(tmp_path)]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert REQUIRED_KEYS <= set(figures) and all(v > 0 for v in figures.values())
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| ingraph_b1 |" in report and "× tutorial OneStep" in report
    assert (tmp_path / "benchmarks.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "benchmarks.json").read_text())["machine"]["bandwidth_bytes_per_s"] > 1e8

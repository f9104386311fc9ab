import json
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import CORPUS

from keras_chargen import RecurrentStep, load_model
from keras_chargen.bench import (
    OneStep,
    PeakRSS,
    TutorialModel,
    keras_window_loop,
    onestep_loop,
    step_loop,
    target_rows,
    xla_generator,
)
from keras_chargen.bench.report import KEPT
from keras_chargen.bench.runner import _rss_mib
from keras_chargen.cli import main

REQUIRED_KEYS = {
    "onestep_b1",
    "keras_window_b1",
    "ingraph_b1",
    "ingraph_b64",
    "tflite_step_int8_b1",
    "tflite_generator_b1",
    "tflite_generator_int8_b1",
    "tflite_generator_int8_topk_topp_b1",
    "onnx_generator_b1",
    "train_pipeline",
    "train_bare",
    "train_recommended",
}


class NumpyStep:
    """`RecurrentStep` behind the numpy interface of the exported step clients (what `step_loop` drives)."""

    def __init__(self, model) -> None:
        self.step = RecurrentStep(model)

    def initial_states(self, batch: int) -> list[np.ndarray]:
        return [s.numpy() for s in self.step.initial_states(batch)]

    def __call__(self, ids, states):
        logits, states = self.step(tf.constant(ids), [tf.constant(s) for s in states])
        return logits.numpy(), [s.numpy() for s in states]


def test_tutorial_baseline_runs_our_weights_faithfully(trained_dir, generator):
    config, vocab, model = load_model(trained_dir)
    tutorial = TutorialModel(config, vocab.size)
    ids = np.array([vocab.encode("ANNA:\nThe king")], np.int32)
    tutorial(ids)
    tutorial.set_weights(model.get_weights())
    np.testing.assert_allclose(tutorial(ids).numpy(), model(ids).numpy(), atol=1e-5)
    # at a vanishing temperature the tutorial's categorical draw is the argmax: the generator's greedy text
    one_step = OneStep(tutorial, vocab.tokens, temperature=1e-6)
    prompts = ["ANNA:\nThe king", "BRUNO:\nThe riv"]  # equal lengths: the tutorial pads a ragged batch with id 0
    assert onestep_loop(one_step, prompts, 40) == generator.generate(prompts, 0.0, 40)


def test_reference_loops_give_the_generators_greedy_ids(trained_dir, generator):
    config, vocab, model = load_model(trained_dir)
    prompt = "ÉLODIE:\nThe garden"
    expected = vocab.encode(generator.generate([prompt], 0.0, 60)[0]).tolist()
    prompt_ids = vocab.encode(prompt)
    assert keras_window_loop(model, prompt_ids, 60, maxlen=1000, temperature=0.0) == expected  # whole text
    assert step_loop(NumpyStep(model), prompt_ids, 2, 60, temperature=0.0).tolist() == [expected] * 2
    run = xla_generator(generator, 60)
    ids = run(tf.constant([prompt_ids]), tf.constant([len(prompt_ids)]), tf.constant([0.0]), tf.constant(0))
    assert ids.numpy().tolist() == [expected]
    sampled = run(tf.constant([prompt_ids]), tf.constant([len(prompt_ids)]), tf.constant([0.8]), tf.constant(5))
    assert vocab.decode(sampled.numpy()[0]) == generator.generate([prompt], 0.8, 60, seed=5)[0]  # XLA: same draws


@pytest.mark.slow
def test_quick_bench_writes_the_report_and_prints_json_last(trained_dir, tmp_path, capsys):
    kept = "## An A/B run written by hand\n\n| mode | old | new |\n"
    (tmp_path / "BENCHMARKS.md").write_text(f"# old generated part\n\n{KEPT}\n\n{kept}")
    assert (
        main(["bench", "--model-dir", str(trained_dir), "--text", str(CORPUS), "--quick", "--out-dir", str(tmp_path)])
        == 0
    )
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(figures) >= REQUIRED_KEYS and all(v > 0 for v in figures.values())
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| ingraph_b1 |" in report and "× tutorial OneStep" in report
    assert (tmp_path / "benchmarks.png").stat().st_size > 10_000
    assert "| TFLite whole generator, fp32, batch 1 |" in report and "of the weight-read bound" in report
    assert "| TFLite whole generator, dynamic-range int8, top-k 40 + top-p 0.9, batch 1 |" in report
    assert "train_pipeline +" in report and "MiB, train_bare +" in report
    assert "Training the recommended model" in report
    assert "GFLOP/s measured for float32 products" in report
    assert "old generated part" not in report and report.endswith(f"{KEPT}\n\n{kept}")  # the hand-written tail
    machine = json.loads((tmp_path / "benchmarks.json").read_text())["machine"]
    assert machine["weights_bandwidth_bytes_per_s"] > 1e8 and machine["dram_bandwidth_bytes_per_s"] > 1e8


def test_target_rows_compare_the_best_mode_with_the_target_ratio():
    results = {
        "onestep_b1": {"median": 100.0},
        "ingraph_b1": {"median": 450.0},
        "ingraph_b64": {"median": 1500.0},
        "ingraph_xla_b64": {"median": 2500.0},
        "ingraph_xla_b1": {"error": "did not compile"},
        "tflite_generator_int8_topk_topp_b1": {"median": 1234.0},
        "train_pipeline": {"median": 95.0},
        "train_bare": {"median": 100.0},
    }
    rows = {what: (round(ratio, 2), target, met) for what, ratio, target, met in target_rows(results)}
    assert rows == {
        "in-graph generation (what the SavedModel runs), batch 1": (4.5, 5.0, False),
        "in-graph generation, batch 64, plain or XLA, whichever wins": (25.0, 20.0, True),
        "TFLite whole generator, dynamic-range int8, top-k 40 + top-p 0.9, batch 1": (12.34, 10.0, True),
        "training: our pipeline vs a bare fit on in-memory arrays": (0.95, 0.9, True),
    }


@pytest.mark.skipif(_rss_mib() is None, reason="no /proc/self/status on this system")
def test_peak_rss_sees_memory_allocated_while_open():
    before = _rss_mib()
    with PeakRSS() as rss:
        block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
        block += 1
        time.sleep(0.1)
    del block
    assert rss.peak_mib >= before + 150 and rss.growth_mib >= 150

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import CORPUS, REPO, SHAKESPEARE, needs_shakespeare, tiny_config

from keras_chargen import ChargenConfig, ChargenError, FileSource, evaluate, load_model, train
from keras_chargen.data import stateful_dataset
from keras_chargen.model import build_model


def unigram_bits(train_text: str, val_text: str) -> float:
    """Cross-entropy (bits/char) of the validation text under the training text's character frequencies."""
    counts = Counter(train_text)
    total = sum(counts.values()) + len(counts) + 1
    return float(np.mean([-math.log2((counts.get(c, 0) + 1) / total) for c in val_text]))


def test_model_dir_contents_and_learning(trained_dir):
    for name in (
        "config.json",
        "vocab.json",
        "model.keras",
        "history.csv",
        "history.png",
        "steps.csv",
        "backup/progress.json",
    ):
        assert (trained_dir / name).exists(), name
    assert ChargenConfig.load(trained_dir / "config.json") == tiny_config()
    from keras_chargen.io import default_mode

    for name in ("config.json", "vocab.json", "model.keras", "history.png"):  # atomic writes keep normal modes
        assert (trained_dir / name).stat().st_mode & 0o777 == default_mode(), name
    assert any((trained_dir / "logs").rglob("*tfevents*"))  # TensorBoard logs
    with open(trained_dir / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert {"loss", "bpc", "perplexity", "val_loss", "val_bpc", "val_perplexity"} <= set(rows[0])
    text = CORPUS.read_text()
    split = int(len(text) * 0.9)
    result = evaluate(trained_dir, FileSource((CORPUS,)))
    assert result["bpc"] < 0.5 * unigram_bits(text[:split], text[split:])  # clearly better than unigram
    assert result["loss"] == pytest.approx(result["bpc"] * math.log(2))
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]), rel=1e-4)
    # the best checkpoint is the one with the lowest validation loss in the history
    assert result["loss"] == pytest.approx(min(float(r["val_loss"]) for r in rows), rel=1e-4)


def test_evaluate_equals_a_manual_loop_with_carried_state(trained_dir):
    config, vocab, model = load_model(trained_dir)
    prepared_dir = trained_dir / "data"
    num_val = json.loads((prepared_dir / "corpus.json").read_text())["num_val"]
    stateful = build_model(config, vocab.size, config.batch_size, stateful=True)
    stateful.set_weights(model.get_weights())
    total, count = 0.0, 0
    for x, y in stateful_dataset(prepared_dir / "val.bin", num_val, vocab.id_dtype, config.batch_size, config.seq_len):
        losses = keras.losses.sparse_categorical_crossentropy(y, stateful(x), from_logits=True)
        total, count = total + float(tf.reduce_sum(losses)), count + int(tf.size(losses))
    assert evaluate(trained_dir, FileSource((CORPUS,)))["loss"] == pytest.approx(total / count, rel=1e-5)


def test_rerun_of_finished_training_does_nothing_and_changed_settings_are_refused(trained_dir, capsys):
    result = train(tiny_config(), FileSource((CORPUS,)), trained_dir, verbose=0, sample_every_epoch=False)
    assert "already finished" in capsys.readouterr().out and result.history == {}
    with pytest.raises(ChargenError, match=r"other settings \(units: 48 → 64\)"):
        train(tiny_config(units=64), FileSource((CORPUS,)), trained_dir, verbose=0)


@pytest.mark.parametrize("cell, layout", [("gru", "shuffled"), ("rnn", "stateful")])
def test_other_cells_and_layouts_train(tmp_path, cell, layout, capsys):
    config = tiny_config(cell=cell, layout=layout, epochs=1, stride=16, dropout=0.1)
    result = train(config, FileSource((CORPUS,)), tmp_path / "m", verbose=0)
    out = capsys.readouterr().out
    assert "sample after epoch 1, temperature 0.5" in out and "temperature 1.0" in out
    assert len(result.history["val_loss"]) == 1 and result.history["val_loss"][0] < 2.5


def test_corpus_too_short_for_a_window(tmp_path):
    (tmp_path / "short.txt").write_text("tiny text")
    with pytest.raises(ChargenError, match="corpus is too short"):
        train(tiny_config(), FileSource((tmp_path / "short.txt",)), tmp_path / "m", verbose=0)


class TickClock:
    """A fake clock: every reading advances it by `tick` seconds (so time is counted in clock readings)."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_time_limit_stops_and_rerun_with_more_time_continues(tmp_path):
    config = tiny_config(epochs=50, max_minutes=0.05)  # 3 seconds of fitting = 30 readings of the fake clock
    run = dict(verbose=0, sample_every_epoch=False)
    first = train(config, FileSource((CORPUS,)), tmp_path / "m", clock=TickClock(0.1), **run)
    # TimeLimit reads the clock once per batch: it stops at the batch that crosses 3 s (+ the final save's reading)
    assert first.progress.epoch == 0 and 3.0 <= first.progress.elapsed_seconds <= 3.0 + 0.25
    assert first.progress.step == pytest.approx(29, abs=1)
    assert (tmp_path / "m" / "model.keras").exists()  # the cut epoch was validated and checkpointed
    done_before = first.progress.epoch * 1000 + first.progress.step
    again = train(config, FileSource((CORPUS,)), tmp_path / "m", clock=TickClock(0.1), **run)
    assert again.history == {}  # the time budget is spent: nothing more to do
    more_config = tiny_config(epochs=50, max_minutes=0.1)  # 3 more seconds
    more = train(more_config, FileSource((CORPUS,)), tmp_path / "m", clock=TickClock(0.1), **run)
    assert more.progress.epoch * 1000 + more.progress.step > done_before
    assert 6.0 <= more.progress.elapsed_seconds <= 6.0 + 0.5


def _train_command(out, epochs):
    return [
        sys.executable,
        "-m",
        "keras_chargen",
        "train",
        "--text",
        str(CORPUS),
        "--out",
        str(out),
        "--units",
        "48",
        "--layers",
        "1",
        "--embedding-dim",
        "16",
        "--seq-len",
        "32",
        "--batch-size",
        "8",
        "--epochs",
        str(epochs),
        "--save-every",
        "20",
        "--verbose",
        "2",
        "--no-samples",
        "--sample-length",
        "0",
    ]


@pytest.mark.slow
def test_killed_training_resumes_mid_epoch(tmp_path):
    out = tmp_path / "m"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        _train_command(out, 3), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    progress_path = out / "backup" / "progress.json"
    deadline = time.time() + 240
    while time.time() < deadline:  # wait for a mid-epoch backup in the second epoch
        if progress_path.exists():
            progress = json.loads(progress_path.read_text())
            if progress["epoch"] == 1 and progress["step"] >= 40:
                break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("no mid-epoch backup appeared")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = json.loads(progress_path.read_text())
    assert saved["epoch"] in (1, 2)
    done = subprocess.run(_train_command(out, 3), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    if saved["epoch"] == 1:
        assert f"Resuming {out} at epoch 2, batch {saved['step']}/" in done.stdout
    with open(out / "history.csv") as handle:
        epochs = [int(r["epoch"]) for r in csv.DictReader(handle) if r["epoch"].isdigit()]
    assert epochs[0] == 0 and epochs[-1] == 2 and 0 not in epochs[1:]  # continued, never restarted
    final = json.loads(progress_path.read_text())
    assert final["epoch"] == 3 and final["step"] == 0


@needs_shakespeare
def test_small_lstm_on_shakespeare_beats_unigram(tmp_path):
    text = SHAKESPEARE.read_text()[:300_000]
    (tmp_path / "s.txt").write_text(text)
    config = tiny_config(units=128, embedding_dim=32, batch_size=32, seq_len=64, epochs=2, learning_rate=4e-3)
    train(config, FileSource((tmp_path / "s.txt",)), tmp_path / "m", verbose=0, sample_every_epoch=False)
    split = int(len(text) * 0.9)
    bpc = evaluate(tmp_path / "m", FileSource((tmp_path / "s.txt",)))["bpc"]
    baseline = unigram_bits(text[:split], text[split:])
    assert bpc < baseline - 0.8, (bpc, baseline)  # unigram ≈ 4.5 bits/char


def test_random_state_resets_zero_whole_streams(tmp_path):
    from keras_chargen.callbacks import ResetStates
    from keras_chargen.model import stateful_layers

    config = tiny_config(num_layers=2, units=8)
    model = build_model(config, 10, batch_size=256, stateful=True)
    model(np.ones((256, 3), np.int32))  # carried states are now non-zero
    for prob, (low, high) in ((0.0, (0, 0)), (0.3, (40, 120)), (1.0, (256, 256))):
        for layer in stateful_layers(model):
            for variable in layer.states:
                variable.assign(np.ones(variable.shape, np.float32))
        callback = ResetStates(reset_prob=prob, seed=1)
        callback.set_model(model)
        callback.on_train_batch_begin(0)
        zero_rows = [np.flatnonzero(~v.numpy().any(axis=1)) for layer in stateful_layers(model) for v in layer.states]
        assert low <= len(zero_rows[0]) <= high
        assert all(np.array_equal(rows, zero_rows[0]) for rows in zero_rows)  # same streams in every layer/state
    with pytest.raises(ChargenError, match="state_reset_prob must be in"):
        tiny_config(state_reset_prob=1.5)

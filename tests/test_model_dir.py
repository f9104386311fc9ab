"""Safe model directories: the corpus record, the writer lock, damaged backup files, --restart-from-best."""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from conftest import CORPUS, REPO, tiny_config
from test_cli import assert_one_line_error, run_cli
from test_training import TickClock

from keras_chargen import ChargenError, FileSource, train
from keras_chargen.lock import LOCK_FILE, DirectoryLock, process_start

TINY_FLAGS = [
    "--units", "48", "--layers", "1", "--embedding-dim", "16", "--seq-len", "32", "--batch-size", "8",
    "--patience", "0", "--save-every", "50", "--learning-rate", "0.005", "--verbose", "0", "--no-samples",
    "--sample-length", "0",
]  # fmt: skip


def snapshot(directory):
    """Every file under `directory` with its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_another_corpus_is_refused_and_the_directory_is_unchanged(trained_dir, tmp_path, capsys):
    model_dir = tmp_path / "m"
    shutil.copytree(trained_dir, model_dir)
    before = snapshot(model_dir)
    record = json.loads((model_dir / "trained_on.json").read_text())
    assert record["files"] == [{"path": str(CORPUS), "bytes": CORPUS.stat().st_size}]
    assert record["characters"] == len(CORPUS.read_text(encoding="utf-8")) and len(record["sha256"]) == 64
    other = tmp_path / "other.txt"
    other.write_text(CORPUS.read_text(encoding="utf-8").replace("king", "queen"), encoding="utf-8")
    flags = ["--epochs", "3", *TINY_FLAGS]
    code, _, err = run_cli(capsys, "train", "--text", other, "--out", model_dir, *flags)
    assert_one_line_error(code, err, f"use --init-from {model_dir} with a fresh --out")
    assert "was trained on another corpus" in err
    assert snapshot(model_dir) == before  # byte for byte
    code, out, err = run_cli(capsys, "train", "--text", CORPUS, "--out", model_dir, *flags)
    assert code == 0 and "already finished" in out  # the same corpus is still accepted


def test_lock_is_exclusive_and_a_stale_one_is_taken_over(tmp_path):
    with DirectoryLock(tmp_path) as lock:
        owner = json.loads((tmp_path / LOCK_FILE).read_text())
        assert owner == {"pid": os.getpid(), "host": socket.gethostname(), "started": process_start(os.getpid())}
        with pytest.raises(ChargenError, match=f"in use by process {os.getpid()} on {socket.gethostname()}"):
            DirectoryLock(tmp_path).acquire()
        assert lock.held
    assert not (tmp_path / LOCK_FILE).exists()  # released
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "1"}))
    with DirectoryLock(tmp_path):  # the writer is gone: taken over
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "another-host", "started": "1"}))
    with pytest.raises(ChargenError, match="in use by process 1 on another-host"):
        DirectoryLock(tmp_path).acquire()
    with DirectoryLock(tmp_path / "new"):  # a directory the lock created is removed again if left empty
        assert (tmp_path / "new" / LOCK_FILE).exists()
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_second_concurrent_train_is_refused_and_the_first_finishes_intact(tmp_path):
    out = tmp_path / "m"
    command = [sys.executable, "-m", "keras_chargen", "train", "--text", str(CORPUS), "--out", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(
        [*command, "--epochs", "4", *TINY_FLAGS], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while not (out / "backup" / "progress.json").exists() and time.time() < deadline:  # the first is fitting
        time.sleep(0.2)
    second = subprocess.run(
        [*command, "--epochs", "4", *TINY_FLAGS], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 2
    errors = [line for line in second.stderr.splitlines() if line.startswith("error: ")]  # not TF's start-up logs
    assert len(errors) == 1 and errors[0].startswith(f"error: {out} is in use by process {first.pid}"), second.stderr
    assert "Traceback" not in second.stderr
    assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    rows = (out / "history.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2", "3"]  # one row per epoch, nothing interleaved
    steps = [int(r.split(",")[0]) for r in (out / "steps.csv").read_text().strip().splitlines()[1:]]
    assert steps == sorted(steps)
    assert json.loads((out / "backup" / "progress.json").read_text())["epoch"] == 4
    assert not (out / LOCK_FILE).exists()


@pytest.fixture(scope="module")
def cut_dir(tmp_path_factory):
    """A model directory whose training stopped mid-epoch (a time budget on a fake clock): a full backup."""
    out = tmp_path_factory.mktemp("cut") / "m"
    config = tiny_config(epochs=50, max_minutes=0.05)
    train(config, FileSource((CORPUS,)), out, verbose=0, sample_every_epoch=False, clock=TickClock(0.1))
    assert json.loads((out / "backup" / "progress.json").read_text())["step"] > 0
    return out


def _damage(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name", ["state.weights.h5", "progress.json", "rnn_states.npz"])
def test_damaged_backup_file_is_one_line_and_restart_from_best_recovers(cut_dir, tmp_path, capsys, name):
    model_dir = tmp_path / "m"
    shutil.copytree(cut_dir, model_dir)
    _damage(model_dir / "backup" / name)
    flags = ["--text", CORPUS, "--out", model_dir, "--epochs", "50", "--max-minutes", "0.1", *TINY_FLAGS]
    code, _, err = run_cli(capsys, "train", *flags)
    assert_one_line_error(code, err, f"damaged backup file {model_dir / 'backup' / name}")
    assert "--restart-from-best" in err
    code, out, err = run_cli(capsys, "train", *flags[:-2], "--verbose", "1", "--restart-from-best", "--no-samples")
    assert code == 0, err
    assert f"Restarting {model_dir} from {model_dir / 'model.keras'}" in out
    progress = json.loads((model_dir / "backup" / "progress.json").read_text())
    assert progress["elapsed_seconds"] >= 6 and progress["epoch"] * 1000 + progress["step"] > 0  # ran 6 s afresh
    # validated and checkpointed again in this run (a fresh Progress starts at inf); the value itself depends on
    # how many batches 6 s of a shared CPU allowed, so only its being a real loss is asserted
    assert math.isfinite(progress["best_val_loss"]) and progress["best_val_loss"] > 0


def test_restart_from_best_needs_a_checkpoint(tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "train", "--text", CORPUS, "--out", tmp_path / "new", "--restart-from-best", *TINY_FLAGS
    )
    assert_one_line_error(code, err, "--restart-from-best:")

"""tf.distribute training: MirroredStrategy over two logical CPUs and two MultiWorkerMirroredStrategy workers.

Logical devices and workers must be set up before TensorFlow initialises its devices, and this test
process has already done that, so the real runs happen in subprocesses (with timeouts; children are
always killed). In-process tests cover the errors that need no second device.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import CORPUS, REPO

from keras_chargen import ChargenConfig, ChargenError
from keras_chargen.distribute import is_chief, make_strategy, write_dir

SMALL_TEXT_CHARS = 12_000  # one epoch ≈ 56 global batches of 8 × 24


@pytest.fixture(scope="module")
def small_text(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "small.txt"
    path.write_text(CORPUS.read_text()[:SMALL_TEXT_CHARS])
    return path


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def test_strategy_errors_without_a_second_device(tmp_path, monkeypatch):
    with pytest.raises(ChargenError, match="strategy must be one of default, mirrored, multiworker"):
        ChargenConfig(strategy="parameter_server")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ChargenError, match="needs the TF_CONFIG environment variable"):
        make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}')
    with pytest.raises(ChargenError, match="invalid TF_CONFIG .*task worker:3 is not in the cluster"):
        make_strategy("multiworker")
    import tensorflow as tf

    tf.constant(1.0)  # devices are initialised now
    if len(tf.config.list_logical_devices("CPU")) == 1:
        with pytest.raises(ChargenError, match="must be set before TensorFlow initialises its devices"):
            make_strategy("mirrored", logical_cpus=2)
    strategy = make_strategy("default")
    assert is_chief(strategy) and write_dir(tmp_path, strategy) == tmp_path


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_equals_one_device(small_text, tmp_path):
    """One epoch, dropout 0, clipping active: same weights, losses and carried states as one device."""
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "distributed_check.py"), str(tmp_path), str(small_text)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    streams = result["streams"]
    assert streams["replicas"] == 2 and streams["rows_per_replica"] == 4 and streams["steps"] > 40
    assert all(streams["contiguous"]) and len(streams["contiguous"]) == 8  # each replica row = one text stream
    for layout in ("shuffled", "stateful"):
        run = result[layout]
        assert run["max_weight_diff"] < 1e-4 * run["max_weight"], (layout, run)
        assert run["loss"][1] == pytest.approx(run["loss"][0], rel=1e-5), (layout, run)
        assert run["val_loss"][1] == pytest.approx(run["val_loss"][0], rel=1e-5), (layout, run)
    # the backup's carried states, gathered from both replicas, equal the single-device ones
    assert result["stateful"]["state_shape"] == [8, 32] and result["stateful"]["max_state_diff"] < 1e-3
    assert "does not split evenly over 2 replicas" in result["odd_batch_error"]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _start_workers(text, out, epochs: int) -> list[subprocess.Popen]:
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    command = [
        sys.executable,
        "-m",
        "keras_chargen",
        "train",
        "--text",
        str(text),
        "--out",
        str(out),
        "--units",
        "32",
        "--layers",
        "1",
        "--embedding-dim",
        "8",
        "--seq-len",
        "24",
        "--batch-size",
        "8",
        "--epochs",
        str(epochs),
        "--save-every",
        "10",
        "--verbose",
        "2",
        "--no-samples",
        "--sample-length",
        "0",
        "--strategy",
        "multiworker",
    ]
    return [
        subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})),
        )
        for i in range(2)
    ]


@pytest.mark.slow
def test_two_workers_kill_one_fails_clearly_then_rerun_resumes(small_text, tmp_path):
    from keras_chargen import load_generator

    out = tmp_path / "m"
    workers = _start_workers(small_text, out, epochs=1)
    try:
        progress_path = out / "backup" / "progress.json"
        deadline = time.time() + 240
        while not progress_path.exists():  # a mid-epoch backup (every 10 batches) from the chief
            assert time.time() < deadline and workers[0].poll() is None, "no backup appeared"
            time.sleep(0.2)
        workers[1].kill()
        _, err = workers[0].communicate(timeout=120)  # the chief must not hang
        assert workers[0].returncode == 2, err[-2000:]
        assert "error: lost contact with another worker" in err and "Restart every worker" in err
    finally:
        for worker in workers:
            worker.kill()
            worker.communicate()
    saved = json.loads(progress_path.read_text())
    assert saved["epoch"] == 0 and saved["step"] >= 10  # killed mid-epoch

    workers = _start_workers(small_text, out, epochs=1)  # the same command on both: resumes
    try:
        outputs = [worker.communicate(timeout=300) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-2000:]
        assert f"Resuming {out} at epoch {saved['epoch'] + 1}, batch {saved['step']}/" in stdout
    final = json.loads(progress_path.read_text())
    assert final["epoch"] == 1 and final["step"] == 0
    assert not list(out.glob("workertemp_*"))  # the non-chief's files were temporary
    text = load_generator(out).generate(["th"], 0.0, 40, seed=1)[0]  # the chief's checkpoint reloads
    assert len(text) == 40

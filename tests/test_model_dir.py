"""Safe model directories: the corpus record, the writer lock, damaged backup files, --restart-from-best."""

import errno
import json
import math
import os
import pathlib
import resource
import shutil
import signal
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
    epochs = [int(row.split(",")[0]) for row in (model_dir / "history.csv").read_text().splitlines()[1:]]
    assert epochs == sorted(epochs) and epochs[0] == 0 and len(epochs) > 1, epochs  # numbered on, not from 0 again
    assert progress["epoch"] >= epochs[-1]


def test_restart_from_best_after_the_last_epoch_says_to_raise_epochs(trained_dir, tmp_path, capsys):
    model_dir = tmp_path / "m"
    shutil.copytree(trained_dir, model_dir)  # 3 epochs, all done
    code, _, err = run_cli(
        capsys, "train", "--text", CORPUS, "--out", model_dir, *TINY_FLAGS, "--epochs", "3", "--restart-from-best"
    )
    assert_one_line_error(code, err, "history.csv already records all 3 epochs; raise --epochs to train more")
    assert (model_dir / "backup" / "progress.json").exists()  # nothing dropped


def test_restart_from_best_needs_a_checkpoint(tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "train", "--text", CORPUS, "--out", tmp_path / "new", "--restart-from-best", *TINY_FLAGS
    )
    assert_one_line_error(code, err, "--restart-from-best:")


def test_a_second_train_is_refused_before_tensorflow_loads(tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = {"pid": holder.pid, "host": socket.gethostname(), "started": process_start(holder.pid)}
        (out / LOCK_FILE).write_text(json.dumps(owner))
        probe = (
            "import sys\nfrom keras_chargen.cli import main\ncode = main(sys.argv[1:])\n"
            "print('exit', code, 'tensorflow loaded:', 'tensorflow' in sys.modules)"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe, "train", "--text", str(CORPUS), "--out", str(out), *TINY_FLAGS],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.kill()
        holder.wait()
    assert done.stdout.splitlines()[-1] == "exit 2 tensorflow loaded: False", done.stderr
    assert done.stderr.splitlines() == [
        f"error: {out} is in use by process {holder.pid} on {socket.gethostname()} (lock {out / LOCK_FILE}); wait for "
        "it to finish, or delete the lock file if no train is running there"
    ]


def _fail_weights_writes(monkeypatch):
    """Every write of a backup weights file fails as on a full disk (the other files are written)."""
    write_bytes = pathlib.Path.write_bytes

    def full_disk(path, data):
        if ".state.weights.h5." in path.name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write_bytes(path, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", full_disk)


def test_a_full_disk_at_a_backup_is_one_line_the_backup_stays_and_a_rerun_resumes(
    cut_dir, tmp_path, capsys, monkeypatch
):
    model_dir = tmp_path / "m"
    shutil.copytree(cut_dir, model_dir)
    before = snapshot(model_dir / "backup")
    progress = json.loads((model_dir / "backup" / "progress.json").read_text())
    flags = ["--text", CORPUS, "--out", model_dir, "--epochs", "50", "--max-minutes", "0.1", *TINY_FLAGS]
    _fail_weights_writes(monkeypatch)
    code, _, err = run_cli(capsys, "train", *flags)
    assert_one_line_error(
        code,
        err,
        f"error: cannot write {model_dir / 'backup' / 'state.weights.h5'}: No space left on device; the files saved "
        "before are intact: rerun the same command once it can write there to resume",
    )
    assert snapshot(model_dir / "backup") == before  # the previous backup, byte for byte
    assert not [p for p in model_dir.rglob(".*") if ".tmp" in p.name] and not (model_dir / LOCK_FILE).exists()
    monkeypatch.undo()  # space freed
    code, out, err = run_cli(capsys, "train", *flags, "--verbose", "1")
    assert code == 0, err
    assert f"Resuming {model_dir} at epoch {progress['epoch'] + 1}, batch {progress['step']}/" in out


@pytest.mark.slow
def test_a_write_failure_in_a_real_process_is_an_error_exit_not_a_crash(tmp_path):
    # A file size limit makes the backup write fail for real (EFBIG, as a full disk gives ENOSPC): HDF5 writing the
    # file itself then left a half-closed file that crashed the process at exit (SIGSEGV in H5_term_library).
    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))  # data/train.bin fits; the backup does not
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a signal

    out = tmp_path / "m"
    done = subprocess.run(
        [sys.executable, "-m", "keras_chargen", "train", "--text", str(CORPUS), "--out", str(out), *TINY_FLAGS,
         "--epochs", "1", "--save-every", "5"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=limit_file_size,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.splitlines() == [
        f"error: cannot write {out / 'backup' / 'state.weights.h5'}: File too large; the files saved before are "
        "intact: rerun the same command once it can write there to resume"
    ]
    assert not (out / LOCK_FILE).exists() and not [p for p in out.rglob(".*") if ".tmp" in p.name]


@pytest.fixture
def small_disk(tmp_path):
    """A 420 kB tmpfs (root only; skipped where mounting is not allowed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=420k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)


@pytest.mark.slow
def test_a_full_disk_while_training_is_an_error_and_a_rerun_after_freeing_space_resumes(small_disk):
    out = small_disk / "m"
    command = [
        sys.executable, "-m", "keras_chargen", "train", "--text", str(CORPUS), "--out", str(out), *TINY_FLAGS,
        "--epochs", "2", "--save-every", "5",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    # the data and the first backup fit; the second backup (written beside the first) does not
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.splitlines() == [
        f"error: cannot write {out / 'backup' / 'state.weights.h5'}: No space left on device; the files saved before "
        "are intact: rerun the same command once it can write there to resume"
    ]
    progress = json.loads((out / "backup" / "progress.json").read_text())
    assert progress["step"] == 5 and not [p for p in out.rglob(".*") if ".tmp" in p.name]
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)  # space freed
    command[command.index("--verbose") + 1] = "1"
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Resuming {out} at epoch 1, batch 5/" in done.stdout and done.stderr == ""
    assert json.loads((out / "backup" / "progress.json").read_text())["epoch"] == 2


def test_temp_files_of_killed_runs_are_removed_when_training_starts(trained_dir, tmp_path, capsys):
    model_dir = tmp_path / "m"
    shutil.copytree(trained_dir, model_dir)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname().replace(".", "_")
    left = [
        model_dir / "backup" / ".state.weights.h5.lg8c4hse.tmp.weights.h5",  # before names had a tag
        model_dir / "backup" / f".progress.json.{dead.pid}-1@{host}.abcd1234.tmp",
        model_dir / f".model.keras.{dead.pid}-1@{host}.abcd1234.tmp.keras",
        model_dir / "data" / ".train.bin.zzzz9999.tmp",
    ]
    for path in left:
        path.write_bytes(b"")
    keep = [
        model_dir / f".{LOCK_FILE}.{os.getpid()}-{process_start(os.getpid())}@{host}.abcd1234.tmp",  # a live taker
        model_dir / f".{LOCK_FILE}.abcd1234.tmp",  # untagged, but young: maybe being taken right now
        model_dir / "notes.tmp",  # not a temp name of ours
    ]
    for path in keep:
        path.write_bytes(b"")
    code, out, _ = run_cli(capsys, "train", "--text", CORPUS, "--out", model_dir, *TINY_FLAGS, "--epochs", "3")
    assert code == 0 and "already finished" in out
    assert [p.exists() for p in left] == [False] * len(left) and [p.exists() for p in keep] == [True] * len(keep)

"""The first ten minutes of a new user: the embedded corpus, offline training from an installed wheel, a CLI
that answers before TensorFlow loads, TFDS failing fast offline, and a README that matches what happens."""

from __future__ import annotations

import hashlib
import math
import re
import shlex
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import CORPUS, REPO, SHAKESPEARE

from keras_chargen.callbacks import Progress
from keras_chargen.cli import build_parser, main
from keras_chargen.config import ChargenConfig
from keras_chargen.corpora import TINY_SHAKESPEARE, EmbeddedSource
from keras_chargen.training import already_finished_message, stop_message

README = (REPO / "README.md").read_text(encoding="utf-8")
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"  # = TFDS' tiny_shakespeare
EMBEDDED_LINE = (
    "training on the embedded tiny-shakespeare corpus (1,115,394 characters, public domain (Shakespeare's plays)); "
    "--text FILE or --tfds NAME for another"
)
# Python prelude that makes the network unreachable in the process (DNS and every TCP connection fail at once).
OFFLINE = """
import socket, sys
def _unreachable(*args, **kwargs):
    raise OSError(101, "Network is unreachable")
socket.getaddrinfo = socket.socket.connect = socket.socket.connect_ex = _unreachable
"""
RUN_CLI = """
import os, keras_chargen
assert keras_chargen.__file__.startswith(os.environ["PYTHONPATH"]), keras_chargen.__file__  # the wheel's copy
from keras_chargen.cli import main
sys.exit(main(sys.argv[1:]))
"""
# Runs the CLI, then says how it ended and whether TensorFlow or Keras were imported.
PROBE_CLI = """
import sys
from keras_chargen.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print("exit", code, "tensorflow loaded:", "tensorflow" in sys.modules, "keras" in sys.modules)
"""


def test_embedded_corpus_is_tiny_shakespeare_as_recorded():
    data = EmbeddedSource().read_bytes()
    assert len(data) == TINY_SHAKESPEARE.size_bytes == 1_115_394
    assert hashlib.sha256(data).hexdigest() == TINY_SHAKESPEARE.sha256 == SHAKESPEARE_SHA256
    assert TINY_SHAKESPEARE.url == (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
    )
    text = "".join(EmbeddedSource().chunks())
    assert len(text) == 1_115_394 and text.count("\n") == 40_000 and len(set(text)) == 65


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """The package built as a wheel (from a copy of the project files) and unpacked: an installed layout."""
    build = tmp_path_factory.mktemp("build")
    for name in ("pyproject.toml", "README.md"):
        (build / name).write_bytes((REPO / name).read_bytes())
    subprocess.run(
        ["cp", "-r", str(REPO / "keras_chargen"), str(build / "keras_chargen")], check=True, capture_output=True
    )
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", "dist"],
        cwd=build,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    site = tmp_path_factory.mktemp("site")
    (wheel,) = (build / "dist").glob("keras_chargen-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def test_wheel_ships_the_corpus(installed_wheel):
    shipped = installed_wheel / "keras_chargen" / "corpora" / "tinyshakespeare.txt"
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == SHAKESPEARE_SHA256


def test_train_with_no_source_offline_from_the_wheel_trains_on_the_embedded_corpus(installed_wheel, tmp_path):
    """README quick-start command 1 in miniature: no network, no ../shared, the package as installed from a wheel."""
    args = ["train", "--out", "model", "--units", "32", "--layers", "1", "--embedding-dim", "16", "--seq-len", "32"]
    args += ["--batch-size", "32", "--max-minutes", "0.01", "--no-samples", "--sample-length", "60"]
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE + RUN_CLI, *args],
        cwd=tmp_path,
        env={"PYTHONPATH": str(installed_wheel), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    lines = out.splitlines()
    assert lines[0] == EMBEDDED_LINE
    assert lines[1] == (
        "corpus: embedded:tiny-shakespeare: 1,115,394 characters, vocabulary 65 characters (+1 unknown id); "
        "training 1,003,855 / validation 111,539 (the last 10%)"
    )
    assert lines[2] == "model: 1×32 LSTM, embedding 16, 9,506 parameters"
    assert lines[3] == (
        "budget: epochs of 980 batches of 32×32 characters until 0.01 min of fitting are used, "
        "early stopping after 3 epochs without improvement"
    )
    stop = re.search(
        r"^time budget of 0.01 min reached at epoch 1, batch (\d+)/980; "
        r"best validation loss (\d+\.\d{4}) nats/char \((\d+\.\d{4}) bits/char\)$",
        out,
        re.M,
    )
    assert stop, out[-3000:]
    batch, nats, bits = int(stop[1]), float(stop[2]), float(stop[3])
    assert 1 <= batch < 980 and bits == pytest.approx(nats / math.log(2), abs=2e-4)
    # the progress bar of the cut epoch ends at the batch reached, not at 980/980
    assert re.search(rf"\b{batch}/980\b", out) and "980/980" not in out
    assert "model in model\n--- sample (temperature 0.8) ---\n" in out
    sample = out.split("--- sample (temperature 0.8) ---\n", 1)[1]
    assert len(sample.rstrip("\n")) >= 30
    assert (tmp_path / "model" / "data" / "corpus.json").read_text().count('"source": "embedded:tiny-shakespeare"') == 1


@pytest.mark.parametrize(
    "argv",
    [["--help"], *([c, "--help"] for c in ("train", "generate", "evaluate", "export", "serve", "bench"))],
    ids=" ".join,
)
def test_help_answers_without_loading_tensorflow(argv):
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", PROBE_CLI, *argv], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    seconds = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "exit 0 tensorflow loaded: False False", f"{seconds:.1f} s"
    assert done.stdout.startswith("usage: keras-chargen")


TRAIN_USAGE = "usage: keras-chargen train [--text PATH [PATH ...] | --tfds NAME] --out MODEL_DIR [options]"


GENERATE_USAGE = (
    "usage: keras-chargen generate MODEL_DIR [--prompt TEXT] [--length N] [--temperature T [T ...]] [--seed N] "
    "[options]"
)


def _train_error(message: str) -> list[str]:
    return [TRAIN_USAGE, f"keras-chargen train: error: {message}"]


@pytest.mark.parametrize(
    "argv, expected",
    [
        pytest.param(
            ["train", "--out", "m", "--units", "abc"],
            _train_error("argument --units: invalid int value: 'abc'"),
            id="bad-type",
        ),
        pytest.param(
            ["train", "--out", "m", "--bogus", "1"],
            _train_error("unrecognized arguments: --bogus 1"),
            id="unknown-flag",
        ),
        pytest.param(
            ["train", "--text", "a.txt"], _train_error("the following arguments are required: --out"), id="missing-out"
        ),
        pytest.param(
            ["trian", "--out", "m"],
            [
                "usage: keras-chargen [-h] COMMAND ...",
                "keras-chargen: error: unknown command 'trian'; did you mean 'train'?",
            ],
            id="misspelled-command",
        ),
        pytest.param(
            ["serve", "x", "--port", "http"],
            [
                "usage: keras-chargen serve EXPORTED_DIR [--port 8501] [--grpc-port 8500] [--host 127.0.0.1] [options]",
                "keras-chargen serve: error: argument --port: invalid int value: 'http'",
            ],
            id="serve-bad-port",
        ),
        pytest.param(
            ["train", "--out", "m", "--units", "0"],
            _train_error("--units must be a positive integer; got 0"),
            id="bad-setting",
        ),
        pytest.param(
            ["train", "--out", "m", "--text", "missing.txt"],
            ["error: no such file or directory: missing.txt"],
            id="missing-text",
        ),
        pytest.param(
            ["generate", "m", "--top-k", "0"],
            [
                GENERATE_USAGE,
                "keras-chargen generate: error: --top-k must be an integer >= 1; omit --top-k to turn it off; got 0",
            ],
            id="generate-bad-setting",
        ),
        pytest.param(
            ["generate", "m", "--temperature", "0.5", "nan"],
            [GENERATE_USAGE, "keras-chargen generate: error: --temperature must be a finite number >= 0; got nan"],
            id="generate-nan-temperature",
        ),
    ],
)
def test_argument_errors_answer_without_loading_tensorflow(argv, expected, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", PROBE_CLI, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.splitlines()[-1] == "exit 2 tensorflow loaded: False False", done.stderr
    assert done.stderr.splitlines() == expected


def test_tfds_without_network_fails_fast_naming_the_alternatives(tmp_path, monkeypatch, capsys):
    attempts = []

    def unreachable(*args, **kwargs):
        attempts.append(args)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "getaddrinfo", unreachable)
    monkeypatch.setattr(socket.socket, "connect", unreachable)
    code = main(["train", "--tfds", "tiny_shakespeare", "--tfds-data-dir", str(tmp_path / "tfds"), "--out", "m"])
    # fast: one probe of the download host, no retry loop (TFDS alone retries for minutes)
    assert code == 2 and len(attempts) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: cannot download TFDS dataset 'tiny_shakespeare': raw.githubusercontent.com is unreachable "
        "([Errno 101] Network is unreachable), the download failed; use --text FILE, --tfds-manual-dir DIR "
        "(a folder with the dataset's raw files) or no source flag (the embedded tiny-shakespeare corpus)"
    ]


def test_stop_and_already_finished_messages_say_why():
    config = ChargenConfig(epochs=10, max_minutes=4, patience=3)
    progress = Progress(epoch=2, step=68, best_val_loss=1.5)
    assert stop_message(config, progress, (2, 68), 156) == (
        "time budget of 4 min reached at epoch 3, batch 68/156; "
        "best validation loss 1.5000 nats/char (2.1640 bits/char)"
    )
    stopped = Progress(epoch=7, best_val_loss=1.25, stopped_early=True)
    assert stop_message(config, stopped, None, 156) == (
        "early stopping: no validation improvement in 3 epochs, stopped after epoch 7 of 10; "
        "best validation loss 1.2500 nats/char (1.8034 bits/char)"
    )
    assert stop_message(config, Progress(epoch=10, best_val_loss=1.25), None, 156) == (
        "finished all 10 epochs; best validation loss 1.2500 nats/char (1.8034 bits/char)"
    )
    assert stop_message(config, Progress(), (0, 1), 156) == (
        "time budget of 4 min reached at epoch 1, batch 1/156; no validation loss yet"
    )
    assert already_finished_message(Path("m"), config, stopped) == (
        "m: training already finished (early stopping after epoch 7); "
        "best validation loss 1.2500 nats/char (1.8034 bits/char); raise --epochs or --max-minutes to continue"
    )
    assert already_finished_message(Path("m"), config, Progress(epoch=10, best_val_loss=1.25)).startswith(
        "m: training already finished (all 10 epochs done); "
    )
    assert already_finished_message(Path("m"), config, progress).startswith(
        "m: training already finished (time budget of 4 min used up in epoch 3); "
    )


def test_generate_returns_the_continuation_or_with_include_prompt_the_whole_text(generator):
    continuation = generator.generate(["ANNA:", "A"], 0.0, 30)
    whole = generator.generate(["ANNA:", "A"], 0.0, 30, include_prompt=True)
    assert whole == ["ANNA:" + continuation[0], "A" + continuation[1]]
    assert len(continuation[0]) == 30


# --- the README matches what happens ---
def _readme_section(start: str, end: str) -> str:
    return README.split(start, 1)[1].split(end, 1)[0]


def test_readme_quick_start_trains_offline_on_the_embedded_corpus():
    quick = _readme_section("## Quick start", "2. Run the tests")
    (command,) = re.findall(r"&& (keras-chargen train .*)$", quick, re.M)
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert args.text is None and args.tfds is None  # the embedded corpus: no download
    assert "--tfds" not in command and "pip install -e '.[dev]'" in quick


def test_readme_model_directory_table_lists_exactly_the_files_training_writes(trained_dir):
    table = _readme_section("The model directory:\n", "\n\n")
    listed = set()
    for row in table.splitlines()[2:]:
        listed |= {name.rstrip("/") for name in re.findall(r"`([^`]+)`", row.split("|")[1])}
    assert listed == {p.name for p in trained_dir.iterdir()}


def test_every_flag_in_the_readme_exists():
    parser = build_parser()
    known = {"--help", "--logdir"}  # `--logdir` is TensorBoard's, in `tensorboard --logdir MODEL_DIR/logs`
    for command in parser._subparsers._group_actions[0].choices.values():
        known |= {flag for action in command._actions for flag in action.option_strings}
    assert set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", README)) - known == set()


def test_readme_names_the_tests_that_skip_and_what_they_need():
    tests = _readme_section("2. Run the tests", "## Commands")
    assert "chromium chromium-driver" in tests and "test_playground.py" in tests
    assert "../shared" not in tests  # no test needs it any more: tiny-shakespeare is in the package
    assert CORPUS.exists() and SHAKESPEARE.exists()

"""A quiet TensorFlow start-up: what the CLI prints on stderr (nothing but real problems), and the switch back."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

from keras_chargen.quiet import VERBOSE_ENV, captured_stderr_fd, is_start_up_noise, verbose

# Lines the full `tensorflow` wheel writes at start-up on a machine without a GPU (copied from a real run).
START_UP_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796232036.202961    6288 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To turn "
    "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796232036.203415    6288 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "E0000 00:00:1796232038.809453    6288 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
    "E0000 00:00:1796232052.532134    6522 util.cc:131] oneDNN supports DT_INT64 only on platforms with AVX-512. "
    "Falling back to the default Eigen-based implementation if present.",
    "W0000 00:00:1796232076.349503    7022 op_level_cost_estimator.cc:699] Error in PredictCost() for the op: Softmax",
]
LOADER_ERROR = "E0000 00:00:1796232038.809453    6288 loader.cc:1] cannot load libtensorflow_framework.so.2"


def _env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no TF_CPP_MIN_LOG_LEVEL from conftest, this checkout first."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", VERBOSE_ENV)}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def _cli(*argv, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "keras_chargen", *map(str, argv)],
        cwd=REPO,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("line", START_UP_LINES, ids=range(len(START_UP_LINES)))
def test_start_up_lines_are_noise(line):
    assert is_start_up_noise(line)


@pytest.mark.parametrize(
    "line",
    [
        "error: model directory not found: x",
        "E0000 00:00:1796232038.809453    6288 saver.cc:52] could not open file: permission denied",
        LOADER_ERROR,
        "F0000 00:00:1796232038.809453    6288 main.cc:1] Check failed: x != nullptr",
        "/usr/lib/python3/keras/src/layers/layer.py:431: UserWarning: something that matters",
        "Traceback (most recent call last):",
    ],
)
def test_real_problems_are_not_noise(line):
    assert not is_start_up_noise(line)


def test_the_capture_takes_what_cpp_writes_to_descriptor_2_and_gives_it_back():
    with captured_stderr_fd() as lines:
        os.write(2, b"from C++\n")
        print("from Python", file=sys.__stderr__, flush=True)  # (pytest replaces sys.stderr)
    assert lines == ["from C++", "from Python"]
    with pytest.raises(ValueError), captured_stderr_fd() as lines:  # restored however the block ends
        os.write(2, b"before the error\n")
        raise ValueError
    assert lines == ["before the error"]


def test_verbose_switch():
    assert not verbose({}) and not verbose({VERBOSE_ENV: "0"}) and not verbose({VERBOSE_ENV: ""})
    assert verbose({VERBOSE_ENV: "1"}) and verbose({VERBOSE_ENV: "yes"})


def test_generate_prints_nothing_on_stderr_and_the_switch_shows_tensorflows_lines(trained_dir):
    done = _cli("generate", trained_dir, "--prompt", "ANNA:", "--length", "20", "--seed", "1")
    assert done.returncode == 0 and done.stdout.startswith("ANNA:") and len(done.stdout) >= 25
    assert done.stderr.splitlines() == ["seed: 1 (the same --seed gives the same text)"]  # no TensorFlow line
    loud = _cli("generate", trained_dir, "--prompt", "ANNA:", "--length", "20", "--seed", "1", **{VERBOSE_ENV: "1"})
    assert loud.returncode == 0 and loud.stdout == done.stdout
    assert any(is_start_up_noise(line) and line.strip() for line in loud.stderr.splitlines()), loud.stderr


def test_a_bad_length_prints_the_usage_and_one_line_naming_length(trained_dir):
    done = _cli("generate", trained_dir, "--length", "-5")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "usage: keras-chargen generate MODEL_DIR [--prompt TEXT] [--length N] [--temperature T [T ...]] [--seed N] "
        "[options]",
        "keras-chargen generate: error: --length must be an integer in 0..100000; got -5",
    ]


@pytest.mark.slow
def test_export_prints_one_line_per_artifact_and_nothing_else(trained_dir, tmp_path):
    done = _cli("export", trained_dir, "--out", tmp_path / "e", "--format", "all")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"exported {tmp_path / 'e' / sub}" for sub in ("1", "tflite/1", "onnx/1")]
    assert done.stderr == ""  # no tf2onnx "missing output shape" lines, no Keras build() warning


def test_an_error_while_importing_tensorflow_still_reaches_stderr(tmp_path):
    # a `tensorflow` package that writes a real error and fails: the user sees both, not a silent exit
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\n"
        f"os.write(2, b'{LOADER_ERROR}\\n')\n"
        f"os.write(2, b'{START_UP_LINES[1][:60]}\\n')\n"
        "raise ImportError('broken install')\n"
    )
    code = (
        "import sys; from keras_chargen.quiet import quiet_tensorflow_start\n"
        "quiet_tensorflow_start()\n"
        "try:\n    import tensorflow\nexcept ImportError as err:\n    print('raised', err)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout == "raised broken install\n"
    assert done.stderr.splitlines() == [LOADER_ERROR]

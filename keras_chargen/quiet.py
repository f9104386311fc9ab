"""Starting TensorFlow without its start-up noise on the terminal (the CLI's; standard library only).

The full `tensorflow` wheel writes several lines to file descriptor 2 while it is imported
(`WARNING: All log messages before absl::InitializeLog() ...`, oneDNN and CUDA-stub notes) and an
`E0000 ... failed call to cuInit` line at its first operation on a machine without a GPU. The first
come from C++ before Python logging exists, so neither `TF_CPP_MIN_LOG_LEVEL` nor Python can hide
them; the later ones obey `TF_CPP_MIN_LOG_LEVEL`. After `quiet_tensorflow_start()` (the CLI calls it
first), the first `import tensorflow`, by whichever module, runs with descriptor 2 pointed at a
temporary file; every captured line that is not start-up chatter is passed back to stderr, and
`TF_CPP_MIN_LOG_LEVEL=3` keeps TF's C++ log off afterwards (Python exceptions, Python warnings and
the CLI's own messages are not affected).

`KERAS_CHARGEN_VERBOSE=1` in the environment turns all of this off: TensorFlow then logs as it
always does (under the user's own `TF_CPP_MIN_LOG_LEVEL`), and tf2onnx and Keras chatter during
export is shown too.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping

VERBOSE_ENV = "KERAS_CHARGEN_VERBOSE"

# absl/glog lines: severity letter, MMDD, time, thread id, file:line]
_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.+-]+:\d+\] ")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# error-level lines that TensorFlow writes at start-up on machines without a GPU (they are not failures)
_START_UP_ERRORS = re.compile(r"cuInit|CUDA|cuda|cuDNN|cuFFT|cuBLAS|TensorRT|oneDNN|factory for plugin")


def verbose(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the user asked to see TensorFlow's own logs (`KERAS_CHARGEN_VERBOSE` set, and not 0)."""
    value = (os.environ if environ is None else environ).get(VERBOSE_ENV, "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def is_start_up_noise(line: str) -> bool:
    """Whether a captured stderr line is TensorFlow's start-up chatter (info and warning lines, and the
    error-level GPU/oneDNN notes of a machine without a GPU), not a real problem."""
    if line.strip() == _ABSL_PREAMBLE or not line.strip():
        return True
    if not _LOG_LINE.match(line):
        return False
    return line[0] in "IW" or (line[0] == "E" and bool(_START_UP_ERRORS.search(line)))


@contextlib.contextmanager
def captured_stderr_fd() -> Iterator[list[str]]:
    """Point file descriptor 2 at a temporary file while the block runs; the list yielded is filled
    with the lines written there (by C++ or Python) once the block ends, however it ends."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield lines
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                capture.seek(0)
                lines.extend(capture.read().decode("utf-8", "replace").splitlines())
    finally:
        os.close(saved)


def quiet_tensorflow_start() -> None:
    """Make the first `import tensorflow` of this process quiet, wherever it happens (see the module
    docstring); nothing to do if TensorFlow is already imported or `KERAS_CHARGEN_VERBOSE` is set.

    Lines captured during the import that are not start-up chatter (a real error while loading, a
    Python warning) still reach stderr, right after the import.
    """
    if "tensorflow" in sys.modules or verbose() or any(isinstance(f, _QuietImport) for f in sys.meta_path):
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # TF's C++ log after the start-up (the cuInit error line)
    sys.meta_path.insert(0, _QuietImport())


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` the usual way, once, and runs its module code with stderr captured."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; and out of the way of the real search
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    """The real loader of `tensorflow`, its `exec_module` run inside `captured_stderr_fd`."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # TensorFlow sees its own loader
        lines: list[str] = []
        try:
            with captured_stderr_fd() as lines:
                self.loader.exec_module(module)
        finally:  # (the lines are there once the capture has ended)
            kept = [line for line in lines if not is_start_up_noise(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Silence the converters' chatter while an export runs (tf2onnx's per-node warnings, Keras'
    `build()` notice, TF's asset logging); errors still raise. A no-op under `KERAS_CHARGEN_VERBOSE`."""
    if verbose():
        yield
        return
    loggers = [logging.getLogger(name) for name in ("tf2onnx", "tensorflow", "absl")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`build\(\)` was called on layer", category=UserWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)

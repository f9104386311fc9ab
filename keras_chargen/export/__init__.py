"""Exporters: SavedModel (TensorFlow Serving layout), TFLite, ONNX and the web page; layout in
`keras_chargen.export.layout`."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from keras_chargen.errors import WriteError, write_error
from keras_chargen.export.layout import (
    ALL,
    FORMATS,
    MAX_VERSION,
    QUANTIZATIONS,
    artifact_dir,
    check_export_args,
    check_free,
    check_writable,
    remove_stale_export_temps,
    staged_dirs,
)
from keras_chargen.export.savedmodel import export_savedmodel, write_savedmodel
from keras_chargen.quiet import quiet_export


def export_model(
    model_dir: str | Path,
    out: str | Path,
    format: str = "savedmodel",
    version: int = 1,
    quantize: str = "none",
    overwrite: bool = False,
    placed: list[Path] | None = None,
) -> list[Path]:
    """Export the model in `model_dir` under the base path `out`; returns the version directories written.

    All requested version directories are written to temporary directories first and renamed
    into place only when every artifact has been written, so an error or an interrupt leaves no
    partial (or only partly exported) version behind.

    Args:
        model_dir: str | Path, a trained model directory.
        out: str | Path, the export base path, e.g. `exported/NAME`.
        format: str, "savedmodel" (default), "tflite", "onnx", "web" (a static page on onnxruntime-web) or
            "all" (every format but web).
        version: int >= 1, the version directory name. Default 1.
        quantize: str, TFLite weights: "none" (float32, default), "dynamic" (int8) or "float16".
        overwrite: bool, replace existing version directories. Default False (a `ChargenError`).
        placed: list | None, each version directory is appended once it is in place (what an
            interrupted export left on disk). Default None.

    Example:
    >>> export_model("models/tiny", "exported/tiny", format="all")  # doctest: +SKIP
    [PosixPath('exported/tiny/1'), PosixPath('exported/tiny/tflite/1'), PosixPath('exported/tiny/onnx/1')]
    """
    from keras_chargen.saving import VOCAB_FILE, load_generator

    formats = check_export_args(format, version, quantize)
    if "web" in formats:
        from keras_chargen.export.web import runtime_dir

        runtime_dir()  # a missing runtime is a one-line error before the slow model load
    targets = [artifact_dir(out, f, version, quantize) for f in formats]
    check_free(targets, overwrite)  # fail on an existing version or an unwritable path before the slow model load
    check_writable(targets)
    remove_stale_export_temps(out)  # what killed exports into this base path left
    generator = load_generator(model_dir)
    vocab_file = Path(model_dir) / VOCAB_FILE
    with staged_dirs(targets, overwrite, placed) as temps, quiet_export():
        for fmt, tmp, target in zip(formats, temps, targets):
            try:
                _write(fmt, generator, tmp, vocab_file, quantize)
            except OSError as err:  # a full disk …: one line naming the version directory
                raise write_error(target, err) from None
            except tf.errors.OpError as err:  # TensorFlow's own file writes (SavedModel)
                if "No space left on device" not in str(err) and err.error_code != tf.errors.RESOURCE_EXHAUSTED:
                    raise
                raise WriteError(f"cannot write {target}: {str(err).rsplit('; ', 1)[-1].strip()}") from None
    return targets


def _write(format: str, generator, directory: Path, vocab_file: Path, quantize: str) -> None:
    if format == "savedmodel":
        write_savedmodel(generator, directory, vocab_file)
    elif format == "web":
        from keras_chargen.export.web import write_web

        write_web(generator, directory, vocab_file)
    elif format == "tflite":
        from keras_chargen.export.tflite import write_tflite

        write_tflite(generator, directory, vocab_file, quantize)
    else:
        from keras_chargen.export.onnx import write_onnx

        write_onnx(generator, directory, vocab_file)


__all__ = [
    "ALL",
    "FORMATS",
    "MAX_VERSION",
    "QUANTIZATIONS",
    "artifact_dir",
    "export_model",
    "export_savedmodel",
    "staged_dirs",
    "write_savedmodel",
]

"""Where each artifact goes under the export base path, and writing version directories atomically.

    OUT/<version>/                 SavedModel (TensorFlow Serving serves OUT as its model base path)
    OUT/tflite/<version>/          step.tflite, generate.tflite, vocab.json (float32)
    OUT/tflite-dynamic/<version>/  the same, dynamic-range int8 weights
    OUT/tflite-float16/<version>/  the same, float16 weights
    OUT/onnx/<version>/            step.onnx, generate.onnx, vocab.json
    OUT/web/<version>/             a static web page: index.html, chargen.js, decode.onnx, onnxruntime-web

TF Serving ignores children of the base path that are not numbers, so the TFLite and ONNX folders
live beside the SavedModel versions without disturbing it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from keras_chargen.errors import ChargenError, os_reason
from keras_chargen.io import default_mode, remove_stale_temps, temp_name

FORMATS = ("savedmodel", "tflite", "onnx", "web")
ALL = "all"  # every format but web (which needs the npm runtime, `keras_chargen.export.web`)
ALL_FORMATS = ("savedmodel", "tflite", "onnx")
QUANTIZATIONS = ("none", "dynamic", "float16")
MAX_VERSION = 2**63 - 1  # TF Serving's model versions are int64


def check_export_args(format: str, version: int, quantize: str) -> list[str]:
    """Validate the export arguments (`ChargenError` naming the first bad one); return the formats to write."""
    if format != ALL and format not in FORMATS:
        raise ChargenError(f"unknown format {format!r}; choose one of {', '.join((*FORMATS, ALL))}")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise ChargenError(f"version must be an integer from 1 to {MAX_VERSION} (TF Serving's int64); got {version!r}")
    if quantize not in QUANTIZATIONS:
        raise ChargenError(f"quantize must be one of {', '.join(QUANTIZATIONS)}; got {quantize!r}")
    if quantize != "none" and format not in ("tflite", ALL):
        raise ChargenError("--quantize applies to TFLite only (use --format tflite or all)")
    return list(ALL_FORMATS) if format == ALL else [format]


def artifact_dir(out: str | Path, format: str, version: int, quantize: str = "none") -> Path:
    """The version directory of one format (see the module docstring)."""
    out = Path(out)
    if format == "savedmodel":
        return out / str(version)
    if format == "tflite":
        return out / ("tflite" if quantize == "none" else f"tflite-{quantize}") / str(version)
    if format in ("onnx", "web"):
        return out / format / str(version)
    raise ChargenError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")


@contextlib.contextmanager
def staged_dirs(
    paths: Sequence[Path], overwrite: bool = False, placed: list[Path] | None = None
) -> Iterator[list[Path]]:
    """Yield one empty temporary directory per path; when the body succeeds, move each into place.

    Nothing under `paths` changes until the body has finished: a failure or an interrupt removes
    the temporary directories (a killed process leaves only hidden `.NAME.PID-START@HOST.*.tmp` ones,
    which `remove_stale_export_temps` removes once that process has ended), so a version directory
    is either absent, the old one, or complete. With `overwrite`, an existing
    directory is replaced (moved aside, the new one renamed in, the old one deleted). Each path
    moved into place is appended to `placed` (so that a caller interrupted afterwards knows what
    it left on disk). A path that cannot be created is a one-line `ChargenError`.
    """
    paths = [Path(p) for p in paths]
    check_free(paths, overwrite)
    check_writable(paths)
    created = sorted({a for p in paths for a in p.parents if not a.exists()}, key=lambda a: -len(a.parts))
    temps: list[Path] = []
    done = False
    try:
        for path in paths:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                temps.append(Path(tempfile.mkdtemp(prefix=temp_name(path.name), suffix=".tmp", dir=path.parent)))
            except OSError as err:
                raise ChargenError(f"cannot create {path}: {os_reason(err)}") from None
            os.chmod(temps[-1], default_mode(directory=True))  # mkdtemp makes 0700; TF Serving must read it
        yield temps
        check_free(paths, overwrite)  # another export may have finished meanwhile
        for tmp, path in zip(temps, paths):
            try:
                _replace_dir(tmp, path)
            except OSError as err:
                raise ChargenError(f"cannot move the export into {path}: {os_reason(err)}") from None
            if placed is not None:
                placed.append(path)
        done = True
    finally:
        for tmp in temps:
            shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            _remove_empty(created)


def remove_stale_export_temps(out: str | Path) -> list[Path]:
    """Remove the temp folders that killed exports left in the base path `out` and its format folders."""
    out = Path(out)
    folders = {out} | {artifact_dir(out, f, 1, q).parent for f in FORMATS for q in QUANTIZATIONS}
    return [p for folder in sorted(folders) for p in remove_stale_temps(folder, recursive=False)]


def check_free(paths: Sequence[Path], overwrite: bool = False) -> None:
    """Raise `ChargenError` naming the paths that exist, unless `overwrite`."""
    taken = [str(p) for p in paths if p.exists()]
    if taken and not overwrite:
        raise ChargenError(
            f"{', '.join(taken)} already exist{'s' if len(taken) == 1 else ''}; "
            "pass --overwrite to replace, or export another --version"
        )


def check_writable(paths: Sequence[Path]) -> None:
    """Raise `ChargenError` if a path cannot be created: its nearest existing ancestor is a file or read-only."""
    for path in paths:
        ancestor = next((a for a in Path(os.path.abspath(path)).parents if a.exists()), None)
        if ancestor is None:
            continue
        if not ancestor.is_dir():
            raise ChargenError(f"cannot create {path}: {ancestor} is a file, not a directory")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise ChargenError(f"cannot create {path}: {ancestor} is not writable")


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove the folders this export created (deepest first) where they are still empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _replace_dir(tmp: Path, path: Path) -> None:
    """Rename `tmp` to `path`, first moving an existing `path` aside (a directory rename cannot replace)."""
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=temp_name(path.name), suffix=".old", dir=path.parent))
        os.replace(path, old / "dir")
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

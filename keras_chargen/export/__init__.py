"""Exporters: SavedModel (TensorFlow Serving layout)."""

from __future__ import annotations

from pathlib import Path

from keras_chargen.errors import ChargenError
from keras_chargen.export.savedmodel import export_savedmodel

FORMATS = ("savedmodel",)


def export_model(model_dir: str | Path, out: str | Path, format: str = "savedmodel", version: int = 1,
                 quantize: str = "none", overwrite: bool = False) -> list[Path]:
    """Export the model in `model_dir` to `out/<version>/`; returns the written paths."""
    from keras_chargen.saving import VOCAB_FILE, load_generator

    if format not in FORMATS:
        raise ChargenError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ChargenError(f"version must be a positive integer; got {version!r}")
    if quantize != "none":
        raise ChargenError("--quantize applies to TFLite only")
    generator = load_generator(model_dir)
    path = export_savedmodel(generator, Path(out) / str(version), vocab_file=Path(model_dir) / VOCAB_FILE,
                             overwrite=overwrite)
    return [path]


__all__ = ["export_model", "export_savedmodel"]

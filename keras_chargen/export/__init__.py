"""Exporters: SavedModel (TensorFlow Serving)."""

from keras_chargen.export.savedmodel import export_savedmodel

__all__ = ["export_savedmodel"]

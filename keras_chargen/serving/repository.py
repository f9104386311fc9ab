"""The model base path as TF Serving sees it: numeric version folders, each a SavedModel, newest by default."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2

from keras_chargen.errors import ChargenError
from keras_chargen.serving.errors import RequestError, from_tf_error

DEFAULT_SIGNATURE = "serving_default"
VOCAB_ASSET = Path("assets") / "vocab.json"


def _message_to_dict(message) -> dict[str, Any]:
    """Protobuf → JSON dict the way TF Serving prints it (proto field names, defaults included)."""
    try:
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    except TypeError:  # protobuf < 5.26 names the option differently
        return json_format.MessageToDict(message, preserving_proto_field_name=True, including_default_value_fields=True)


def read_signature_defs(version_dir: Path) -> dict[str, Any]:
    """The `signature_def` map of `saved_model.pb`, as TF Serving's metadata endpoint shows it."""
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    meta_graph = proto.meta_graphs[0]
    return {name: _message_to_dict(signature) for name, signature in sorted(meta_graph.signature_def.items())}


@dataclass
class ServableVersion:
    """One loaded version: its signatures (callable from any thread), their defs, and the vocabulary asset.

    Args:
        name: str, the model name (the base path's folder name).
        version: int, the numeric folder name.
        path: Path, the version folder.
        loaded: the object `tf.saved_model.load` returned (kept alive: the signatures use its variables).
        signature_defs: dict, JSON-ready signature defs for the metadata endpoint.
        vocabulary: list[str] | None, `assets/vocab.json` tokens (id i is tokens[i - 1]); None if absent.
    """

    name: str
    version: int
    path: Path
    loaded: Any
    signature_defs: dict[str, Any]
    vocabulary: list[str] | None

    def __post_init__(self) -> None:
        # read once: `structured_input_signature` is rebuilt on every access, and lookups in
        # `loaded.signatures` cost more than the step itself on a small model
        self._functions = dict(self.loaded.signatures.items())
        self._specs = {
            name: dict(sorted(fn.structured_input_signature[1].items())) for name, fn in self._functions.items()
        }

    @classmethod
    def load(cls, name: str, version: int, path: Path) -> ServableVersion:
        """Load the SavedModel in `path`; raises `ChargenError` naming the folder if it is unusable."""
        if not (path / "saved_model.pb").is_file():
            raise ChargenError(f"version folder {path} has no saved_model.pb")
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as err:  # any failure here means the folder is not a loadable SavedModel
            raise ChargenError(f"cannot load {path}: {str(err).splitlines()[0][:300]}") from None
        vocab_file = path / VOCAB_ASSET
        vocabulary = json.loads(vocab_file.read_text("utf-8"))["tokens"] if vocab_file.is_file() else None
        return cls(name, version, path, loaded, read_signature_defs(path), vocabulary)

    @property
    def signature_names(self) -> list[str]:
        """Callable signatures (TF Serving hides `__saved_model_init_op` from predict)."""
        return sorted(self._functions)

    def function(self, signature: str):
        """The concrete function of `signature`; a 400 `RequestError` as TF Serving words it if absent."""
        if signature not in self._functions:
            raise RequestError(
                400,
                f'Serving signature name: "{signature}" not found in signature def '
                f"(this model has: {', '.join(self.signature_names)})",
            )
        return self._functions[signature]

    def input_specs(self, signature: str) -> dict[str, tf.TensorSpec]:
        """Input name → `tf.TensorSpec` of `signature`, in name order."""
        self.function(signature)  # 400 if unknown
        return self._specs[signature]

    def run(self, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Call `signature` on numpy inputs; TF runtime errors become `RequestError`s (400 for bad input)."""
        function = self.function(signature)
        tensors = {name: tf.constant(inputs[name], dtype=spec.dtype) for name, spec in self._specs[signature].items()}
        try:
            outputs = function(**tensors)
        except tf.errors.OpError as err:
            raise from_tf_error(err) from None
        return {name: value.numpy() for name, value in outputs.items()}


class ModelRepository:
    """Every numeric version folder under a model base path, loaded once at start-up.

    Args:
        name: str, the model name used in URLs (`/v1/models/{name}`).
        versions: dict[int, ServableVersion], at least one.

    Example:
    >>> repo = ModelRepository.load("exported/shakespeare")  # doctest: +SKIP
    >>> repo.get("shakespeare", None).version  # the newest  # doctest: +SKIP
    2
    """

    def __init__(self, name: str, versions: dict[int, ServableVersion]) -> None:
        if not versions:
            raise ChargenError(f"model {name!r} has no versions")
        self.name = name
        self.versions = dict(sorted(versions.items()))

    @classmethod
    def load(cls, base_path: str | Path, name: str | None = None) -> ModelRepository:
        """Load all numeric subfolders of `base_path`; the model name defaults to the folder name."""
        base = Path(base_path)
        if not base.is_dir():
            raise ChargenError(f"model base path not found: {base}")
        if (base / "saved_model.pb").is_file():
            raise ChargenError(
                f"{base} is a SavedModel, not a base path: serve its parent, with the "
                f"SavedModel in a numeric version folder ({base.parent}/NAME/1/saved_model.pb)"
            )
        numbers = sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0)
        if not numbers:
            raise ChargenError(
                f"no version folders (1, 2, ...) in {base}; create one with "
                f"`keras-chargen export MODEL_DIR --out {base} --version 1`"
            )
        name = name or base.resolve().name
        if not name or any(c in name for c in "/:"):
            raise ChargenError(f"model name must be non-empty without '/' or ':'; got {name!r}")
        return cls(name, {n: ServableVersion.load(name, n, base / str(n)) for n in numbers})

    @property
    def latest(self) -> int:
        return max(self.versions)

    def get(self, name: str, version: int | None) -> ServableVersion:
        """The servable for a request; 404 with TF Serving's wording for an unknown model or version."""
        if name != self.name:
            spec = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise RequestError(404, f"Servable not found for request: {spec}")
        if version is None:
            return self.versions[self.latest]
        if version not in self.versions:
            raise RequestError(
                404,
                f"Servable not found for request: Specific({name}, {version}) "
                f"(loaded versions: {', '.join(map(str, self.versions))})",
            )
        return self.versions[version]

"""The model base path as TF Serving sees it: numeric version folders, each a SavedModel, polled while serving.

As TF Serving's file-system source: the base path is scanned every `poll_seconds`; versions that the
version policy wants (`latest` N, `all`, `specific`) are loaded, versions whose folder went away are
unloaded, and a version that fails to load is reported with state `END` and its error (one log line)
while the others keep serving. Unlike TF Serving, the `latest` policy skips versions that failed to
load, so a broken newest export leaves the previous good version serving.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from keras_chargen.contract import VOCAB_FILE, asset
from keras_chargen.errors import ChargenError
from keras_chargen.serving.cancellation import Canceller, cancellable
from keras_chargen.serving.errors import RequestError, from_tf_error

logger = logging.getLogger("keras_chargen.serving")

VOCAB_ASSET = Path(asset(VOCAB_FILE))
# TF Serving's ModelVersionStatus.State names (get_model_status.proto)
AVAILABLE, END = "AVAILABLE", "END"


class VersionLoadError(ChargenError):
    """A version folder that cannot be served; `code` is the TF error code name TF Serving would report."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code


def _message_to_dict(message) -> dict[str, Any]:
    """Protobuf → JSON dict the way TF Serving prints it (proto field names, defaults included)."""
    try:
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    except TypeError:  # protobuf < 5.26 names the option differently
        return json_format.MessageToDict(message, preserving_proto_field_name=True, including_default_value_fields=True)


def read_signature_protos(version_dir: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The `signature_def` map of `saved_model.pb`; `VersionLoadError` if the file is not a SavedModel."""
    path = version_dir / "saved_model.pb"
    data = path.read_bytes()
    if not data:
        raise VersionLoadError(f"{path} is empty", "DATA_LOSS")
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(data)
    except DecodeError as err:
        raise VersionLoadError(f"{path} is not a SavedModel protobuf ({err})", "DATA_LOSS") from None
    if not proto.meta_graphs:
        raise VersionLoadError(f"{path} holds no meta graph", "DATA_LOSS")
    return dict(sorted(proto.meta_graphs[0].signature_def.items()))


def read_vocabulary(version_dir: Path) -> list[str] | None:
    """`assets/vocab.json` tokens, None if absent; `VersionLoadError` naming the fault if it is unusable."""
    path = version_dir / VOCAB_ASSET
    if not path.is_file():
        return None
    try:
        tokens = json.loads(path.read_bytes().decode("utf-8"))["tokens"]
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise VersionLoadError(f"{path} is not valid JSON: {err}", "DATA_LOSS") from None
    except (KeyError, TypeError):
        raise VersionLoadError(f"{path} has no 'tokens' list", "DATA_LOSS") from None
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise VersionLoadError(f"{path}: 'tokens' must be a list of strings", "DATA_LOSS")
    return tokens


@dataclass
class ServableVersion:
    """One loaded version: its signatures (callable from any thread), their defs, and the vocabulary asset.

    Args:
        name: str, the model name (the base path's folder name).
        version: int, the numeric folder name.
        path: Path, the version folder.
        loaded: the object `tf.saved_model.load` returned (kept alive: the signatures use its variables).
        signature_protos: dict, the `SignatureDef` protos (gRPC metadata); `signature_defs` is their JSON.
        vocabulary: list[str] | None, `assets/vocab.json` tokens (id i is tokens[i - 1]); None if absent.
    """

    name: str
    version: int
    path: Path
    loaded: Any
    signature_protos: dict[str, meta_graph_pb2.SignatureDef]
    vocabulary: list[str] | None

    def __post_init__(self) -> None:
        # read once: `structured_input_signature` is rebuilt on every access, and lookups in
        # `loaded.signatures` cost more than the step itself on a small model
        self.signature_defs = {name: _message_to_dict(sig) for name, sig in self.signature_protos.items()}
        self._functions = dict(self.loaded.signatures.items())
        self._specs = {
            name: dict(sorted(fn.structured_input_signature[1].items())) for name, fn in self._functions.items()
        }

    @classmethod
    def load(cls, name: str, version: int, path: Path) -> ServableVersion:
        """Load the SavedModel in `path`; `VersionLoadError` with a one-line reason if it is unusable."""
        if not (path / "saved_model.pb").is_file():
            raise VersionLoadError(f"version folder {path} has no saved_model.pb", "NOT_FOUND")
        try:
            protos = read_signature_protos(path)
            vocabulary = read_vocabulary(path)
        except OSError as err:
            raise VersionLoadError(f"cannot read {path}: {err.strerror}", "DATA_LOSS") from None
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as err:  # any failure here means the folder is not a loadable SavedModel
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            raise VersionLoadError(f"cannot load {path}: {(lines or [type(err).__name__])[0][:300]}") from None
        return cls(name, version, path, loaded, protos, vocabulary)

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

    def run(
        self, signature: str, inputs: Mapping[str, np.ndarray], canceller: Canceller | None = None
    ) -> dict[str, np.ndarray]:
        """Call `signature` on numpy inputs; TF runtime errors become `RequestError`s (400 for bad input).

        `canceller.cancel()` from another thread stops the call (499) where TF allows it.
        """
        function = self.function(signature)
        tensors = {name: tf.constant(inputs[name], dtype=spec.dtype) for name, spec in self._specs[signature].items()}
        try:
            with cancellable(canceller):
                outputs = function(**tensors)
        except tf.errors.CancelledError:
            raise RequestError(499, "the request was cancelled") from None
        except tf.errors.OpError as err:
            raise from_tf_error(err) from None
        return {name: value.numpy() for name, value in outputs.items()}


@dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's `model_version_policy`: which version folders to serve.

    Args:
        kind: str, `latest` (the `count` newest; TF Serving's default with 1), `all`, or `specific`.
        count: int, how many of the newest versions `latest` serves.
        versions: tuple[int, ...], the versions `specific` serves.

    Example:
    >>> VersionPolicy.parse("latest:2")
    VersionPolicy(kind='latest', count=2, versions=())
    >>> VersionPolicy.parse("specific:1,3").choose([1, 2, 3, 4], failed=set())
    [1, 3]
    """

    kind: str = "latest"
    count: int = 1
    versions: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """`latest`, `latest:N`, `all` or `specific:V1,V2,...`; `ChargenError` for anything else."""
        kind, _, arg = text.strip().partition(":")
        numbers = [part.strip() for part in arg.split(",")] if arg else []
        if not all(n.isascii() and n.isdigit() and 0 < len(n) < 19 and int(n) > 0 for n in numbers):
            raise ChargenError(f"version policy {text!r}: versions and counts must be positive integers")
        if kind == "all" and not numbers:
            return cls("all")
        if kind == "latest" and len(numbers) <= 1:
            return cls("latest", int(numbers[0]) if numbers else 1)
        if kind == "specific" and numbers:
            return cls("specific", 1, tuple(sorted({int(n) for n in numbers})))
        raise ChargenError(
            f"unknown version policy {text!r}; use latest, latest:N, all or specific:V1,V2 "
            "(TF Serving's model_version_policy)"
        )

    def choose(self, found: list[int], failed: set[int]) -> list[int]:
        """The versions to serve among the folders `found`, skipping those that `failed` to load."""
        usable = sorted(v for v in found if v not in failed)
        if self.kind == "all":
            return usable
        if self.kind == "specific":
            return [v for v in usable if v in self.versions]
        return usable[-self.count :]

    def __str__(self) -> str:
        if self.kind == "specific":
            return f"specific:{','.join(map(str, self.versions))}"
        return "all" if self.kind == "all" else f"latest:{self.count}"


@dataclass(frozen=True)
class VersionStatus:
    """One version's entry of TF Serving's `GetModelStatusResponse`: state, error code name and message."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


def _fingerprint(folder: Path) -> tuple:
    """What changes when a version folder is rewritten: sizes and times of the files a load reads."""
    parts = []
    for relative in ("saved_model.pb", "variables/variables.index", str(VOCAB_ASSET)):
        try:
            stat = (folder / relative).stat()
        except OSError:
            continue
        parts.append((relative, stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(parts)


class ModelRepository:
    """The versions of one model base path: loaded by `refresh()`, kept current by a polling thread.

    Args:
        base: Path, the model base path (`exported/NAME`, holding `1/`, `2/`, ...).
        name: str, the model name used in URLs (`/v1/models/{name}`).
        policy: VersionPolicy, which versions to serve. Default: the newest.

    Example:
    >>> repo = ModelRepository.load("exported/shakespeare")  # doctest: +SKIP
    >>> repo.get("shakespeare", None).version  # the newest  # doctest: +SKIP
    2
    """

    def __init__(self, base: Path, name: str, policy: VersionPolicy | None = None) -> None:
        self.base = base
        self.name = name
        self.policy = policy or VersionPolicy()
        self._lock = threading.Lock()  # guards the two published maps below (replaced, never mutated)
        self._versions: dict[int, ServableVersion] = {}
        self._status: dict[int, VersionStatus] = {}
        self._failed: dict[int, tuple] = {}  # version → fingerprint of the folder that failed to load
        self._warned_base = False
        self._refreshed = False  # the first refresh (start-up) logs loads at debug level: serve() prints them
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @classmethod
    def load(
        cls, base_path: str | Path, name: str | None = None, policy: VersionPolicy | None = None
    ) -> ModelRepository:
        """Check the base path and load its versions; `ChargenError` unless at least one version loads."""
        base = Path(base_path)
        if not base.is_dir():
            raise ChargenError(f"model base path not found: {base}")
        if (base / "saved_model.pb").is_file():
            raise ChargenError(
                f"{base} is a SavedModel, not a base path: serve its parent, with the "
                f"SavedModel in a numeric version folder ({base.parent}/NAME/1/saved_model.pb)"
            )
        name = name or base.resolve().name
        if not name or any(c in name for c in "/:"):
            raise ChargenError(f"model name must be non-empty without '/' or ':'; got {name!r}")
        repo = cls(base, name, policy)
        if not repo.scan():
            raise ChargenError(
                f"no version folders (1, 2, ...) in {base}; create one with "
                f"`keras-chargen export MODEL_DIR --out {base} --version 1`"
            )
        repo.refresh()
        if not repo.versions:
            failures = "; ".join(f"version {s.version}: {s.error_message}" for s in repo.statuses() if s.error_message)
            raise ChargenError(
                f"no version of {base} could be loaded (policy {repo.policy})" + (f": {failures}" if failures else "")
            )
        return repo

    def scan(self) -> list[int]:
        """The numeric version folders in the base path now (`OSError` if it cannot be read)."""
        return sorted(
            int(p.name)
            for p in self.base.iterdir()
            if p.is_dir() and p.name.isascii() and p.name.isdigit() and len(p.name) < 19 and int(p.name) > 0
        )

    def refresh(self) -> None:
        """One poll: load the versions the policy wants, unload those it no longer wants or whose folder is gone."""
        try:
            found = self.scan()
        except OSError as err:
            if not self._warned_base:
                logger.warning("cannot read model base path %s (%s); keeping the loaded versions", self.base, err)
                self._warned_base = True
            return
        self._warned_base = False
        for version in list(self._failed):  # a failed folder that changed (or went away) gets another try
            if version not in found or _fingerprint(self.base / str(version)) != self._failed[version]:
                del self._failed[version]
        loaded = dict(self._versions)
        status = dict(self._status)
        while True:
            wanted = self.policy.choose(found, set(self._failed))
            missing = [v for v in reversed(wanted) if v not in loaded]
            if not missing:
                break
            version = missing[0]
            folder = self.base / str(version)
            fingerprint = _fingerprint(folder)
            try:
                loaded[version] = ServableVersion.load(self.name, version, folder)
            except VersionLoadError as err:
                self._failed[version] = fingerprint
                status[version] = VersionStatus(version, END, err.code, str(err))
                logger.error("version %d of model %s failed to load: %s", version, self.name, err)
                continue
            status[version] = VersionStatus(version, AVAILABLE)
            logger.log(
                logging.INFO if self._refreshed else logging.DEBUG, "loaded version %d of model %s", version, self.name
            )
        for version in [v for v in loaded if v not in wanted]:
            del loaded[version]
            status[version] = VersionStatus(version, END)
            logger.info(
                "unloaded version %d of model %s (%s)",
                version,
                self.name,
                "folder removed" if version not in found else f"policy {self.policy}",
            )
        with self._lock:
            self._versions = dict(sorted(loaded.items()))
            self._status = status
        self._refreshed = True

    def start_polling(self, seconds: float) -> None:
        """Refresh every `seconds` on a daemon thread until `stop_polling()` (0: never, as TF Serving)."""
        if seconds <= 0 or self._poller is not None:
            return
        self._stop.clear()

        def poll() -> None:
            while not self._stop.wait(seconds):
                try:
                    self.refresh()
                except Exception:  # a poll must never kill the thread: log it and try again next time
                    logger.exception("polling %s failed", self.base)

        self._poller = threading.Thread(target=poll, name="version-poller", daemon=True)
        self._poller.start()

    def stop_polling(self, wait: bool = True) -> None:
        """Stop the polling thread (`wait`: until a load in progress has finished)."""
        self._stop.set()
        if wait and self._poller is not None:
            self._poller.join()
            self._poller = None

    @property
    def versions(self) -> dict[int, ServableVersion]:
        """The versions being served now, oldest first."""
        return self._versions

    @property
    def latest(self) -> int | None:
        versions = self._versions
        return max(versions) if versions else None

    def statuses(self) -> list[VersionStatus]:
        """Every version seen (loaded, failed or unloaded), newest first, as TF Serving's status lists them."""
        return [status for _, status in sorted(self._status.items(), reverse=True)]

    def status(self, name: str, version: int | None) -> list[VersionStatus]:
        """`GetModelStatus`: one version's state or all of them; 404 with TF Serving's wording otherwise."""
        statuses = self.statuses() if name == self.name else []
        if version is None:
            if not statuses:
                raise RequestError(404, f"Could not find any versions of model {name}")
            return statuses
        chosen = [s for s in statuses if s.version == version]
        if not chosen:
            raise RequestError(404, f"Could not find version {version} of model {name}")
        return chosen

    def get(self, name: str, version: int | None) -> ServableVersion:
        """The servable for a request; 404 with TF Serving's wording for an unknown model or version."""
        versions = self._versions
        if name != self.name or (version is None and not versions):
            spec = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise RequestError(404, f"Servable not found for request: {spec}")
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            state = self._status.get(version)
            why = (
                f"; version {version} is {state.state}" + (f": {state.error_message}" if state.error_message else "")
                if state
                else ""
            )
            raise RequestError(
                404,
                f"Servable not found for request: Specific({name}, {version}) "
                f"(loaded versions: {', '.join(map(str, versions)) or 'none'}{why})",
            )
        return versions[version]

"""The web export beside a served version, for the playground's "in this browser" mode.

`keras-chargen export MODEL --format web --out BASE` writes `BASE/web/<version>/` (chargen.js,
decode.onnx, chargen.json, vocab.json, onnxruntime-web's files). When the version the playground
shows has one, the server serves exactly those files at `/web/<version>/…` (no listing, nothing else
of the base path), and the page runs the model in the browser with them. Standard library and the
contract only: the server still imports no model or export code.
"""

from __future__ import annotations

import json
from pathlib import Path

from keras_chargen import contract
from keras_chargen.serving.errors import RequestError

WEB_DIR = "web"  # the format folder under the base path (`keras_chargen.export.layout`)
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",  # WebAssembly.instantiateStreaming needs it
    ".onnx": "application/octet-stream",
}


def web_folder(base: Path, version: int) -> Path | None:
    """`base/web/<version>` if it holds a web export (its manifest and its model), else None."""
    folder = base / WEB_DIR / str(version)
    manifest = folder / contract.WEB_MANIFEST
    if not manifest.is_file():
        return None
    return folder if (folder / _model_file(manifest)).is_file() else None


def _model_file(manifest: Path) -> str:
    try:
        return str(json.loads(manifest.read_text(encoding="utf-8")).get("model", contract.WEB_DECODE))
    except (OSError, ValueError, AttributeError):
        return contract.WEB_DECODE


def served_names(folder: Path) -> set[str]:
    """The files of a web export the server hands out (relative paths)."""
    runtime = {f"{contract.WEB_RUNTIME_DIR}/{name}" for name in contract.WEB_RUNTIME_FILES}
    fixed = {contract.WEB_PAGE, contract.WEB_MODULE, contract.WEB_MANIFEST, contract.VOCAB_FILE}
    return fixed | runtime | {_model_file(folder / contract.WEB_MANIFEST)}


def web_file(base: Path, version: int, path: str) -> tuple[Path, str]:
    """The file at `/web/<version>/<path>` and its media type; `RequestError` 404 for anything else."""
    folder = web_folder(base, version)
    if folder is None or path not in served_names(folder) or not (folder / path).is_file():
        raise RequestError(404, f"Not found: /{WEB_DIR}/{version}/{path}")
    return folder / path, MEDIA_TYPES.get(Path(path).suffix, "application/octet-stream")

"""The web export: a static folder that runs the generator in the browser on onnxruntime-web (WebAssembly).

    OUT/web/<version>/
        index.html      the page: prompt, every setting, seed, Stop; the text appears as it is produced
        chargen.js      the ES module: `load(baseUrl)` → a generator with `generate(...)` and `stream(...)`
        decode.onnx     `contract.DECODE`: a stream on ids, a chunk of tokens per call (the state goes back in)
        chargen.json    level, states, settings and their rules, start/marker ids, the file names
        vocab.json      the vocabulary
        ort/            onnxruntime-web's WebAssembly build (`contract.WEB_RUNTIME_FILES`)

The runtime files come from the npm package pinned in the repository's `web/package.json` (`npm ci
--prefix web` installs it into `web/node_modules`), or from the folder named by `KERAS_CHARGEN_ORT_DIR`
(for an installed package without the repository: any folder holding the files of onnxruntime-web's
`dist/` at the pinned version). Nothing is fetched at export time or by the page: the folder works offline.

`decode.onnx` is the `IdGenerator.decode` graph converted by tf2onnx, like `generate.onnx`: the same
prime, decode loop and counter-based draws, so the page's text equals `serving_default`'s `generated`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from keras_chargen import contract
from keras_chargen.errors import ChargenError
from keras_chargen.generation import CharGenerator
from keras_chargen.settings import MAX_NEW_CHARS, SETTINGS
from keras_chargen.tokenizer import NO_SPACE_AFTER, NO_SPACE_BEFORE

ORT_PACKAGE = "onnxruntime-web"
RUNTIME_ENV = "KERAS_CHARGEN_ORT_DIR"  # a folder holding `contract.WEB_RUNTIME_FILES` (offline installs)
REPO_WEB = Path(__file__).resolve().parents[2] / "web"  # the repository's npm project (package.json, lock file)
NPM_HINT = f"run `npm ci --prefix {REPO_WEB}` (or set {RUNTIME_ENV} to a folder holding onnxruntime-web's dist files)"
# chunk sizes of a stream: small first (the first characters appear at once), then up to the largest
CHUNKS = (1, 4, 16, 64)


def pinned_version(web_dir: Path = REPO_WEB) -> str | None:
    """The onnxruntime-web version pinned in `web/package.json`, None without the repository."""
    try:
        return str(json.loads((web_dir / "package.json").read_text(encoding="utf-8"))["dependencies"][ORT_PACKAGE])
    except (OSError, KeyError, ValueError):
        return None


def runtime_dir(web_dir: Path = REPO_WEB, environ: dict[str, str] | None = None) -> tuple[Path, str]:
    """The folder holding onnxruntime-web's files and its version; a one-line `ChargenError` naming `npm ci` if
    they are missing or not the pinned version."""
    environ = dict(os.environ) if environ is None else environ
    if environ.get(RUNTIME_ENV):
        folder = Path(environ[RUNTIME_ENV])
        version = _package_version(folder.parent) or pinned_version(web_dir) or "unknown"
    else:
        package = web_dir / "node_modules" / ORT_PACKAGE
        folder, version = package / "dist", _package_version(package) or ""
        pinned = pinned_version(web_dir)
        if version and pinned and version != pinned:
            raise ChargenError(f"{package} is version {version}, not the pinned {pinned}: {NPM_HINT}")
    missing = [name for name in contract.WEB_RUNTIME_FILES if not (folder / name).is_file()]
    if missing:
        raise ChargenError(f"the onnxruntime-web runtime is missing ({folder / missing[0]} not found): {NPM_HINT}")
    return folder, version


def _package_version(package: Path) -> str | None:
    try:
        return str(json.loads((package / "package.json").read_text(encoding="utf-8"))["version"])
    except (OSError, KeyError, ValueError):
        return None


def manifest(generator: CharGenerator, ort_version: str, model_file: str = contract.WEB_DECODE) -> dict[str, Any]:
    """`chargen.json`: what chargen.js needs besides the vocabulary (the rules come from `settings.SETTINGS`)."""
    return {
        "format": 1,
        "model": model_file,
        "vocabulary": contract.VOCAB_FILE,
        "runtime": {"dir": contract.WEB_RUNTIME_DIR, "module": contract.WEB_RUNTIME_FILES[0], "version": ort_version},
        "level": generator.level,
        "lowercase": generator.lowercase,
        "vocab_size": generator.vocab_size,
        "start_id": generator.start_id,
        "document_start": generator.document_start,
        "document_end": generator.document_end,
        "no_space_before": sorted(NO_SPACE_BEFORE),
        "no_space_after": sorted(NO_SPACE_AFTER),
        "states": [{"name": name, "size": size} for name, size in generator.state_specs],
        "inputs": contract.DECODE.input_names,
        "outputs": {name: contract.onnx_output_name(contract.DECODE, name) for name in contract.DECODE.output_names},
        "max_new_chars": MAX_NEW_CHARS,
        "chunks": list(CHUNKS),
        "settings": [
            {
                "name": s.name,
                "dtype": s.dtype,
                "off": s.off,
                "default": s.default,
                "rule": s.rule,
                "meaning": s.meaning,
                "low": s.low,
                "high": s.high,
                "low_open": s.low_open,
                "finite": s.finite,
            }
            for s in SETTINGS
        ],
    }


def convert_decode(generator: CharGenerator, vocab_file: str | Path) -> Any:
    """The `decode` graph as an `onnx.ModelProto` (vocabulary and state names in its metadata, as ONNX_FILES)."""
    from keras_chargen.export.id_generator import IdGenerator
    from keras_chargen.export.onnx import convert_signature, onnx_metadata

    ids = IdGenerator(generator, onnx_names=True)
    with tempfile.TemporaryDirectory() as tmp:
        ids.archive(("decode",)).write_out(tmp, verbose=False)
        return convert_signature(tmp, "decode", onnx_metadata(ids, vocab_file))


def page_file(name: str) -> str:
    """The text of one of the page's source files (`keras_chargen/web/`)."""
    return resources.files("keras_chargen.web").joinpath(name).read_text(encoding="utf-8")


def write_web(generator: CharGenerator, directory: str | Path, vocab_file: str | Path) -> list[Path]:
    """Write the static folder (see the module docstring) into the (existing, empty) `directory`."""
    folder, version = runtime_dir()  # before the slow conversion: a missing runtime fails at once
    directory = Path(directory)
    (directory / contract.WEB_DECODE).write_bytes(convert_decode(generator, vocab_file).SerializeToString())
    shutil.copyfile(vocab_file, directory / contract.VOCAB_FILE)
    (directory / contract.WEB_MANIFEST).write_text(
        json.dumps(manifest(generator, version), ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    for name in (contract.WEB_MODULE, contract.WEB_PAGE):
        (directory / name).write_text(page_file(name), encoding="utf-8")
    runtime = directory / contract.WEB_RUNTIME_DIR
    runtime.mkdir()
    for name in contract.WEB_RUNTIME_FILES:
        shutil.copyfile(folder / name, runtime / name)
    return sorted(p for p in directory.rglob("*") if p.is_file())

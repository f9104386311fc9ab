"""What a model directory was trained on: the corpus's files, sizes and a content hash, in `trained_on.json`.

Rerunning `train` into a directory resumes it; with a different corpus that would continue the old
progress over other data with the old vocabulary (new characters as unknown ids). The record lets
`train` refuse that before it changes anything, and say how to fine-tune instead.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from keras_chargen.errors import ChargenError
from keras_chargen.io import atomic_write_text

RECORD_FILE = "trained_on.json"


def fingerprint(source, documents: bool = False) -> dict[str, Any]:
    """The record of `source` as training reads it: description, files and sizes, characters, SHA-256 of the text.

    The hash is over the decoded text (after `--encoding-errors`), so it is the corpus as prepared.
    """
    digest, chars = hashlib.sha256(), 0
    for chunk in source.chunks():
        digest.update(chunk.encode("utf-8", "surrogatepass"))
        chars += len(chunk)
    files = [{"path": str(p), "bytes": Path(p).stat().st_size} for p in getattr(source, "paths", ())]
    return {
        "source": source.describe(),
        "files": files,
        "characters": chars,
        "documents": documents,
        "sha256": digest.hexdigest(),
    }


def load_record(model_dir: Path) -> dict[str, Any] | None:
    """The saved record, None if the directory has none (a new directory, or one from an older version)."""
    path = Path(model_dir) / RECORD_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ChargenError(f"damaged corpus record {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict) or "sha256" not in data:
        raise ChargenError(f"damaged corpus record {path}: no sha256")
    return data


def check_same_corpus(model_dir: Path, record: dict[str, Any]) -> None:
    """Raise `ChargenError` if `model_dir` was trained on another corpus than `record`."""
    saved = load_record(model_dir)
    if saved is None or saved["sha256"] == record["sha256"]:
        return
    raise ChargenError(
        f"{model_dir} was trained on another corpus ({saved.get('source')}, {saved.get('characters')} characters; "
        f"now {record['source']}, {record['characters']}); to train on the new text starting from this model, "
        f"use --init-from {model_dir} with a fresh --out"
    )


def save_record(model_dir: Path, record: dict[str, Any]) -> None:
    atomic_write_text(Path(model_dir) / RECORD_FILE, json.dumps(record, indent=2) + "\n")

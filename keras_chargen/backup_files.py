"""The resumable backup (`MODEL_DIR/backup/`): reading it with one clear error per damaged file, and
writing its weights file so that a full disk is an error, not a crash.

A backup file can be damaged by a copy cut short or a hand edit. Each reader turns whatever the
file's library raises into a `ChargenError` that names the file and the way out:
`--restart-from-best` (keep `model.keras`, drop the backup) or a fresh `--out`.

The weights file is built in memory and written by Python: when HDF5 itself meets a full disk it
leaves a half-closed file behind, and HDF5's exit handler then crashes the process (a segmentation
fault in `H5_term_library` → `H5G_close`), after the error was already reported.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_chargen.errors import ChargenError

PROGRESS_FIELDS = {"epoch": int, "step": int, "best_val_loss": float, "elapsed_seconds": float, "stopped_early": bool}


def damaged(path: Path, why: str) -> ChargenError:
    """The one-line error for a damaged backup file."""
    return ChargenError(
        f"damaged backup file {path} ({why}); rerun with --restart-from-best to continue from "
        f"{path.parent.parent / 'model.keras'} without the backup, or train into a fresh --out"
    )


def read_progress(path: Path) -> dict[str, Any]:
    """The fields of `progress.json`, checked: names, types and non-negative counters."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise damaged(path, str(err).splitlines()[0]) from None
    if not isinstance(data, dict) or set(data) != set(PROGRESS_FIELDS):
        raise damaged(path, f"expected the fields {', '.join(PROGRESS_FIELDS)}")
    for name, kind in PROGRESS_FIELDS.items():
        value = data[name]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = isinstance(value, bool) if kind is bool else number
        if kind is int:
            ok = ok and isinstance(value, int) and value >= 0
        if kind is float:
            ok = ok and not math.isnan(value) and value >= 0
        if not ok:
            raise damaged(path, f"{name} = {value!r}")
    return data


def read_states(path: Path) -> list[np.ndarray]:
    """The carried recurrent states saved in `rnn_states.npz`, in order."""
    try:
        with np.load(path) as saved:
            return [np.asarray(saved[f"arr_{i}"], np.float32) for i in range(len(saved.files))]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise damaged(path, str(err).splitlines()[0] if str(err) else type(err).__name__) from None


def check_states(path: Path, states: list[np.ndarray], shapes: Sequence[Sequence[int]]) -> None:
    """Raise the damaged-file error unless `states` match the model's state shapes."""
    got = [tuple(s.shape) for s in states]
    if got != [tuple(s) for s in shapes]:
        raise damaged(path, f"state shapes {got} do not match the model's {[tuple(s) for s in shapes]}")


def weights_bytes(model) -> bytes:
    """The `.weights.h5` file that `model.save_weights` writes (weights and optimizer state), built in memory
    with the same Keras store and state walk, so `model.load_weights` reads it back."""
    import io

    from keras.src.saving import saving_lib

    buffer = io.BytesIO()
    store = saving_lib.H5IOStore(buffer, mode="w")
    saving_lib._save_state(model, store, None, "", set())  # what `save_weights_only` does with a path
    store.close()
    return buffer.getvalue()


def write_weights(model, path: Path) -> None:
    """Write `model`'s weights and optimizer state to `path` atomically; a full disk is a one-line error
    naming `path`, and the previous file stays as it was."""
    from keras_chargen.io import atomic_path

    try:
        data = weights_bytes(model)
    except (ImportError, AttributeError, TypeError):  # a Keras without this store: let HDF5 write the file
        with atomic_path(path, suffix=".weights.h5") as tmp:
            model.save_weights(tmp)
        return
    with atomic_path(path, suffix=".weights.h5") as tmp:
        tmp.write_bytes(data)


def load_weights(model, path: Path) -> None:
    """`model.load_weights(path)` (weights and optimizer state), a damaged file as one line."""
    if not path.is_file():
        raise damaged(path, "missing")
    try:
        model.load_weights(path)
    except Exception as err:  # h5py OSError, ValueError on mismatched shapes, KeyError on missing groups …
        raise damaged(path, (str(err).splitlines() or [type(err).__name__])[0][:200]) from None

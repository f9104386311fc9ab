"""Atomic file writes (a temp file in the same directory, then `os.replace`), write errors as one line,
and removing the temp files of killed writers."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from keras_chargen.errors import write_error
from keras_chargen.lock import LOCK_FILE, owner_tag, tag_is_stale

# A temp name of `atomic_path` or `temp_name` (`.NAME.TAG.XXXXXXXX.tmp…`, `….old`), with or without the
# owner tag (names written before the tag existed have none).
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.(tmp|old)")
UNTAGGED_LOCK_TEMP_SECONDS = 60  # a lock's temp file lives for milliseconds while it is being taken


def temp_name(name: str) -> str:
    """The prefix of a temp file or folder for `name` (mkstemp/mkdtemp add 8 random characters and the
    suffix): `.NAME.PID-START@HOST.`, so that `remove_stale_temps` can tell whether its writer still runs."""
    return f".{name}.{owner_tag()}."


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`.

    If the body raises (or the process dies), `path` keeps its previous content and the temp file
    is removed (or, after a kill, left with a hidden `.NAME.…tmp` name that nothing reads and that the
    next write of the same kind removes: `remove_stale_temps`). An `OSError` of the write itself (a full
    disk, a read-only folder) becomes a one-line `ChargenError` naming `path` and the cause.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_name(path.name), suffix=f".tmp{suffix}", dir=path.parent)
    except OSError as err:
        raise write_error(path, err) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            os.chmod(tmp_path, default_mode())  # mkstemp makes 0600 files; others (TF Serving, a team) must read them
            os.replace(tmp_path, path)
        except OSError as err:
            if err.filename not in (None, tmp, str(path)):  # another file's problem (e.g. reading the corpus)
                raise
            raise write_error(path, err) from None
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink()


def default_mode(directory: bool = False) -> int:
    """Permissions a plain `open()` / `mkdir()` would give under the current umask (temp files get 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an `OSError` raised in the block (an append to `path` on a full disk …) into a one-line `ChargenError`."""
    try:
        yield
    except OSError as err:
        raise write_error(path, err) from None


def drop_partial_line(path: str | Path) -> None:
    """Cut an append-only text file (a CSV log) back to its last complete line: an append cut short by a
    full disk or a kill must not run into the next run's first row."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    if data and not data.endswith(b"\n"):
        with writing(path), open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def is_temp(name: str) -> bool:
    """Whether `name` is a temp file or folder name of `atomic_path`, `staged_dirs` or the lock."""
    return bool(_TEMP_NAME.match(name))


def remove_stale_temps(directory: str | Path, recursive: bool = True, locked: bool = False) -> list[Path]:
    """Remove the temp files and folders that killed writers left in `directory`; returns what was removed.

    A temp name carrying the owner tag of a process of this host that has ended is removed; one of a
    live process never is. With `locked` (the caller holds `directory`'s writer lock, so no other
    writer runs there) temp names without a tag (written before tags existed) go too, except a lock's
    own temp file younger than a minute (another process may be taking the lock this instant).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    entries = directory.rglob(".*") if recursive else directory.glob(".*")
    for entry in sorted(entries, key=lambda p: len(p.parts)):  # a stale folder before what is inside it
        if not is_temp(entry.name) or any(parent in removed for parent in entry.parents):
            continue
        if not _removable(entry, locked):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def _removable(entry: Path, locked: bool) -> bool:
    if tag_is_stale(entry.name):
        return True
    if not locked or "@" in entry.name:  # tagged (by a live process) or not ours to judge
        return False
    if entry.name.startswith(f".{LOCK_FILE}."):
        with contextlib.suppress(OSError):
            return time.time() - entry.stat().st_mtime > UNTAGGED_LOCK_TEMP_SECONDS
        return False
    return True

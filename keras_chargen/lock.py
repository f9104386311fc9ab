"""`DirectoryLock`: one writer per model directory, with stale locks (a killed writer's) taken over.

The lock is a file holding the writer's pid, host and process start time, created atomically (a
hard link of a complete temporary file, which fails if the lock exists). A lock whose process is
gone (same host, no such pid, or a pid reused by a process started later) is stale and taken over;
a live one makes a second writer a one-line `ChargenError`. The lock is released when the `with`
block ends, however it ends (an exception, Ctrl-C); a killed writer leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
from pathlib import Path
from types import TracebackType

from keras_chargen.errors import ChargenError, write_error

LOCK_FILE = "train.lock"


def process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux `/proc`), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 (starttime), counted after the command name


def owner_tag() -> str:
    """`PID-STARTTIME@HOST` of this process (dots in the host name as `_`): put in the names of temporary
    files and folders, so that a later run tells those of a killed writer (removable) from those of a
    live one (`tag_is_stale`)."""
    return f"{os.getpid()}-{process_start(os.getpid()) or 0}@{_host()}"


def tag_is_stale(name: str) -> bool:
    """Whether a file or folder name holding an `owner_tag` was made by a process of this host that has ended
    (its pid is gone, or now belongs to a process started later). False when the name holds no tag."""
    match = _TAG.search(name)
    if match is None or match[3] != _host():
        return False
    pid, started = int(match[1]), match[2]
    if not pid_alive(pid):
        return True
    return started != "0" and process_start(pid) not in (None, started)


_TAG = re.compile(r"\.(\d+)-(\d+)@([^./]+)\.")


def _host() -> str:
    return socket.gethostname().replace(".", "_")


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class DirectoryLock:
    """Hold `directory/train.lock` while a `with` block runs.

    Args:
        directory: str | Path, the model directory (created if needed).
        what: str, the command named in the error. Default "train".

    Example:
    >>> with DirectoryLock("models/tiny"):  # doctest: +SKIP
    ...     train(...)
    """

    def __init__(self, directory: str | Path, what: str = "train") -> None:
        self.path = Path(directory) / LOCK_FILE
        self.what = what
        self.held = False
        self.created = False  # whether acquiring created the directory (removed again if left empty)

    def owner(self) -> dict | None:
        """The current lock's content, None if there is no lock; {} if it cannot be read."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def is_stale(self, owner: dict) -> bool:
        """Whether the lock's writer is certainly gone (same host, and its process has ended)."""
        if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
            return False
        pid = owner["pid"]
        if not pid_alive(pid):
            return True
        started = owner.get("started")
        return started is not None and process_start(pid) not in (None, started)  # the pid was reused

    def check(self) -> None:
        """`ChargenError` if a live writer holds the lock now (a quick look that changes nothing; `acquire`
        decides). Lets a second `train` answer before TensorFlow loads."""
        owner = self.owner()
        if owner is not None and (not owner or not self.is_stale(owner)):
            raise self._busy(owner)

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; `ChargenError` if another live writer holds it."""
        self.created = not self.path.parent.exists()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{LOCK_FILE}.{owner_tag()}.", suffix=".tmp", dir=self.path.parent)
        except OSError as err:
            raise write_error(self.path, err) from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": process_start(os.getpid())}
        try:
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(me, handle)
            except OSError as err:  # a full disk
                raise write_error(self.path, err) from None
            for _ in range(3):
                try:
                    os.link(tmp, self.path)  # atomic: fails if the lock exists
                    self.held = True
                    return
                except FileExistsError:
                    owner = self.owner()
                    if owner is None:
                        continue  # released meanwhile: try again
                    if not owner or not self.is_stale(owner):
                        raise self._busy(owner) from None
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)  # a stale lock: take it over (another taker may race; link decides)
            raise self._busy(self.owner() or {})
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _busy(self, owner: dict | None) -> ChargenError:
        who = f"process {owner['pid']} on {owner['host']}" if owner and "pid" in owner else "another process"
        return ChargenError(
            f"{self.path.parent} is in use by {who} (lock {self.path}); wait for it to finish, or delete the lock "
            f"file if no {self.what} is running there"
        )

    def release(self) -> None:
        """Remove the lock if this object holds it (and the directory, if acquiring created it and it is empty)."""
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.held = False
            if self.created:  # a run that failed before writing anything leaves no empty directory behind
                with contextlib.suppress(OSError):
                    self.path.parent.rmdir()

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()

"""The one exception type users see: a clear, one-line message, no traceback."""

import errno
import os

# errno values that mean "cannot write there" (a full disk or quota, a file size limit, a read-only filesystem)
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


class ChargenError(Exception):
    """A user-facing error (bad input, missing files, invalid settings).

    The CLI prints `error: <message>` and exits with status 2; the Python API
    raises it so callers can catch one type.
    """


def os_reason(err: OSError) -> str:
    """The system's reason for an `OSError` (`No space left on device`), one line."""
    return os.strerror(err.errno) if err.errno else (str(err).splitlines() or [type(err).__name__])[0]


def describe_os_error(err: OSError, path: object = None) -> str:
    """`cannot write PATH: REASON` for a write to `path` that failed; without `path`, `FILE: REASON` (the
    error's own file name) or the reason alone."""
    if path is not None:
        return f"cannot write {path}: {os_reason(err)}"
    return f"{err.filename}: {os_reason(err)}" if err.filename is not None else os_reason(err)


class WriteError(ChargenError):
    """A file or folder could not be written (a full disk, a read-only folder …); the message names it."""


def write_error(path: object, err: OSError) -> WriteError:
    """The one-line error for a file or folder that could not be written."""
    return WriteError(describe_os_error(err, path))

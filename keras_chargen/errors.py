"""The one exception type users see: a clear, one-line message, no traceback."""


class ChargenError(Exception):
    """A user-facing error (bad input, missing files, invalid settings).

    The CLI prints `error: <message>` and exits with status 2; the Python API
    raises it so callers can catch one type.
    """

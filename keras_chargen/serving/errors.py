"""`RequestError`: a request the server answers with an HTTP error status and `{"error": message}`."""

from __future__ import annotations

import re

import tensorflow as tf

from keras_chargen.errors import ChargenError

# TensorFlow Serving's mapping of canonical error codes to HTTP statuses (http_server.cc).
TF_CODE_TO_HTTP = {
    tf.errors.CANCELLED: 499,
    tf.errors.UNKNOWN: 500,
    tf.errors.INVALID_ARGUMENT: 400,
    tf.errors.DEADLINE_EXCEEDED: 504,
    tf.errors.NOT_FOUND: 404,
    tf.errors.ALREADY_EXISTS: 409,
    tf.errors.PERMISSION_DENIED: 403,
    tf.errors.RESOURCE_EXHAUSTED: 429,
    tf.errors.FAILED_PRECONDITION: 400,
    tf.errors.ABORTED: 409,
    tf.errors.OUT_OF_RANGE: 400,
    tf.errors.UNIMPLEMENTED: 501,
    tf.errors.INTERNAL: 500,
    tf.errors.UNAVAILABLE: 503,
    tf.errors.DATA_LOSS: 500,
    tf.errors.UNAUTHENTICATED: 401,
}

_ASSERTION = re.compile(r"assertion failed: \[([^\]]*)\]")


class RequestError(ChargenError):
    """An error the client caused (4xx) or the server met (5xx), sent back as `{"error": message}`.

    Args:
        status: int, the HTTP status code.
        message: str, one clear sentence; it is the whole `error` value of the response.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def from_tf_error(err: tf.errors.OpError) -> RequestError:
    """A `RequestError` for a TensorFlow runtime error, with TF Serving's status and a readable message.

    In-graph assertions (`temperature must be >= 0`) come back as their own message; other
    errors keep their first line without the graph-node trace.
    """
    text = err.message or str(err)
    match = _ASSERTION.search(text)
    if match:
        message = match.group(1)
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        lines = [
            line
            for line in lines
            if not line.startswith(("[[", "Detected at node", "<stack traces", "Graph execution error"))
        ]
        message = re.sub(r"\s*\[\[.*$|\s*\[Op:[^\]]*\]", "", lines[0] if lines else text)
    return RequestError(TF_CODE_TO_HTTP.get(err.error_code, 500), message)

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

# The gRPC status (grpc.StatusCode name) of each HTTP status this server answers with.
HTTP_TO_GRPC = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_ASSERTION = re.compile(r"assertion failed: \[([^\]]*)\]")


class RequestError(ChargenError):
    """An error the client caused (4xx) or the server met (5xx), sent back as `{"error": message}`.

    Args:
        status: int, the HTTP status code.
        message: str, one clear sentence; it is the whole `error` value of the response.
        grpc_code: str | None, the gRPC status code name for the same error; default: the one
            `HTTP_TO_GRPC` gives for `status`.
    """

    def __init__(self, status: int, message: str, grpc_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.grpc_code = grpc_code or HTTP_TO_GRPC.get(status, "UNKNOWN" if status < 500 else "INTERNAL")


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

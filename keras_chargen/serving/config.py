"""`ServingConfig`: the caps the server enforces before any TensorFlow call, and its concurrency."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from keras_chargen.errors import ChargenError
from keras_chargen.settings import MAX_NEW_CHARS


def _field(default: Any, help: str) -> Any:
    """A dataclass field whose help text is shown by `keras-chargen serve --help`."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    """Limits and concurrency settings of the local TF-Serving-compatible server.

    Every cap is checked on the request, before TensorFlow runs, and answered with a 4xx and
    `{"error": ...}`; the model's own in-graph checks stay as a second line of defence.

    Example:
    >>> ServingConfig(max_new_chars=500).max_new_chars
    500
    """

    max_body_bytes: int = _field(1 << 20, "request bodies above this many bytes get 413")
    max_prompt_chars: int = _field(4096, "characters per string input (prompt); above: 400")
    max_new_chars: int = _field(2000, "cap on max_new_chars per row (the model allows 100000); above: 400")
    max_batch: int = _field(64, "rows (instances) per predict request; above: 400")
    max_streams: int = _field(32, "concurrent :stream requests; above: 503")
    workers: int = _field(2, "model calls running at once, each on its own thread")
    batching: bool = _field(True, "merge concurrent serving_default requests with random seeds into one call")
    max_merged_rows: int = _field(128, "rows per merged (server-side batched) call")
    max_queued_rows: int = _field(4096, "rows waiting for a worker; above: 503")
    shutdown_timeout: float = _field(
        30.0, "seconds SIGTERM waits for requests in flight; then they get 503 and streams an error event"
    )
    poll_seconds: float = _field(
        1.0, "seconds between scans of the base path for new or removed versions (0: scan once at start-up)"
    )
    header_timeout: float = _field(10.0, "seconds a connection may take to send a request's headers; then 408")
    body_timeout: float = _field(30.0, "seconds a request may take to send its body; then 408")
    idle_timeout: float = _field(10.0, "seconds an idle keep-alive connection stays open")
    max_connections: int = _field(1000, "open connections (REST and gRPC each); new ones above it are closed")

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in ("int", int) and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ChargenError(f"{field.name} must be a positive integer; got {value!r}")
        if self.max_new_chars > MAX_NEW_CHARS:
            raise ChargenError(
                f"max_new_chars must be <= {MAX_NEW_CHARS} (the exported model's own cap); got {self.max_new_chars}"
            )
        if not isinstance(self.batching, bool):
            raise ChargenError(f"batching must be True or False; got {self.batching!r}")
        for name in ("shutdown_timeout", "poll_seconds", "header_timeout", "body_timeout", "idle_timeout"):
            value = getattr(self, name)
            zero_ok = name == "poll_seconds"
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or not (value >= 0 if zero_ok else value > 0)
            ):
                raise ChargenError(f"{name} must be a number of seconds {'>=' if zero_ok else '>'} 0; got {value!r}")

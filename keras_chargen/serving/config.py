"""`ServingConfig`: the caps the server enforces before any TensorFlow call, and its concurrency."""

from __future__ import annotations

import dataclasses
from typing import Any

from keras_chargen.errors import ChargenError
from keras_chargen.limits import MAX_NEW_CHARS


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
    shutdown_timeout: float = _field(30.0, "seconds SIGTERM waits for requests in flight before cancelling them")

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
        if (
            isinstance(self.shutdown_timeout, bool)
            or not isinstance(self.shutdown_timeout, (int, float))
            or not self.shutdown_timeout > 0
        ):
            raise ChargenError(f"shutdown_timeout must be a number of seconds > 0; got {self.shutdown_timeout!r}")

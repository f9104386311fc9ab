"""Cancellable model calls: a running signature call stops when its client goes away or the server shuts down.

TensorFlow cancels a running function through a `CancellationManager` (the `tf.while_loop` of the
generator stops at its next iteration, answering `CancelledError`). TF picks the manager up from a
module-wide slot, which two worker threads would overwrite; `cancellable()` keeps one per thread.
Without that TF API (another TF release), calls simply run to the end.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

try:
    from tensorflow.python.eager import cancellation as _tf_cancellation

    CancellationManager = _tf_cancellation.CancellationManager
except (ImportError, AttributeError):  # pragma: no cover - another TF release
    _tf_cancellation = None
    CancellationManager = None

_local = threading.local()
_install_lock = threading.Lock()


def _install() -> bool:
    """Make TF's cancellation slot per thread (once per process); False if this TF has no such slot."""
    if _tf_cancellation is None or not callable(getattr(_tf_cancellation, "context", None)):
        return False
    with _install_lock:
        if not getattr(_tf_cancellation, "_per_thread", False):
            shared = _tf_cancellation.context
            _tf_cancellation.context = lambda: getattr(_local, "manager", None) or shared()
            _tf_cancellation._per_thread = True
    return True


class Canceller:
    """A handle to cancel one model call from any thread (a no-op where TF offers no cancellation)."""

    def __init__(self) -> None:
        self.manager = CancellationManager() if CancellationManager is not None and _install() else None
        self.cancelled = False
        self._callbacks: list[Callable[[], None]] = []

    def add_callback(self, callback: Callable[[], None]) -> None:
        """Call `callback()` on `cancel()` (at once if cancelled already), e.g. to wake a thread waiting for work."""
        self._callbacks.append(callback)
        if self.cancelled:
            callback()

    def cancel(self) -> None:
        self.cancelled = True
        if self.manager is not None:
            self.manager.start_cancel()
        for callback in self._callbacks:
            callback()


@contextlib.contextmanager
def cancellable(canceller: Canceller | None) -> Iterator[None]:
    """Run the TF calls inside with `canceller`'s manager (this thread only)."""
    if canceller is None or canceller.manager is None:
        yield
        return
    _local.manager = canceller.manager
    try:
        yield
    finally:
        _local.manager = None

"""`ConnectionGuard`: timeouts and a cap on the REST server's connections, so stalled clients cannot lock it up.

Every connection is in one phase at a time, each with its own clock:

- `headers`: from the connection's first byte (or from its opening) until a request's headers are
  complete: `header_timeout`, then a 408 (when some bytes came) and the connection is closed;
- `body`: until the request body has arrived: `body_timeout`, then a JSON 408 and close;
- handling: no clock (a long generation is not a stall);
- `idle`: a keep-alive connection between requests: `idle_timeout`, then it is closed.

Connections above `max_connections` get a JSON 503 and are closed at once. Each condition is logged
once (the first time it happens), not per connection; the counts are logged at shutdown. The guard
wraps uvicorn's protocol (for the phases it cannot see from inside the app: headers, idle, the cap)
and the ASGI app (for the body and the end of each response).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import Callable
from typing import Any

from keras_chargen.serving.config import ServingConfig
from keras_chargen.serving.errors import RequestError

logger = logging.getLogger("keras_chargen.serving")

HEADERS, BODY, BUSY, IDLE = "headers", "body", "busy", "idle"
_EXPLAIN = {
    HEADERS: "closing connections that send no complete request headers within {t:g} s (--header-timeout)",
    BODY: "answering 408 to requests whose body does not arrive within {t:g} s (--body-timeout)",
    IDLE: "closing keep-alive connections idle for {t:g} s (--idle-timeout)",
    "cap": "refusing connections above the cap of {t} open connections (--max-connections) with 503",
    "accept": "accept() failed: {t}; the server is out of file descriptors and retries in a second",
}


def raw_json_response(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 response `{"error": message}` that closes the connection (written below h11)."""
    body = json.dumps({"error": message}).encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class ConnectionGuard:
    """The REST server's connection limits; one per server.

    Args:
        config: ServingConfig, `header_timeout`, `body_timeout`, `idle_timeout` and `max_connections`.

    Example:
    >>> from uvicorn.protocols.http.h11_impl import H11Protocol
    >>> guard = ConnectionGuard(ServingConfig(header_timeout=5.0))
    >>> # uvicorn.Config(guard.middleware(app), http=guard.protocol_factory(H11Protocol))
    >>> guard.summary() is None  # nothing refused yet
    True
    """

    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self._open: dict[tuple, _GuardedProtocol] = {}
        self._logged: set[str] = set()
        self.counts: collections.Counter[str] = collections.Counter()

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def note(self, condition: str, detail: Any) -> None:
        """Count one occurrence of `condition`; log it the first time only."""
        self.counts[condition] += 1
        if condition not in self._logged:
            self._logged.add(condition)
            logger.warning(_EXPLAIN[condition].format(t=detail) + "; further ones are counted, not logged")

    def summary(self) -> str | None:
        """One line with the count of each condition met, or None if none was."""
        if not self.counts:
            return None
        return "connection limits applied: " + ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))

    def protocol_factory(self, inner: Callable[..., asyncio.Protocol]) -> Callable[..., asyncio.Protocol]:
        """Wrap uvicorn's protocol factory (`uvicorn.Config(http=...)` takes any callable)."""

        def create(**kwargs: Any) -> asyncio.Protocol:
            return _GuardedProtocol(self, lambda: inner(**kwargs))

        return create

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fold the event loop's accept() failures (out of file descriptors) into one log line."""
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if "socket.accept() out of system resource" in str(context.get("message", "")):
                self.note("accept", context.get("exception"))
                return
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)

    def middleware(self, app: Callable) -> Callable:
        """ASGI middleware: the body clock and the phase changes the protocol cannot see."""

        async def guarded(scope: dict, receive: Callable, send: Callable) -> None:
            client = scope.get("client")
            connection = self._open.get(tuple(client)) if scope["type"] == "http" and client else None
            if connection is None:
                await app(scope, receive, send)
                return
            headers = dict(scope["headers"])
            has_body = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers
            connection.request_started(has_body)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.config.body_timeout
            body_done = not has_body

            async def receive_in_time() -> dict:
                nonlocal body_done
                if body_done:
                    return await receive()
                try:
                    message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
                except asyncio.TimeoutError:
                    self.note(BODY, self.config.body_timeout)
                    raise RequestError(
                        408,
                        f"the request body did not arrive within {self.config.body_timeout:g} s "
                        "(this server's body timeout)",
                    ) from None
                if message["type"] != "http.request" or not message.get("more_body", False):
                    body_done = True
                    connection.body_done()
                return message

            async def send_and_track(message: dict) -> None:
                await send(message)
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    connection.response_done()

            await app(scope, receive_in_time, send_and_track)

        return guarded


class _GuardedProtocol(asyncio.Protocol):
    """uvicorn's protocol for one connection, with the phase clocks and the connection cap around it."""

    def __init__(self, guard: ConnectionGuard, make_inner: Callable[[], asyncio.Protocol]) -> None:
        self.guard = guard
        self._make_inner = make_inner
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.key: tuple | None = None
        self.phase = HEADERS
        self.received = False  # bytes arrived in the current headers phase
        self.refused = False  # above the cap: answered 503, closing
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        cap = self.guard.config.max_connections
        if self.guard.open_connections >= cap:
            # answer 503 and half-close; the request the client sends meanwhile is read and dropped (closing
            # at once would reset the connection under the client's request, and it could miss the 503)
            self.guard.note("cap", cap)
            self.refused = True
            message = f"too many open connections (cap {cap}); retry later"
            transport.write(raw_json_response(503, "Service Unavailable", message))  # type: ignore[attr-defined]
            transport.write_eof()  # type: ignore[attr-defined]
            asyncio.get_running_loop().call_later(1.0, transport.close)
            return
        peer = transport.get_extra_info("peername")
        self.key = tuple(peer[:2]) if isinstance(peer, tuple) else None
        if self.key is not None:
            self.guard._open[self.key] = self
        self.inner = self._make_inner()
        self.inner.connection_made(transport)
        self._arm(HEADERS, self.guard.config.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        if self.phase == IDLE:
            self._arm(HEADERS, self.guard.config.header_timeout)
        if self.phase == HEADERS:
            self.received = True
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.refused:
            if self.transport is not None:
                self.transport.close()
            return None
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.key is not None and self.guard._open.get(self.key) is self:
            del self.guard._open[self.key]
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # phase changes, called by the middleware
    def request_started(self, has_body: bool) -> None:
        self._disarm()
        self.phase = BODY if has_body else BUSY  # the body clock runs in the middleware

    def body_done(self) -> None:
        self.phase = BUSY

    def response_done(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._arm(IDLE, self.guard.config.idle_timeout)

    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self.phase = phase
        self.received = False
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire, phase, seconds)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, phase: str, seconds: float) -> None:
        self._timer = None
        if self.phase != phase or self.transport is None or self.transport.is_closing():
            return
        self.guard.note(phase, seconds)
        if phase == HEADERS and self.received:
            message = f"the request headers did not arrive within {seconds:g} s (this server's header timeout)"
            self.transport.write(raw_json_response(408, "Request Timeout", message))
        self.transport.close()

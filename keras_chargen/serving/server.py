"""`serve()`: bind REST (and gRPC), run the app under uvicorn, and shut down gracefully on SIGTERM / Ctrl-C."""

from __future__ import annotations

import contextlib
import logging
import resource
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import uvicorn
from uvicorn.logging import DefaultFormatter
from uvicorn.protocols.http.h11_impl import H11Protocol

from keras_chargen.errors import ChargenError
from keras_chargen.serving.app import ServingApp
from keras_chargen.serving.config import ServingConfig
from keras_chargen.serving.connections import ConnectionGuard
from keras_chargen.serving.core import ServingCore, logger
from keras_chargen.serving.origins import normalize_origin
from keras_chargen.serving.repository import ModelRepository, VersionPolicy
from keras_chargen.serving.streaming import warm_up

_GRACE = 5.0  # seconds uvicorn waits past the shutdown timeout for the 503s to be written


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port` (port 0: any free port); `ChargenError` if it is taken."""
    if not 0 <= port <= 65535:
        raise ChargenError(f"port must be between 0 and 65535; got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ChargenError(f"cannot resolve host {host!r}: {err.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise ChargenError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _quiet_after_shutdown() -> Iterator[None]:
    """Make SIGTERM/SIGINT no-ops around uvicorn's run.

    uvicorn catches the signal, finishes the requests in flight, then re-raises the signal with the
    handlers it found at start. With no-op handlers there, a graceful shutdown returns normally
    (exit status 0) instead of dying by SIGTERM or surfacing as KeyboardInterrupt afterwards.
    """
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app when a shutdown begins (so it can abort work past its timeout)."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_shutdown()
        await super().shutdown(sockets)


def _log_summary(guard: ConnectionGuard) -> None:
    summary = guard.summary()
    if summary:
        logger.info(summary)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (it may be replaced after the handler is made)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def _configure_logging(log_level: str) -> None:
    """Our log lines look like uvicorn's and follow `--log-level`."""
    level = logging.getLevelName(log_level.upper())
    logger.setLevel(level)
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s"))
        logger.addHandler(handler)


def _raise_open_files_limit(needed: int) -> None:
    """Raise the soft open-files limit toward the hard one, so `max_connections` sockets fit."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def serve(
    base_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8501,
    model_name: str | None = None,
    config: ServingConfig | None = None,
    log_level: str = "info",
    grpc_port: int = 8500,
    policy: VersionPolicy | str = "latest",
    allow_origins: tuple[str, ...] = (),
) -> None:
    """Serve the versions under `base_path` over TF Serving's REST and gRPC APIs until SIGTERM or Ctrl-C.

    The base path is polled every `config.poll_seconds` for new and removed versions. Requests in
    flight when the signal arrives are finished (up to `config.shutdown_timeout` seconds, then they
    get a 503); new connections are refused meanwhile.

    Args:
        base_path: str | Path, the model base path (`exported/NAME` with `1/`, `2/`, ... inside).
        host: str, interface to listen on. Default "127.0.0.1" (local only).
        port: int, REST TCP port; 0 picks a free one. Default 8501, TF Serving's REST port.
        model_name: str | None, the name in URLs; default the base path's folder name.
        config: ServingConfig | None, caps, timeouts and concurrency. Default `ServingConfig()`.
        log_level: str, the log level. Default "info".
        grpc_port: int, gRPC TCP port; 0 turns gRPC off. Default 8500, TF Serving's gRPC port.
        policy: VersionPolicy | str, which versions to serve: `latest` (default, as TF Serving),
            `latest:N`, `all` or `specific:V1,V2`.
        allow_origins: origins whose web pages may call the API (CORS); `*` for any.

    Example:
    >>> serve("exported/shakespeare", port=8501, grpc_port=8500)  # doctest: +SKIP
    """
    from keras_chargen.serving.grpc_api import GrpcServer

    config = config or ServingConfig()
    policy = VersionPolicy.parse(policy) if isinstance(policy, str) else policy
    allow_origins = tuple(normalize_origin(o) for o in allow_origins)
    if not 0 <= grpc_port <= 65535:
        raise ChargenError(f"grpc port must be between 0 and 65535 (0: off); got {grpc_port}")
    _configure_logging(log_level)
    repo = ModelRepository.load(base_path, model_name, policy, on_load=warm_up)
    _raise_open_files_limit(2 * config.max_connections + 256)
    sock = bind_socket(host, port)
    core = ServingCore(repo, config)
    try:
        grpc_server = GrpcServer(host, grpc_port, config) if grpc_port else None
    except ChargenError:
        sock.close()
        raise
    guard = ConnectionGuard(config)
    core.on_startup.append(guard.install)
    if grpc_server is not None:  # after the guard: started after it, stopped before the summary is logged
        grpc_server.attach(core)
    core.on_shutdown.append(lambda: _log_summary(guard))
    app = guard.middleware(ServingApp(core, bound_host=host, allow_origins=allow_origins).starlette())
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://{bound_host}:{bound_port}"
    grpc_text = f"; gRPC at {bound_host}:{grpc_server.port}" if grpc_server else ""
    print(
        f"serving model {repo.name} (versions {', '.join(map(str, repo.versions))}, policy {repo.policy}) at "
        f"{url}/v1/models/{repo.name}{grpc_text}; playground at {url}/",
        flush=True,
    )
    server = _Server(
        uvicorn.Config(
            app,
            http=guard.protocol_factory(H11Protocol),  # type: ignore[arg-type]  # uvicorn accepts a factory
            loop="asyncio",
            log_level=log_level,
            timeout_graceful_shutdown=config.shutdown_timeout + _GRACE,  # type: ignore[arg-type]  # floats work
            timeout_keep_alive=config.idle_timeout,  # type: ignore[arg-type]
            lifespan="on",
        ),
        core.begin_shutdown,
    )
    with _quiet_after_shutdown():
        server.run(sockets=[sock])
    if not server.started:
        raise ChargenError("the server failed to start (see the log above)")

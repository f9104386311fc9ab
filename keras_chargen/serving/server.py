"""`serve()`: bind, run the app under uvicorn, and shut down gracefully on SIGTERM / Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from keras_chargen.errors import ChargenError
from keras_chargen.serving.app import ServingApp
from keras_chargen.serving.config import ServingConfig
from keras_chargen.serving.repository import ModelRepository


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


def serve(
    base_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8501,
    model_name: str | None = None,
    config: ServingConfig | None = None,
    log_level: str = "info",
) -> None:
    """Serve every version under `base_path` over TF Serving's REST API until SIGTERM or Ctrl-C.

    Requests in flight when the signal arrives are finished (up to `config.shutdown_timeout`
    seconds); new connections are refused meanwhile.

    Args:
        base_path: str | Path, the model base path (`exported/NAME` with `1/`, `2/`, ... inside).
        host: str, interface to listen on. Default "127.0.0.1" (local only).
        port: int, TCP port; 0 picks a free one. Default 8501, TF Serving's REST port.
        model_name: str | None, the name in URLs; default the base path's folder name.
        config: ServingConfig | None, caps and concurrency. Default `ServingConfig()`.
        log_level: str, uvicorn's log level. Default "info".

    Example:
    >>> serve("exported/shakespeare", port=8501)  # doctest: +SKIP
    """
    config = config or ServingConfig()
    repo = ModelRepository.load(base_path, model_name)
    app = ServingApp(repo, config).starlette()
    sock = bind_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://{bound_host}:{bound_port}"
    print(
        f"serving model {repo.name} (versions {', '.join(map(str, repo.versions))}) at "
        f"{url}/v1/models/{repo.name}; playground at {url}/",
        flush=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=config.shutdown_timeout, lifespan="on")
    )
    with _quiet_after_shutdown():
        server.run(sockets=[sock])
    if not server.started:
        raise ChargenError("the server failed to start (see the log above)")

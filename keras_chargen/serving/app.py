"""The Starlette app: TF Serving's REST API over a model base path, the `:stream` extension, the playground.

Routes (as TF Serving, `http_rest_api_handler.cc`):
- `GET  /v1/models/{name}[/versions/{v}]`            version status
- `GET  /v1/models/{name}[/versions/{v}]/metadata`   signature defs
- `POST /v1/models/{name}[/versions/{v}]:predict`    row (`instances`) or columnar (`inputs`) format
Extension: `POST /v1/models/{name}[/versions/{v}]:stream` (server-sent events), and `GET /`.
Every error is `{"error": "..."}` with TF Serving's status for its kind (400, 404, ...), plus 413
for an oversize body and 503 when the server is saturated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from keras_chargen.serving import protocol, streaming
from keras_chargen.serving.batching import Dispatcher
from keras_chargen.serving.config import ServingConfig
from keras_chargen.serving.errors import RequestError
from keras_chargen.serving.playground import playground_html
from keras_chargen.serving.repository import ModelRepository, ServableVersion

logger = logging.getLogger("keras_chargen.serving")

_PATH = re.compile(
    r"/v1/models(?:/(?P<name>[^/:]+))?(?:/versions/(?P<version>[^/:]+))?"
    r"(?:(?P<verb>:[^/]*)|/(?P<sub>metadata))?"
)
_DRAIN_LIMIT = 64 << 20  # bytes of an oversize body read and discarded so the client sees the 413


class JSONBody(Response):
    """JSON as TF Serving writes it: UTF-8, `NaN`/`Infinity` allowed (Starlette's JSONResponse refuses them)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=True, separators=(",", ":")).encode("utf-8")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONBody:
    return JSONBody({"error": message}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 once it passes `limit` bytes (by Content-Length or as it arrives)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        if declared.isdigit():
            await _drain(request, int(declared))
            raise RequestError(413, f"request body of {declared} bytes is above this server's cap of {limit} bytes")
        raise RequestError(400, f"invalid Content-Length header {declared!r}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            await _drain(request, _DRAIN_LIMIT)
            raise RequestError(413, f"request body is above this server's cap of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _drain(request: Request, declared: int) -> None:
    """Read and drop the rest of a rejected body (up to a bound), so the client can read our 413."""
    if declared > _DRAIN_LIMIT:
        return  # not worth reading: the connection is closed after the response instead
    with contextlib.suppress(Exception):
        async for _ in request.stream():
            pass


class ServingApp:
    """Request handlers over one `ModelRepository`; `starlette()` wires them into an ASGI app.

    Args:
        repo: ModelRepository, the loaded versions.
        config: ServingConfig, caps and concurrency.
    """

    def __init__(self, repo: ModelRepository, config: ServingConfig) -> None:
        self.repo = repo
        self.config = config
        self.dispatcher: Dispatcher | None = None
        self.scheduler: streaming.StreamScheduler | None = None

    def starlette(self) -> Starlette:
        routes = [
            Route("/", self.playground, methods=["GET"]),
            Route("/v1/models{rest:path}", self.models, methods=["GET", "POST"]),
        ]
        handlers = {HTTPException: self._http_exception, Exception: self._internal_error}
        return Starlette(routes=routes, exception_handlers=handlers, lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.dispatcher = Dispatcher(self.config)
        self.dispatcher.start()
        self.scheduler = streaming.StreamScheduler(self.config.max_streams)
        self.scheduler.start()
        logger.info(
            "serving model %s, versions %s (default %d)", self.repo.name, list(self.repo.versions), self.repo.latest
        )
        try:
            yield
        finally:  # uvicorn gets here after the requests in flight have finished
            await asyncio.to_thread(self.scheduler.stop)
            await self.dispatcher.close()

    async def playground(self, request: Request) -> HTMLResponse:
        return HTMLResponse(playground_html(self.repo.name, list(self.repo.versions), self.config))

    async def models(self, request: Request) -> Response:
        """Dispatch every `/v1/models...` path the way TF Serving parses it."""
        try:
            return await self._route(request)
        except RequestError as err:
            return error_response(err.status, err.message)

    async def _route(self, request: Request) -> Response:
        path, method = request.url.path, request.method
        match = _PATH.fullmatch(path)
        if match is None:
            raise RequestError(400, f"Malformed request: {method} {path}")
        name, version_text, verb, sub = match.group("name", "version", "verb", "sub")
        if name is None:
            raise RequestError(400, "Missing model name in request.")
        if version_text is not None and not version_text.isdigit():
            raise RequestError(400, f"Failed to convert version: {version_text} to numeric.")
        version = int(version_text) if version_text is not None else None
        if verb is None:
            if method != "GET":
                return error_response(405, f"{method} is not allowed on {path}; use GET", {"Allow": "GET"})
            servable = self.repo.get(name, version)
            if sub == "metadata":
                return JSONBody(protocol.metadata_body(servable))
            return JSONBody(protocol.status_body(self.repo, servable.version if version is not None else None))
        if method != "POST":
            return error_response(405, f"{method} is not allowed on {path}; use POST", {"Allow": "POST"})
        handlers: dict[str, Callable[[Request, ServableVersion], Awaitable[Response]]] = {
            ":predict": self.predict,
            ":stream": self.stream,
        }
        if verb in (":classify", ":regress"):
            raise RequestError(
                501,
                f"{verb[1:]} is not supported: the model has no classification or regression signature; use :predict",
            )
        if verb not in handlers:
            raise RequestError(400, f"Malformed request: {method} {path} (methods: :predict, :stream)")
        return await handlers[verb](request, self.repo.get(name, version))

    async def predict(self, request: Request, servable: ServableVersion) -> Response:
        """TF Serving's predict: decode, check the caps, run (maybe merged with others), encode."""
        doc = protocol.parse_body(await read_body(request, self.config.max_body_bytes))
        signature = protocol.signature_of(doc)
        specs = servable.input_specs(signature)
        fmt, inputs = protocol.decode_inputs(doc, specs, protocol.defaults_for(signature, specs))
        protocol.check_caps(inputs, self.config)
        outputs = await self.dispatcher.run(servable, signature, inputs)
        return JSONBody(protocol.encode_outputs(outputs, fmt))

    async def stream(self, request: Request, servable: ServableVersion) -> Response:
        """Extension: generate over `step` and send the text as server-sent events while it is produced."""
        streaming.check_streamable(servable)
        doc = protocol.parse_body(await read_body(request, self.config.max_body_bytes))
        params = streaming.parse_stream_request(doc, self.config)
        encode_input = next(iter(servable.input_specs(streaming.ENCODE)))
        encoded = await self.dispatcher.run(
            servable, streaming.ENCODE, {encode_input: np.array([params["prompt"].encode("utf-8")], dtype=object)}
        )
        prompt_ids = encoded["ids"][0][: int(encoded["lengths"][0])]
        session = self.scheduler.open(servable, prompt_ids, params, asyncio.get_running_loop())
        events = _sse_events(session, servable, params["prompt"])
        return StreamingResponse(
            events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    async def _http_exception(self, request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 405:
            return error_response(
                405, f"{request.method} is not allowed on {request.url.path}", dict(exc.headers or {})
            )
        return error_response(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")

    async def _internal_error(self, request: Request, exc: Exception) -> Response:
        logger.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _sse_events(session: streaming.StreamSession, servable: ServableVersion, prompt: str) -> AsyncIterator[str]:
    """`start`, then `text` events with new characters, then `done` with the whole text (or `error`)."""
    parts: list[str] = []
    try:
        yield _sse("start", {"model": servable.name, "version": servable.version, "prompt": prompt})
        async for piece in session.pieces():
            parts.append(piece)
            yield _sse("text", {"text": piece})
        generated = "".join(parts)
        yield _sse("done", {"generated": generated, "text": prompt + generated, "chars": len(generated)})
    except RequestError as err:
        yield _sse("error", {"error": err.message, "status": err.status})
    finally:
        session.cancel()


def create_app(base_path: str | Path, model_name: str | None = None, config: ServingConfig | None = None) -> Starlette:
    """An ASGI app serving every version under `base_path` (loaded now, so errors surface before binding).

    Args:
        base_path: str | Path, the model base path (`exported/NAME`, holding `1/`, `2/`, ...).
        model_name: str | None, the name in URLs; default: the base path's folder name.
        config: ServingConfig | None, caps and concurrency; default `ServingConfig()`.

    Example:
    >>> app = create_app("exported/shakespeare")  # doctest: +SKIP
    >>> # uvicorn.run(app, port=8501)
    """
    repo = ModelRepository.load(base_path, model_name)
    return ServingApp(repo, config or ServingConfig()).starlette()

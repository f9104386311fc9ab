"""The Starlette app: TF Serving's REST API over a model base path, the `:stream` extension, the playground.

Routes (as TF Serving, `http_rest_api_handler.cc`):
- `GET  /v1/models/{name}[/versions/{v}]`            version status
- `GET  /v1/models/{name}[/versions/{v}]/metadata`   signature defs
- `POST /v1/models/{name}[/versions/{v}]:predict`    row (`instances`) or columnar (`inputs`) format
Extension: `POST /v1/models/{name}[/versions/{v}]:stream` (server-sent events), `GET /` (the playground) and
`GET /web/{version}/{file}` (the version's web export, `web_files.py`, for the playground's "in this browser").
Every error is `{"error": "..."}` with TF Serving's status for its kind (400, 404, ...), plus 413
for an oversize body, 403 for cross-site requests (`origins.py`) and 503 when the server is
saturated or shutting down. A client that goes away gets its generation cancelled (one log line).
It is one front end of the transport-neutral `ServingCore` (`core.py`); the gRPC API
(`grpc_api.py`) is another, and neither imports the other.
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

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from keras_chargen.serving import protocol, streaming
from keras_chargen.serving.config import ServingConfig
from keras_chargen.serving.core import ServingCore
from keras_chargen.serving.errors import RequestError
from keras_chargen.serving.origins import CrossSiteGuard, normalize_origin
from keras_chargen.serving.playground import playground_html
from keras_chargen.serving.repository import ModelRepository, ServableVersion, VersionPolicy
from keras_chargen.serving.web_files import WEB_DIR, web_file, web_folder

logger = logging.getLogger("keras_chargen.serving")

_PATH = re.compile(
    r"/v1/models(?:/(?P<name>[^/:]+))?(?:/versions/(?P<version>[^/:]+))?"
    r"(?:(?P<verb>:[^/]*)|/(?P<sub>metadata))?"
)
_DRAIN_LIMIT = 64 << 20  # bytes of an oversize body read and discarded so the client sees the 413
_MAX_VERSION_DIGITS = 18  # versions are int64 in TF Serving


class ClientGone(Exception):
    """The client closed its connection; nobody is left to answer (`what` says what was dropped)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def parse_version(text: str) -> int:
    """A version path segment as TF Serving reads it: ASCII digits only (not `²` or `١`), an int64."""
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_VERSION_DIGITS):
        raise RequestError(400, f"Failed to convert version: {text} to numeric.")
    return int(text)


class JSONBody(Response):
    """JSON as TF Serving writes it: UTF-8, `NaN`/`Infinity` allowed (Starlette's JSONResponse refuses them)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=True, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (from a client's JSON escape): keep it an escape
            return json.dumps(content, ensure_ascii=True, allow_nan=True, separators=(",", ":")).encode("ascii")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONBody:
    if status == 408:  # the rest of the request may still be on its way: do not read it as the next one
        headers = {**(headers or {}), "Connection": "close"}
    return JSONBody({"error": message}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 once it passes `limit` bytes (by Content-Length or as it arrives).

    `ClientGone` if the client disconnects before the body is complete.
    """
    try:
        return await _read_body(request, limit)
    except ClientDisconnect:
        raise ClientGone("before sending the whole request body") from None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    valid = declared is not None and declared.isascii() and declared.isdigit()
    if declared is not None and (not valid or int(declared) > limit):
        if valid:
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
    """The REST front end of a `ServingCore`; `starlette()` wires its handlers into an ASGI app.

    Args:
        core: ServingCore, the versions, caps, batching and streams (started and stopped with the app).
        bound_host: str | None, the address the server listens on: a loopback address turns on the
            `Host` check (DNS rebinding). None: no `Host` check.
        allow_origins: origins whose web pages may call the API (CORS), `*` for any.
    """

    def __init__(self, core: ServingCore, bound_host: str | None = None, allow_origins: tuple[str, ...] = ()) -> None:
        self.core = core
        self.repo = core.repo
        self.config = core.config
        self.bound_host = bound_host
        self.allow_origins = tuple(normalize_origin(o) for o in allow_origins)  # ChargenError if malformed

    def starlette(self) -> Starlette:
        routes = [
            Route("/", self.playground, methods=["GET"]),
            Route("/v1/models{rest:path}", self.models, methods=["GET", "POST"]),
            Route("/" + WEB_DIR + "/{version}/{path:path}", self.web, methods=["GET"]),
        ]
        handlers: dict[Any, Any] = {HTTPException: self._http_exception, Exception: self._internal_error}
        return Starlette(
            routes=routes,
            exception_handlers=handlers,
            lifespan=self._lifespan,
            middleware=[
                Middleware(CrossSiteGuard, bound_host=self.bound_host, allow_origins=self.allow_origins),
            ],
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.core.start()
        try:
            yield
        finally:  # uvicorn gets here after the requests in flight have finished (or were aborted)
            await self.core.stop()

    async def playground(self, request: Request) -> HTMLResponse:
        newest = self.repo.get(self.repo.name, None)
        signatures = tuple(newest.signature_names)  # the newest version's
        web = f"/{WEB_DIR}/{newest.version}/" if web_folder(self.repo.base, newest.version) else None
        return HTMLResponse(playground_html(self.repo.name, list(self.repo.versions), self.config, signatures, web))

    async def web(self, request: Request) -> Response:
        """A file of a version's web export (`web_files.py`); 404 for anything else."""
        try:
            version = parse_version(request.path_params["version"])
            path, media_type = web_file(self.repo.base, version, request.path_params["path"])
        except RequestError as err:
            return error_response(404 if err.status == 400 else err.status, err.message)
        return FileResponse(path, media_type=media_type)

    async def models(self, request: Request) -> Response:
        """Dispatch every `/v1/models...` path the way TF Serving parses it."""
        try:
            return await self._route(request)
        except RequestError as err:
            return error_response(err.status, err.message)
        except ClientGone as gone:
            client = request.client
            logger.info(
                "client %s:%s went away %s (%s %s)",
                client.host if client else "?",
                client.port if client else "?",
                gone.what,
                request.method,
                request.url.path,
            )
            return Response(status_code=499)  # never sent: the connection is closed

    async def _route(self, request: Request) -> Response:
        path, method = request.url.path, request.method
        match = _PATH.fullmatch(path)
        if match is None:
            raise RequestError(400, f"Malformed request: {method} {path}")
        name, version_text, verb, sub = match.group("name", "version", "verb", "sub")
        if name is None:
            raise RequestError(400, "Missing model name in request.")
        version = parse_version(version_text) if version_text is not None else None
        if verb is None:
            if method != "GET":
                return error_response(405, f"{method} is not allowed on {path}; use GET", {"Allow": "GET"})
            if sub == "metadata":
                return JSONBody(protocol.metadata_body(self.repo.get(name, version)))
            return JSONBody(protocol.status_body(self.repo.status(name, version)))
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
        outputs = await until_disconnected(request, self.core.predict(servable, signature, inputs))
        return JSONBody(protocol.encode_outputs(outputs, fmt))

    async def stream(self, request: Request, servable: ServableVersion) -> Response:
        """Extension: run the version's `decode_start` / `decode_chunk` signatures and send the text as
        server-sent events while it is produced."""
        streaming.check_streamable(servable)  # before reading the body
        doc = protocol.parse_body(await read_body(request, self.config.max_body_bytes))
        session = self.core.open_stream(servable, doc)
        events = _sse_events(session, servable, session.prompt, request)
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


async def until_disconnected(request: Request, work: Awaitable[Any]) -> Any:
    """Await `work`, cancelling it (`ClientGone`) if the client disconnects first."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
        watcher.cancel()
    if task.done() and not task.cancelled():
        return task.result()
    raise ClientGone("before its answer was ready; its generation was cancelled")


async def _sse_events(
    session: streaming.StreamSession, servable: ServableVersion, prompt: str, request: Request
) -> AsyncIterator[str]:
    """`start`, then `text` events with new characters, then `done` with the whole text and the seed the
    stream used (or `error`)."""
    parts: list[str] = []
    finished = False
    try:
        yield _sse("start", {"model": servable.name, "version": servable.version, "prompt": prompt})
        async for piece in session.pieces():
            parts.append(piece)
            yield _sse("text", {"text": piece})
        generated = "".join(parts)
        finished = True
        seed = session.finished.seed if session.finished is not None else None
        done = {"generated": generated, "text": prompt + generated, "chars": len(generated), "seed": seed}
        yield _sse("done", done)
    except RequestError as err:
        finished = True
        yield _sse("error", {"error": err.message, "status": err.status})
    finally:
        session.cancel()
        if not finished:
            client = request.client
            logger.info(
                "client %s:%s went away during a stream after %d characters; stopped generating",
                client.host if client else "?",
                client.port if client else "?",
                sum(map(len, parts)),
            )


def create_app(
    base_path: str | Path,
    model_name: str | None = None,
    config: ServingConfig | None = None,
    policy: VersionPolicy | str = "latest",
    bound_host: str | None = None,
    allow_origins: tuple[str, ...] = (),
) -> Starlette:
    """An ASGI app serving the versions under `base_path` (loaded now, so errors surface before binding).

    Args:
        base_path: str | Path, the model base path (`exported/NAME`, holding `1/`, `2/`, ...).
        model_name: str | None, the name in URLs; default: the base path's folder name.
        config: ServingConfig | None, caps and concurrency; default `ServingConfig()`.
        policy: VersionPolicy | str, which versions to serve (`latest`, `latest:N`, `all`, `specific:1,3`).
        bound_host: str | None, the address it will listen on (a loopback one turns on the Host check).
        allow_origins: origins whose web pages may call it (CORS).

    Example:
    >>> app = create_app("exported/shakespeare")  # doctest: +SKIP
    >>> # uvicorn.run(app, port=8501)
    """
    policy = VersionPolicy.parse(policy) if isinstance(policy, str) else policy
    repo = ModelRepository.load(base_path, model_name, policy, on_load=streaming.warm_up)
    return ServingApp(ServingCore(repo, config or ServingConfig()), bound_host, allow_origins).starlette()

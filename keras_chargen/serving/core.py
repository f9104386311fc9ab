"""`ServingCore`: what the REST and gRPC front ends share, neither importing the other.

The versions (`ModelRepository`), the caps (`ServingConfig`), the model-call dispatcher with its
batching, the stream scheduler, and the life cycle: start on the server's event loop, begin a
graceful shutdown on SIGTERM (stop polling, tell the front ends to stop accepting), abort what
still runs past the shutdown timeout, stop. A front end translates its transport to `predict` /
`open_stream` calls and their `RequestError`s back; it plugs into the life cycle with the hooks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from keras_chargen.serving import protocol, streaming
from keras_chargen.serving.batching import Dispatcher
from keras_chargen.serving.config import ServingConfig
from keras_chargen.serving.errors import RequestError
from keras_chargen.serving.repository import ModelRepository, ServableVersion

logger = logging.getLogger("keras_chargen.serving")


class ServingCore:
    """The transport-neutral server: versions, caps, batching, streams and the life cycle.

    Args:
        repo: ModelRepository, the versions (kept current by its polling thread while serving).
        config: ServingConfig, caps, timeouts and concurrency.

    Hooks (lists a front end appends to): `on_startup(loop)` once the core runs on `loop`;
    `on_begin_shutdown()` when a graceful shutdown begins (stop accepting); `on_shutdown()` last,
    on a worker thread (may block, e.g. until a gRPC server has stopped).
    """

    def __init__(self, repo: ModelRepository, config: ServingConfig) -> None:
        self.repo = repo
        self.config = config
        self.dispatcher: Dispatcher | None = None
        self.scheduler: streaming.StreamScheduler | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.on_startup: list[Callable[[asyncio.AbstractEventLoop], None]] = []
        self.on_begin_shutdown: list[Callable[[], None]] = []
        self.on_shutdown: list[Callable[[], None]] = []
        self._shutdown_timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        """Start the dispatcher, the stream scheduler and the version polling on the running event loop."""
        self.loop = asyncio.get_running_loop()
        self.dispatcher = Dispatcher(self.config)
        self.dispatcher.start()
        self.scheduler = streaming.StreamScheduler(self.config.max_streams)
        self.scheduler.start()
        self.repo.start_polling(self.config.poll_seconds)
        for hook in self.on_startup:
            hook(self.loop)
        logger.info(
            "serving model %s, versions %s (default %s, policy %s)",
            self.repo.name,
            list(self.repo.versions),
            self.repo.latest,
            self.repo.policy,
        )

    async def stop(self) -> None:
        """After the requests in flight have finished (or were aborted): stop everything started."""
        self.begin_shutdown()
        self.abort_in_flight()
        if self.scheduler is not None:
            await asyncio.to_thread(self.scheduler.stop)
        if self.dispatcher is not None:
            await self.dispatcher.close()
        await asyncio.to_thread(self.repo.stop_polling)
        for hook in self.on_shutdown:
            await asyncio.to_thread(hook)

    def begin_shutdown(self) -> None:
        """SIGTERM arrived: stop polling and accepting (hooks); abort what still runs after the timeout."""
        if self._shutdown_timer is not None or self.loop is None:
            return
        requests = self.dispatcher.in_flight if self.dispatcher is not None else 0
        streams = self.scheduler.open_streams if self.scheduler is not None else 0
        logger.info(
            "shutting down: no new connections; %d request(s) and %d stream(s) in flight get %g s to finish",
            requests,
            streams,
            self.config.shutdown_timeout,
        )
        self.repo.stop_polling(wait=False)
        for hook in self.on_begin_shutdown:
            hook()
        self._shutdown_timer = self.loop.call_later(self.config.shutdown_timeout, self.abort_in_flight)

    def abort_in_flight(self) -> None:
        """Fail every request still running with a 503 and end every stream with an `error` event."""
        error = RequestError(
            503,
            f"server is shutting down: the request did not finish within the shutdown timeout "
            f"({self.config.shutdown_timeout:g} s); retry on another server",
        )
        if self.dispatcher is not None:
            self.dispatcher.abort(error)
        if self.scheduler is not None:
            self.scheduler.abort(error)

    async def predict(
        self, servable: ServableVersion, signature: str, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Check the caps and run a decoded predict request (REST and gRPC), maybe merged with others."""
        protocol.check_caps(inputs, self.config)
        if self.dispatcher is None:
            raise RequestError(503, "server is starting up; retry in a moment")
        return await self.dispatcher.run(servable, signature, inputs)

    def open_stream(self, servable: ServableVersion, doc: Mapping[str, Any]) -> streaming.StreamSession:
        """Check a `:stream` request body and start the stream on the version's exported signatures."""
        streaming.check_streamable(servable)
        if self.scheduler is None or self.loop is None:
            raise RequestError(503, "server is starting up; retry in a moment")
        params = streaming.parse_stream_request(doc, self.config)
        return self.scheduler.open(servable, params, self.loop)

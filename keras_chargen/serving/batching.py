"""`Dispatcher`: runs model calls on a thread pool, a few at once, merging compatible concurrent requests.

Adaptive batching, no timer: a request starts at once when a worker is free; requests that arrive
while every worker is busy wait in the queue, and when a worker frees up it takes the oldest one
together with every queued request it can merge with. Light load costs no added latency; heavy
load turns into larger batches, which a recurrent generator runs for almost the price of one row.

Only `serving_default` requests that draw random seeds (`seed < 0` in every row) are merged (every
other input is per row: temperature, length, top-k, top-p, penalty and stop string may differ): one
seed for several rows seeds row i with seed + i, so merging would change a seeded request's
output (each merged row draws its own seed and returns it). Merged requests are also grouped by
length bucket (the next power of two of their longest
`max_new_chars`), so a short request never waits for a much longer one.

A request whose client goes away (its future is cancelled) is dropped from the queue; if it is
already running alone, or every request of its merged call went away, the call itself is cancelled
(TF stops the generation loop); a merged call with live requests goes on. `abort()` fails every
queued and running request (shutdown past its timeout).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

import numpy as np

from keras_chargen.contract import DEFAULT_SIGNATURE
from keras_chargen.serving.cancellation import Canceller
from keras_chargen.serving.config import ServingConfig
from keras_chargen.serving.errors import RequestError
from keras_chargen.serving.repository import ServableVersion
from keras_chargen.settings import SETTINGS

logger = logging.getLogger("keras_chargen.serving")
# serving_default's inputs with one value per prompt row (or one for all rows): every setting but `seed`
ROW_INPUTS = tuple(sorted(s.name for s in SETTINGS if s.name != "seed"))


@dataclass
class _Job:
    servable: ServableVersion
    signature: str
    inputs: Mapping[str, np.ndarray]
    rows: int
    key: Hashable | None  # None: never merged
    future: asyncio.Future = field(repr=False)


def merge_key(servable: ServableVersion, signature: str, inputs: Mapping[str, np.ndarray]) -> Hashable | None:
    """Requests with equal keys can run as one call; None for requests that must run alone."""
    names = tuple(sorted(inputs))
    if (
        signature != DEFAULT_SIGNATURE
        or not {"prompt", "seed", "max_new_chars"} <= set(names)
        or not set(names) <= {"prompt", "seed", *ROW_INPUTS}
    ):
        return None
    prompt = inputs["prompt"]
    if prompt.ndim != 1 or prompt.shape[0] == 0 or inputs["seed"].size == 0 or (inputs["seed"] >= 0).any():
        return None
    rows = prompt.shape[0]
    if any(inputs[name].shape not in ((1,), (rows,)) for name in names if name in ROW_INPUTS):
        return None
    longest = int(inputs["max_new_chars"].max())
    bucket = 1 << max(longest - 1, 0).bit_length()  # next power of two
    return servable.version, bucket, names


def _rows_of(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A generate request with every input broadcast to one value per prompt row (seeds all -1)."""
    rows = inputs["prompt"].shape[0]
    return {
        "prompt": inputs["prompt"],
        "seed": np.full((rows,), -1, dtype=np.int64),
        **{name: np.broadcast_to(value, (rows,)) for name, value in inputs.items() if name in ROW_INPUTS},
    }


class Dispatcher:
    """Bounded, batching executor for model calls; one per server, used from the event loop.

    Args:
        config: ServingConfig; `workers` calls run at once, `batching` turns merging on,
            `max_merged_rows` caps a merged call, `max_queued_rows` caps the queue (503 beyond).
    """

    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self._executor = concurrent.futures.ThreadPoolExecutor(config.workers, thread_name_prefix="model")
        self._queue: collections.deque[_Job] = collections.deque()
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(config.workers)
        self._loop_task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._calls: dict[Canceller, list[_Job]] = {}  # the calls running now and their requests
        self._aborted: RequestError | None = None
        self.calls = 0  # model calls made (a merged call counts once)
        self.requests = 0  # requests served through those calls
        self.cancelled_calls = 0  # calls stopped because every client of theirs went away

    @property
    def queued(self) -> int:
        """Requests waiting for a worker now."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Requests queued or running now."""
        return len(self._queue) + sum(len(jobs) for jobs in self._calls.values())

    def start(self) -> None:
        """Start the dispatch loop (call from the running event loop)."""
        self._loop_task = asyncio.get_running_loop().create_task(self._dispatch_loop())

    async def close(self) -> None:
        """Finish the calls in flight, then stop the loop and the threads."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._loop_task is not None:
            self._loop_task.cancel()
        self._executor.shutdown(wait=True)

    async def run(
        self, servable: ServableVersion, signature: str, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Outputs of `signature` on `inputs`, run on a worker thread (possibly merged with others)."""
        if self._aborted is not None:
            raise self._aborted
        rows = max((a.shape[0] for a in inputs.values() if a.ndim), default=1)
        if self._queued_rows + rows > self.config.max_queued_rows:
            raise RequestError(
                503,
                f"server busy: {self._queued_rows} rows already queued "
                f"(cap {self.config.max_queued_rows}); retry later",
                grpc_code="RESOURCE_EXHAUSTED",
            )
        key = merge_key(servable, signature, inputs) if self.config.batching else None
        if key is not None:
            inputs = _rows_of(inputs)
        job = _Job(servable, signature, inputs, rows, key, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._queued_rows += rows
        self._wakeup.set()
        logger.debug("request queued: %s of version %d, %d rows", signature, servable.version, rows)
        return await job.future

    async def _dispatch_loop(self) -> None:
        while True:
            await self._slots.acquire()
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            group = self._take_group()
            task = asyncio.get_running_loop().create_task(self._execute(group))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take_group(self) -> list[_Job]:
        """The oldest queued job plus every queued job with its key, up to `max_merged_rows` rows."""
        head = self._queue.popleft()
        group, rows = [head], head.rows
        if head.key is not None:
            kept: collections.deque[_Job] = collections.deque()
            while self._queue:
                job = self._queue.popleft()
                mergeable = job.key == head.key and job.servable is head.servable  # a reloaded version differs
                if mergeable and rows + job.rows <= self.config.max_merged_rows:
                    group.append(job)
                    rows += job.rows
                else:
                    kept.append(job)
            self._queue = kept
        self._queued_rows -= rows
        return group

    def abort(self, error: RequestError) -> None:
        """Fail every queued and running request with `error` and cancel the running calls; refuse new ones."""
        self._aborted = error
        for job in self._queue:
            _settle(job.future, error=error)
        self._queue.clear()
        self._queued_rows = 0
        for canceller, jobs in list(self._calls.items()):
            for job in jobs:
                _settle(job.future, error=error)
            canceller.cancel()

    async def _execute(self, group: list[_Job]) -> None:
        """Run one (merged) call on a worker thread and hand each job its rows of the outputs."""
        loop = asyncio.get_running_loop()
        try:
            live = [job for job in group if not job.future.done()]  # cancelled: the client went away
            if len(live) == 1 or (live and live[0].key is None):
                await self._run_alone(loop, live[0])
            elif live:
                await self._run_merged(loop, live)
        finally:
            self._slots.release()

    async def _call(
        self, loop: asyncio.AbstractEventLoop, jobs: list[_Job], inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """One model call for `jobs`, cancelled once every one of their futures is cancelled."""
        canceller = Canceller()

        def on_done(_: asyncio.Future) -> None:
            if all(job.future.cancelled() for job in jobs) and not canceller.cancelled:
                self.cancelled_calls += 1
                canceller.cancel()

        for job in jobs:
            job.future.add_done_callback(on_done)
        self._calls[canceller] = jobs
        logger.debug(
            "model call started: %s of version %d, %d requests", jobs[0].signature, jobs[0].servable.version, len(jobs)
        )
        try:
            return await loop.run_in_executor(
                self._executor, jobs[0].servable.run, jobs[0].signature, inputs, canceller
            )
        finally:
            del self._calls[canceller]
            for job in jobs:
                job.future.remove_done_callback(on_done)

    async def _run_alone(self, loop: asyncio.AbstractEventLoop, job: _Job) -> None:
        try:
            result = await self._call(loop, [job], job.inputs)
        except Exception as err:  # delivered to the request that caused it
            _settle(job.future, error=err)
        else:
            _settle(job.future, result=result)
        self.calls += 1
        self.requests += 1

    async def _run_merged(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> None:
        merged = {name: np.concatenate([job.inputs[name] for job in jobs]) for name in jobs[0].inputs}
        try:
            outputs = await self._call(loop, jobs, merged)
        except RequestError:
            for job in jobs:  # one bad row must not fail the others: rerun each alone to attribute the error
                if not job.future.done():
                    await self._run_alone(loop, job)
            return
        except Exception as err:
            for job in jobs:
                _settle(job.future, error=err)
            return
        start = 0
        for job in jobs:
            _settle(job.future, result={name: value[start : start + job.rows] for name, value in outputs.items()})
            start += job.rows
        self.calls += 1
        self.requests += len(jobs)


def _settle(future: asyncio.Future, result=None, error: Exception | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)

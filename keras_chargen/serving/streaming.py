"""Streaming generation: the exported `decode_start` / `decode_chunk` signatures, a chunk of tokens per tick.

The SavedModel's `serving_default` generates a whole continuation in one call, so it cannot show
text as it is produced. A stream runs what the version itself exported for that
(`keras_chargen.contract`): `decode_start` primes a batch of prompts and returns each row's decode
state and its settings in the form `decode_chunk` takes (the seed as used, the stop strings as
stop sequences); `decode_chunk` advances a batch of states by up to `steps` tokens and returns the
text each row added. One scheduler thread advances *all* open streams of a version together,
`FIRST_CHUNK` tokens on a stream's first tick (its first text comes soon), then `CHUNK` per tick,
keeping each stream's state as numpy rows between ticks. The server holds no decode loop, codec
or sampler of its own: a version exported by an older or newer keras-chargen
streams exactly what its own `serving_default` would return (same prompt, seed and settings),
and a version exported before these signatures existed answers 400, naming the re-export. Streams
join and leave between ticks, so ten concurrent streams cost about what one does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from keras_chargen.serving.config import ServingConfig
from keras_chargen.serving.errors import RequestError
from keras_chargen.serving.protocol import check_unicode
from keras_chargen.serving.repository import ServableVersion
from keras_chargen.settings import SETTINGS

START, CHUNK_SIGNATURE = "decode_start", "decode_chunk"
STEPS = "steps"  # `decode_chunk`'s scalar input: tokens per row at most
FIRST_CHUNK = 8  # tokens of a stream's first `decode_chunk` call: its first text comes soon
CHUNK = 32  # tokens per later call: a call costs ~5 token steps of overhead (2x512 LSTM, batch 1), so 8 ran 0.6x of 32


@dataclass(frozen=True)
class Finished:
    """The end of a stream: the seed its row used (what reproduces it)."""

    seed: int | None


def parse_stream_request(doc: Mapping[str, Any], config: ServingConfig) -> dict[str, Any]:
    """Validate a `:stream` body: `prompt` and any setting `:predict` takes (`keras_chargen.settings`); 400s.

    A string setting (`stop`) may also be a list of strings (several stop strings). Returns the
    prompt and every setting (defaults filled in; string settings as lists).
    """
    names = [s.name for s in SETTINGS]
    unknown = [key for key in doc if key not in ("prompt", *names)]
    if unknown:
        raise RequestError(
            400, f"unknown key {', '.join(map(repr, unknown))}; a stream request takes prompt, {', '.join(names)}"
        )
    if "prompt" not in doc:
        raise RequestError(400, "missing key 'prompt'")
    prompt = doc["prompt"]
    if not isinstance(prompt, str):
        raise RequestError(400, f"prompt must be a string; got {type(prompt).__name__}")
    check_unicode(prompt, "prompt")
    if len(prompt) > config.max_prompt_chars:
        raise RequestError(
            400, f"prompt has {len(prompt)} characters; this server's cap is {config.max_prompt_chars} characters"
        )
    params: dict[str, Any] = {"prompt": prompt}
    for spec in SETTINGS:
        value = doc.get(spec.name, spec.default if spec.default is not None else spec.off)
        several = spec.dtype == "string" and isinstance(value, list) and value
        try:
            params[spec.name] = [spec.check(v) for v in value] if several else spec.check(value)
        except Exception as err:  # ChargenError: the rule in words
            raise RequestError(400, str(err) + (" (or a list of them)" if spec.dtype == "string" else "")) from None
        if spec.dtype == "string":
            params[spec.name] = params[spec.name] if several else [params[spec.name]]
            for text in params[spec.name]:
                check_unicode(text, spec.name)
                if len(text) > config.max_prompt_chars:
                    raise RequestError(
                        400, f"{spec.name} has {len(text)} characters; this server's cap is {config.max_prompt_chars}"
                    )
    if params["max_new_chars"] > config.max_new_chars:
        raise RequestError(
            400, f"max_new_chars {params['max_new_chars']} is above this server's cap of {config.max_new_chars}"
        )
    return params


def check_streamable(servable: ServableVersion) -> None:
    """400 unless the version has the `decode_start` and `decode_chunk` signatures (exports since they exist)."""
    missing = [name for name in (START, CHUNK_SIGNATURE) if name not in servable.signature_names]
    if missing:
        raise RequestError(
            400,
            f"version {servable.version} of model {servable.name} cannot stream: it was exported without the "
            f"{' and '.join(repr(m) for m in missing)} signature{'s' if len(missing) > 1 else ''}; re-export it "
            f"with this keras-chargen (keras-chargen export MODEL_DIR --out BASE_PATH --version "
            f"{servable.version + 1}), or use :predict",
        )


def stack_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    """One batch from per-row arrays of one rank, each padded at the end of every axis to the widest (zeros, or
    b"" for strings): how stop sequences, recent ids and stop strings of different streams share a call."""
    rows = [np.asarray(r) for r in rows]
    shape = np.max([r.shape for r in rows], axis=0) if rows[0].ndim else ()
    padded = []
    for row in rows:
        widths = [(0, int(full) - size) for full, size in zip(shape, row.shape)]
        fill = b"" if row.dtype == object else 0
        padded.append(np.pad(row, widths, constant_values=fill) if any(w for _, w in widths) else row)
    return np.stack(padded)


def start_inputs(params: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """`decode_start`'s inputs for a batch of checked stream requests (`parse_stream_request`)."""
    columns: dict[str, np.ndarray] = {"prompt": np.array([p["prompt"].encode("utf-8") for p in params], object)}
    for spec in SETTINGS:
        if spec.dtype == "string":
            columns[spec.name] = stack_rows(
                [np.array([v.encode("utf-8") for v in p[spec.name]], object) for p in params]
            )
        else:
            columns[spec.name] = np.array([p[spec.name] for p in params])
    return columns


def warm_up(servable: ServableVersion) -> None:
    """One tiny `decode_start` and `decode_chunk` call, so that a version's first stream does not wait for TF's
    first-call graph optimization (about a second each; several under load). Versions that cannot stream: nothing."""
    if any(name not in servable.signature_names for name in (START, CHUNK_SIGNATURE)):
        return
    request = {"prompt": "", **{s.name: s.off for s in SETTINGS}, "max_new_chars": 1}
    request = {k: [v] if isinstance(v, str) and k != "prompt" else v for k, v in request.items()}
    started = servable.run(START, start_inputs([request]))
    names = [n for n in servable.input_specs(CHUNK_SIGNATURE) if n != STEPS]
    servable.run(CHUNK_SIGNATURE, {**{n: started[n] for n in names}, STEPS: np.array(1, np.int32)})


@dataclass
class Stream:
    """One open stream: its settings and its carried `decode_chunk` inputs (`None` until started).

    Touched only by the scheduler thread, except `cancelled`, which the client side sets.
    """

    servable: ServableVersion
    params: dict[str, Any]
    session: StreamSession
    state: dict[str, np.ndarray] | None = None
    seed: int | None = None
    chunks: int = 0  # `decode_chunk` calls so far
    cancelled: bool = False


class StreamSession:
    """The event-loop side of a stream: an asyncio queue the scheduler thread fills."""

    def __init__(self, loop: asyncio.AbstractEventLoop, prompt: str = "") -> None:
        self._loop = loop
        self.prompt = prompt
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.stream: Stream | None = None
        self.finished: Finished | None = None

    def push(self, item: Any) -> None:
        """Thread-safe: queue a piece of text, a `Finished`, or a `RequestError`."""
        with contextlib.suppress(RuntimeError):  # the event loop has closed: nobody is listening any more
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def cancel(self) -> None:
        """Stop generating (the client went away or the response ended)."""
        if self.stream is not None:
            self.stream.cancelled = True

    async def pieces(self) -> AsyncIterator[str]:
        """Text as it is generated, one piece per `decode_chunk` call (up to `FIRST_CHUNK`, then `CHUNK` tokens); then
        `finished` says how it ended."""
        while True:
            item = await self._queue.get()
            if isinstance(item, str):
                yield item
            elif isinstance(item, RequestError):
                raise item
            elif isinstance(item, Finished):
                self.finished = item
                return


class StreamScheduler:
    """The thread that advances every open stream, one batched `decode_chunk` call per version per tick.

    Args:
        max_streams: int, open streams allowed at once; `open` answers 503 beyond.
    """

    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self._cond = threading.Condition()
        self._new: list[Stream] = []
        self._open = 0
        self._stopping = False
        self._error = RequestError(503, "server is shutting down")
        self._thread = threading.Thread(target=self._loop, name="stream-scheduler", daemon=True)
        self.ticks = 0

    @property
    def open_streams(self) -> int:
        """Streams open now (started or waiting to start)."""
        return self._open

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; streams still open get an error event."""
        self.abort(self._error)
        self._thread.join()

    def abort(self, error: RequestError) -> None:
        """End every open stream with `error` (an `error` event) and refuse new ones; does not wait."""
        with self._cond:
            if not self._stopping:
                self._error = error
            self._stopping = True
            self._cond.notify()

    def open(
        self, servable: ServableVersion, params: Mapping[str, Any], loop: asyncio.AbstractEventLoop
    ) -> StreamSession:
        """Start a stream of a checked request (`parse_stream_request`) on a streamable version (`check_streamable`).

        Its text arrives through the session; a negative seed is drawn by `decode_start`.
        """
        session = StreamSession(loop, params["prompt"])
        stream = Stream(servable, dict(params), session)
        session.stream = stream
        with self._cond:
            if self._stopping:
                raise RequestError(503, "server is shutting down")
            if self._open >= self.max_streams:
                raise RequestError(503, f"too many streams open ({self._open}; cap {self.max_streams}); retry later")
            self._open += 1
            self._new.append(stream)
            self._cond.notify()
        return session

    def _loop(self) -> None:
        active: list[Stream] = []
        while True:
            with self._cond:
                while not self._new and not active and not self._stopping:
                    self._cond.wait()
                active.extend(self._new)
                self._new.clear()
                if self._stopping:
                    for stream in active:
                        stream.session.push(self._error)
                    return
            live = [s for s in active if not s.cancelled]
            by_version: dict[int, list[Stream]] = collections.defaultdict(list)
            for stream in live:
                by_version[id(stream.servable)].append(stream)
            finished = set(id(s) for s in active if s.cancelled)
            for streams in by_version.values():
                finished.update(id(s) for s in self._tick(streams))
            self.ticks += 1
            if finished:
                active = [s for s in active if id(s) not in finished]
                with self._cond:
                    self._open -= len(finished)

    def _tick(self, streams: list[Stream]) -> list[Stream]:
        """Start the new streams, then one chunk for `streams` (one version); returns those that ended."""
        ended: list[Stream] = []
        try:
            new = [s for s in streams if s.state is None]
            if new:
                self._start(new)
            running = [s for s in streams if not self._end_if_done(s, ended)]
            if running:
                self._chunk(running)
                for stream in running:
                    self._end_if_done(stream, ended)
        except Exception as err:  # report to every stream of this call, then drop them
            error = err if isinstance(err, RequestError) else RequestError(500, f"stream step failed: {err}")
            for stream in streams:
                if stream not in ended:
                    stream.session.push(error)
            return streams
        return ended

    @staticmethod
    def _start(streams: list[Stream]) -> None:
        """`decode_start` for streams that just joined: their first state and their settings."""
        outputs = streams[0].servable.run(START, start_inputs([s.params for s in streams]))
        for i, stream in enumerate(streams):
            stream.state = {name: value[i] for name, value in outputs.items()}
            stream.seed = int(outputs["seed"][i]) if "seed" in outputs else None

    @staticmethod
    def _chunk(streams: list[Stream]) -> None:
        """One `decode_chunk` call for `streams` (started, not done): each row's text, then its new state."""
        names = [n for n in streams[0].servable.input_specs(CHUNK_SIGNATURE) if n != STEPS]
        inputs = {name: stack_rows([s.state[name] for s in streams if s.state is not None]) for name in names}
        steps = FIRST_CHUNK if any(s.chunks == 0 for s in streams) else CHUNK
        outputs = streams[0].servable.run(CHUNK_SIGNATURE, {**inputs, STEPS: np.array(steps, np.int32)})
        for i, stream in enumerate(streams):
            assert stream.state is not None
            text = outputs["text"][i].decode("utf-8", "replace")
            if text:
                stream.session.push(text)
            stream.state.update({name: value[i] for name, value in outputs.items() if name != "text"})
            stream.chunks += 1

    @staticmethod
    def _end_if_done(stream: Stream, ended: list[Stream]) -> bool:
        """If the stream's row is done, finish its session (with its seed) and note it in `ended`."""
        if stream.state is None or not bool(stream.state["done"]):
            return False
        stream.session.push(Finished(stream.seed))
        ended.append(stream)
        return True

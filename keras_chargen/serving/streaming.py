"""Streaming generation over the `step` signature: continuous batching of every open stream.

The SavedModel's `serving_default` generates a whole continuation in one call, so it cannot show
text as it is produced. The `step` signature runs one character: ids `[batch]` + states →
logits `[batch, vocab]` + new states. One scheduler thread advances *all* open streams together,
one `step` call per tick (per model version), whatever phase each stream is in: a stream first
feeds its prompt ids one per tick (priming its state), then samples a character from each tick's
logits, hands it to its client and feeds it back. Streams join and leave between ticks, so ten
concurrent streams cost about what one does. Sampling (temperature softmax, greedy at 0, never
the OOV id 0) happens here in numpy, with a per-stream seeded generator.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from keras_chargen.serving.config import ServingConfig
from keras_chargen.serving.errors import RequestError
from keras_chargen.serving.repository import ServableVersion
from keras_chargen.vocab import DOC_END, DOC_START

STEP, ENCODE = "step", "encode"
DEFAULTS = {"temperature": 0.8, "max_new_chars": 200, "seed": -1}
_DONE = object()


def sample_id(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """Next id from one row of logits `(vocab,)`: argmax at temperature 0, else softmax(logits / T) draw.

    The OOV id 0 is never produced (as in the in-graph generator).
    """
    logits = logits.astype(np.float64)
    logits[0] = -np.inf
    if temperature == 0:
        return int(np.argmax(logits))
    z = logits / temperature
    weights = np.exp(z - z.max())
    cdf = np.cumsum(weights)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(cdf) - 1))


def parse_stream_request(doc: Mapping[str, Any], config: ServingConfig) -> dict[str, Any]:
    """Validate a `:stream` body `{"prompt", "temperature"?, "max_new_chars"?, "seed"?}`; 400 on any fault."""
    unknown = [key for key in doc if key not in ("prompt", *DEFAULTS)]
    if unknown:
        raise RequestError(
            400,
            f"unknown key {', '.join(map(repr, unknown))}; a stream request takes prompt, "
            "temperature, max_new_chars, seed",
        )
    if "prompt" not in doc:
        raise RequestError(400, "missing key 'prompt'")
    params = {**DEFAULTS, **doc}
    prompt, temperature, length, seed = (params[k] for k in ("prompt", "temperature", "max_new_chars", "seed"))
    if not isinstance(prompt, str):
        raise RequestError(400, f"prompt must be a string; got {type(prompt).__name__}")
    if len(prompt) > config.max_prompt_chars:
        raise RequestError(
            400, f"prompt has {len(prompt)} characters; this server's cap is {config.max_prompt_chars} characters"
        )
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not np.isfinite(temperature)
        or temperature < 0
    ):
        raise RequestError(400, f"temperature must be a finite number >= 0; got {temperature!r}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise RequestError(400, f"max_new_chars must be an integer >= 0; got {length!r}")
    if length > config.max_new_chars:
        raise RequestError(400, f"max_new_chars {length} is above this server's cap of {config.max_new_chars}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**63:
        raise RequestError(400, f"seed must be an integer (negative: random); got {seed!r}")
    return {"prompt": prompt, "temperature": float(temperature), "max_new_chars": length, "seed": seed}


def check_streamable(servable: ServableVersion) -> None:
    """400 unless the version has the `step` and `encode` signatures and the vocabulary asset."""
    missing = [name for name in (STEP, ENCODE) if name not in servable.signature_names]
    if missing or servable.vocabulary is None:
        what = ", ".join(
            [f"the '{m}' signature" for m in missing] + (["assets/vocab.json"] if servable.vocabulary is None else [])
        )
        raise RequestError(
            400,
            f"version {servable.version} of model {servable.name} cannot stream: it lacks "
            f"{what}; re-export it with this keras-chargen (or use :predict)",
        )


def state_names(servable: ServableVersion) -> list[str]:
    """The recurrent state inputs of `step` (`h_0, c_0, ...`): every input but `ids`."""
    return [name for name in servable.input_specs(STEP) if name != "ids"]


@dataclass
class Stream:
    """One open stream: its ids to feed, its recurrent states and its sampling settings.

    Touched only by the scheduler thread, except `cancelled`, which the client side sets.
    """

    servable: ServableVersion
    pending: collections.deque
    states: dict[str, np.ndarray]
    temperature: float
    remaining: int
    rng: np.random.Generator
    session: StreamSession
    next_id: int = 0
    cancelled: bool = False

    def advance(self, logits: np.ndarray) -> bool:
        """Take one tick's logits `(vocab,)`; return False once the stream has finished."""
        if self.pending:  # still priming: the logits predict a prompt character we already know
            self.next_id = self.pending.popleft()
            return True
        self.next_id = sample_id(logits, self.temperature, self.rng)
        token = (self.servable.vocabulary or [])[self.next_id - 1]  # check_streamable made sure it is there
        if token == DOC_END:  # a document model's document has ended (the marker is not text)
            self.session.push(_DONE)
            return False
        self.session.push("" if token == DOC_START else token)
        self.remaining -= 1
        if self.remaining == 0:
            self.session.push(_DONE)
            return False
        return True


class StreamSession:
    """The event-loop side of a stream: an asyncio queue the scheduler thread fills."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self.stream: Stream | None = None

    def push(self, item: Any) -> None:
        """Thread-safe: queue a piece of text, `_DONE`, or a `RequestError`."""
        with contextlib.suppress(RuntimeError):  # the event loop has closed: nobody is listening any more
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def cancel(self) -> None:
        """Stop generating (the client went away or the response ended)."""
        if self.stream is not None:
            self.stream.cancelled = True

    async def pieces(self) -> AsyncIterator[str]:
        """Text as it is generated, several characters at once when they queued up meanwhile."""
        while True:
            items = [await self._queue.get()]
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
            text = "".join(item for item in items if isinstance(item, str))
            if text:
                yield text
            for item in items:
                if isinstance(item, RequestError):
                    raise item
                if item is _DONE:
                    return


class StreamScheduler:
    """The thread that advances every open stream, one batched `step` call per version per tick.

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
        self,
        servable: ServableVersion,
        prompt_ids: np.ndarray,
        temperature: float,
        max_new_chars: int,
        seed: int,
        loop: asyncio.AbstractEventLoop,
    ) -> StreamSession:
        """Start a stream from encoded prompt ids (at least one); its text arrives through the session."""
        session = StreamSession(loop)
        if max_new_chars == 0:
            session.push(_DONE)
            return session
        ids = [int(i) for i in prompt_ids]
        if not ids:  # `encode` primes an empty prompt on a newline, so this is a broken export
            raise RequestError(500, f"the encode signature of version {servable.version} returned no ids")
        units = {name: servable.input_specs(STEP)[name].shape[-1] for name in state_names(servable)}
        stream = Stream(
            servable,
            collections.deque(ids[1:]),
            {name: np.zeros(size, np.float32) for name, size in units.items()},
            temperature,
            max_new_chars,
            np.random.default_rng(seed if seed >= 0 else None),
            session,
            next_id=ids[0],
        )
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
                by_version[stream.servable.version].append(stream)
            finished = set(id(s) for s in active if s.cancelled)
            for streams in by_version.values():
                finished.update(id(s) for s in self._tick(streams))
            self.ticks += 1
            if finished:
                active = [s for s in active if id(s) not in finished]
                with self._cond:
                    self._open -= len(finished)

    def _tick(self, streams: list[Stream]) -> list[Stream]:
        """One `step` call for `streams` (one version); returns the streams that finished or failed."""
        servable = streams[0].servable
        inputs = {"ids": np.array([s.next_id for s in streams], np.int32)}
        for name in streams[0].states:
            inputs[name] = np.stack([s.states[name] for s in streams])  # (batch, units)
        try:
            outputs = servable.run(STEP, inputs)
        except Exception as err:  # report to every stream of this call, then drop them
            error = err if isinstance(err, RequestError) else RequestError(500, f"step failed: {err}")
            for stream in streams:
                stream.session.push(error)
            return streams
        done = []
        for i, stream in enumerate(streams):
            stream.states = {name: outputs[name][i] for name in stream.states}
            if not stream.advance(outputs["logits"][i]):
                done.append(stream)
        return done

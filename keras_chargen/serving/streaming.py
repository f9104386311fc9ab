"""Streaming generation: `:predict`'s decode loop, delivered a chunk of tokens per tick.

The SavedModel's `serving_default` generates a whole continuation in one call, so it cannot show
text as it is produced. The stream runs the same decode loop (`keras_chargen.decoding`, the same
sampler, seeded draws and stop rules) over the version's `step` signature, in this process: a
stream is primed on its prompt ids (from the `encode` signature) when it joins, then one scheduler
thread advances *all* open streams of a version together, `CHUNK` tokens per tick, carrying each
stream's `DecodeState` between ticks. A row's draws depend only on its seed and its token index,
so a stream produces exactly the tokens `:predict` produces for the same prompt, seed and settings,
and its text comes from the same codec (word pieces detokenized as `:predict` does). Streams join
and leave between ticks, so ten concurrent streams cost about what one does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from keras_chargen import decoding
from keras_chargen.codecs import make_codec
from keras_chargen.sampling import SamplingSettings
from keras_chargen.serving.config import ServingConfig
from keras_chargen.serving.errors import RequestError
from keras_chargen.serving.protocol import check_unicode
from keras_chargen.serving.repository import ServableVersion
from keras_chargen.settings import SEED_MAX, SETTINGS

STEP, ENCODE = "step", "encode"
GENERATION_ASSET = "assets/generation.json"  # written by `keras_chargen.export.savedmodel.write_savedmodel`
CHUNK = 8  # tokens per stream per tick: small enough for smooth text, large enough to amortize a call
_DONE = object()


def parse_stream_request(doc: Mapping[str, Any], config: ServingConfig) -> dict[str, Any]:
    """Validate a `:stream` body: `prompt` and any setting `:predict` takes (`keras_chargen.settings`); 400s."""
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
        try:
            params[spec.name] = spec.check(value)
        except Exception as err:  # ChargenError: the rule in words
            raise RequestError(400, str(err)) from None
    if params["max_new_chars"] > config.max_new_chars:
        raise RequestError(
            400, f"max_new_chars {params['max_new_chars']} is above this server's cap of {config.max_new_chars}"
        )
    check_unicode(params["stop"], "stop")
    if len(params["stop"]) > config.max_prompt_chars:
        raise RequestError(
            400, f"stop has {len(params['stop'])} characters; this server's cap is {config.max_prompt_chars}"
        )
    return params


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
    """The recurrent state inputs of `step` in the step's order (`h_0, c_0, h_1, ...`): every input but `ids`."""
    names = [name for name in servable.input_specs(STEP) if name != "ids"]
    return sorted(names, key=lambda n: (int(n.split("_")[1]), n[0] != "h"))


class StreamDecoder:
    """The decode loop of one version over its `step` signature: `prime` a batch of prompts, `advance` a chunk.

    Args:
        servable: ServableVersion with the `step` signature and `assets/vocab.json`.
    """

    def __init__(self, servable: ServableVersion) -> None:
        vocab = json.loads((servable.path / "assets" / "vocab.json").read_text("utf-8"))
        info_file = servable.path / GENERATION_ASSET
        info = json.loads(info_file.read_text("utf-8")) if info_file.is_file() else {}
        self.tokens = list(vocab["tokens"])
        self.vocab_size = len(self.tokens) + 1
        markers = [info[k] for k in ("document_start", "document_end") if info.get(k) is not None]
        self.codec = make_codec(self.tokens, vocab.get("level", "char"), vocab.get("lowercase", False), markers)
        start = info.get("document_start")
        self.banned = (0,) if start is None else (0, start)
        self.end_id = info.get("document_end")
        self.names = state_names(servable)
        specs = servable.input_specs(STEP)
        self.state_specs = [tf.TensorSpec([None, specs[n].shape[-1]], tf.float32) for n in self.names]
        self._step_fn = servable.function(STEP)
        self.prime = tf.function(
            self._prime, input_signature=[tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32)]
        )
        rows = tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.int32)
        self.advance = tf.function(
            self._advance,
            input_signature=[
                tf.TensorSpec([None, self.vocab_size], tf.float32),  # logits
                self.state_specs,
                tf.TensorSpec([None], tf.int32),  # prev_ids
                tf.TensorSpec([None, self.vocab_size], tf.float32),  # seen
                tf.TensorSpec([None], tf.int32),  # count
                tf.TensorSpec([None], tf.string),  # tail
                tf.TensorSpec([None], tf.string),  # prompt
                rows[0],  # temperature
                rows[1],  # top_k
                rows[0],  # top_p
                rows[0],  # repetition_penalty
                rows[1],  # seed
                rows[1],  # max_new_chars
                tf.TensorSpec([None], tf.string),  # stop
                tf.TensorSpec([], tf.int32),  # steps
            ],
        )

    def _step(self, ids: tf.Tensor, states: list[tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor]]:
        outputs = self._step_fn(ids=ids, **dict(zip(self.names, states)))
        return outputs["logits"], [outputs[name] for name in self.names]

    def _prime(self, ids: tf.Tensor, lengths: tf.Tensor) -> dict[str, Any]:
        """Prompt ids `(batch, time)` as `encode` returns them → the state the decode loop starts from."""
        batch = tf.shape(ids)[0]
        states = [tf.zeros(tf.stack([batch, spec.shape[-1]])) for spec in self.state_specs]
        logits, states = decoding.prime(self._step, ids, lengths, states)
        prev_ids = tf.gather(ids, lengths - 1, batch_dims=1)
        return {
            "logits": logits,
            "states": states,
            "prev_ids": prev_ids,
            "seen": decoding.seen_from_ids(ids, lengths, self.vocab_size),
        }

    def _advance(
        self,
        logits,
        states,
        prev_ids,
        seen,
        count,
        tail,
        prompt,
        temperature,
        top_k,
        top_p,
        penalty,
        seed,
        max_new,
        stop,
        steps,
    ) -> dict[str, Any]:
        """Up to `steps` tokens for every row, from and to a carried `DecodeState`; the text each row added."""
        batch = tf.shape(logits)[0]
        state = decoding.DecodeState(logits, list(states), prev_ids, seen, count >= max_new, count, tail)
        stop_ids = None if self.end_id is None else tf.fill(tf.stack([batch, 1]), self.end_id)
        ids, state = decoding.decode(
            self._step,
            state,
            SamplingSettings(temperature, top_k, top_p, penalty),
            seed,
            max_new,
            steps,
            banned=self.banned,
            stop_ids=stop_ids,
            stop_text=decoding.StopText(self.codec.pieces, stop),
        )
        previous = tf.concat([prev_ids[:, None], ids[:, :-1]], axis=1)
        added = state.count - count
        text = tf.where(tf.sequence_mask(added, tf.shape(ids)[1]), self.codec.pieces(previous, ids), "")
        text = tf.strings.reduce_join(text, axis=1)
        text = tf.where(count == 0, self.codec.finish(prompt, text), text)  # as `:predict` joins it to the prompt
        return {
            "text": text,
            "logits": state.logits,
            "states": state.states,
            "prev_ids": state.prev_ids,
            "seen": state.seen,
            "count": state.count,
            "tail": state.tail,
            "done": state.done,
        }


@dataclass
class Stream:
    """One open stream: its settings and its carried decode state (`None` until primed).

    Touched only by the scheduler thread, except `cancelled`, which the client side sets.
    """

    servable: ServableVersion
    prompt_ids: list[int]
    params: dict[str, Any]
    session: StreamSession
    state: dict[str, Any] | None = None
    cancelled: bool = False


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
    """The thread that advances every open stream, one batched decode chunk per version per tick.

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
        self._decoders: dict[tuple, StreamDecoder] = {}
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
        params: Mapping[str, Any],
        loop: asyncio.AbstractEventLoop,
    ) -> StreamSession:
        """Start a stream from encoded prompt ids (at least one) and checked settings (`parse_stream_request`).

        Its text arrives through the session. A negative seed gets a random one here.
        """
        session = StreamSession(loop)
        if params["max_new_chars"] == 0:
            session.push(_DONE)
            return session
        ids = [int(i) for i in prompt_ids]
        if not ids:  # `encode` primes an empty prompt on a newline, so this is a broken export
            raise RequestError(500, f"the encode signature of version {servable.version} returned no ids")
        params = dict(params)
        if params["seed"] < 0:
            params["seed"] = int(np.random.default_rng().integers(0, SEED_MAX))
        stream = Stream(servable, ids, params, session)
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

    def _decoder(self, servable: ServableVersion) -> StreamDecoder:
        """The version's `StreamDecoder`, built (and traced) once."""
        key = (servable.name, servable.version, id(servable))
        if key not in self._decoders:
            self._decoders[key] = StreamDecoder(servable)
        return self._decoders[key]

    def _tick(self, streams: list[Stream]) -> list[Stream]:
        """Prime the new streams, then one chunk for `streams` (one version); returns those that finished or failed."""
        try:
            decoder = self._decoder(streams[0].servable)
            new = [s for s in streams if s.state is None]
            if new:
                width = max(len(s.prompt_ids) for s in new)
                ids = np.array([s.prompt_ids + [0] * (width - len(s.prompt_ids)) for s in new], np.int32)
                primed = decoder.prime(ids, np.array([len(s.prompt_ids) for s in new], np.int32))
                for i, stream in enumerate(new):
                    stream.state = {
                        "logits": primed["logits"][i],
                        "states": [state[i] for state in primed["states"]],
                        "prev_ids": primed["prev_ids"][i],
                        "seen": primed["seen"][i],
                        "count": np.int32(0),
                        "tail": b"",
                    }
            rows = [s.state for s in streams if s.state is not None]  # all, once primed
            column = {name: np.stack([np.asarray(r[name]) for r in rows]) for name in ("logits", "prev_ids", "seen")}
            settings = {spec.name: [s.params[spec.name] for s in streams] for spec in SETTINGS}
            out = decoder.advance(
                column["logits"],
                [np.stack([r["states"][j] for r in rows]) for j in range(len(decoder.names))],
                column["prev_ids"],
                column["seen"],
                np.array([r["count"] for r in rows], np.int32),
                np.array([r["tail"] for r in rows], dtype=np.object_),
                np.array([s.params["prompt"].encode("utf-8") for s in streams], object),
                np.array(settings["temperature"], np.float32),
                np.array(settings["top_k"], np.int32),
                np.array(settings["top_p"], np.float32),
                np.array(settings["repetition_penalty"], np.float32),
                np.array(settings["seed"], np.int32),
                np.array(settings["max_new_chars"], np.int32),
                np.array([v.encode("utf-8") for v in settings["stop"]], object),
                np.int32(CHUNK),
            )
        except Exception as err:  # report to every stream of this call, then drop them
            error = err if isinstance(err, RequestError) else RequestError(500, f"stream step failed: {err}")
            for stream in streams:
                stream.session.push(error)
            return streams
        out = {k: v.numpy() if hasattr(v, "numpy") else [x.numpy() for x in v] for k, v in out.items()}
        done = []
        for i, stream in enumerate(streams):
            stream.state = {
                "logits": out["logits"][i],
                "states": [state[i] for state in out["states"]],
                "prev_ids": out["prev_ids"][i],
                "seen": out["seen"][i],
                "count": out["count"][i],
                "tail": out["tail"][i],
            }
            text = out["text"][i].decode("utf-8", "replace")
            if text:
                stream.session.push(text)
            if out["done"][i]:
                stream.session.push(_DONE)
                done.append(stream)
        return done

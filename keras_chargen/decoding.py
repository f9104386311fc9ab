"""The decode loop, written once over a step function: prime on the prompt, then sample until every row stops.

Every runtime runs it: `CharGenerator` (the Python API and the SavedModel's `serving_default`), the
id-level TFLite and ONNX generators (`keras_chargen.export.id_generator`) and the `:stream`
scheduler (a chunk of tokens per tick, carrying `DecodeState` between ticks). Only the step
function and the text side (`keras_chargen.codecs`) vary.

A step function maps ids `(batch,)` int32 and a list of states to logits `(batch, vocab)` and the
new states. Each loop iteration draws one token per row with `keras_chargen.sampling.next_token`
(the row's seed and its own token index key the noise, so a row's draws do not depend on the other
rows or on how the loop is cut into chunks), then feeds it. A row stops after `max_new` tokens,
after a token in its `stop_ids`, or once its generated text ends with its stop string; from then on
it emits the padding id 0. The loop ends early when every row has stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import tensorflow as tf

from keras_chargen.sampling import (
    SamplingSettings,
    gumbel_from_row_keys,
    inverse_temperature,
    next_token,
    processors_in_use,
    row_keys,
    seed_keys,
)

StepFn = Callable[[tf.Tensor, list[tf.Tensor]], tuple[tf.Tensor, list[tf.Tensor]]]
AHEAD = 1 << 20  # noise values the lean loop computes ahead at once (4 MiB of float32)
NEVER = -1e9  # added to the logits of ids that are never generated (the OOV id 0, a document-start marker)


class DecodeState(NamedTuple):
    """What the loop carries per row; a stream keeps it between chunks.

    logits: float32 `(batch, vocab)`, the next token's logits; states: the step's states;
    prev_ids: int32 `(batch,)`, the last token fed (word pieces depend on it); seen: float32
    `(batch, vocab)`, 1 where a token is in the row's text (repetition penalty); done: bool `(batch,)`;
    count: int32 `(batch,)`, tokens generated so far (the index of the next draw); tail: tf.string
    `(batch,)`, the last bytes of the generated text, as many as the row's stop string has.
    """

    logits: tf.Tensor
    states: list[tf.Tensor]
    prev_ids: tf.Tensor
    seen: tf.Tensor
    done: tf.Tensor
    count: tf.Tensor
    tail: tf.Tensor


class StopText(NamedTuple):
    """The stop-string rule: `pieces(prev_ids, ids)` is the text a token adds; `stop` tf.string `(batch,)`, "" = off."""

    pieces: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
    stop: tf.Tensor


def ends_with_stop(tail: tf.Tensor, piece: tf.Tensor, stop: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Append `piece` to `tail` (all tf.string `(batch,)`), keep as many last bytes as `stop` has.

    Returns the new tail and whether it equals `stop` (never for an empty `stop`): since the tail
    holds the last bytes of the generated text, that is "the text now ends with `stop`" (a UTF-8
    suffix match on bytes is a match on characters).
    """
    size = tf.strings.length(stop)  # bytes
    text = tail + piece
    tail = tf.strings.substr(text, tf.maximum(tf.strings.length(text) - size, 0), size)
    return tail, tf.logical_and(size > 0, tf.equal(tail, stop))


def prime(
    step: StepFn, ids: tf.Tensor, lengths: tf.Tensor, states: list[tf.Tensor], readout: Callable | None = None
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """Feed the prompt ids `(batch, time)` in one loop; a row's state stops changing after its length `(batch,)`.

    With `readout` (states → logits), `step` may return only the new states (logits None) and the
    output layer runs once, after the loop. Returns the logits after each row's last id and the states.
    """

    def body(t, logits, states):
        new_logits, new_states = step(ids[:, t], states)
        active = (t < lengths)[:, None]  # (batch, 1)
        states = [tf.where(active, new, old) for new, old in zip(new_states, states)]
        if readout is None:
            logits = tf.where(active, new_logits, logits)
        return t + 1, logits, states

    logits = readout(states) if readout is not None else step(ids[:, 0], states)[0] * 0.0
    _, logits, states = tf.while_loop(lambda t, *_: t < tf.shape(ids)[1], body, (0, logits, states))
    return (readout(states) if readout is not None else logits), states


def row_seeds(seed: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
    """Each row's int32 seed `(batch,)`: a `(batch,)` seed as it is; one seed s >= 0 for several rows
    seeds row i with (s + i) mod 2**31 (a negative one stays negative: random)."""
    seed = tf.reshape(tf.cast(seed, tf.int32), [-1])
    spread = seed[0] + tf.range(batch)
    spread = tf.where(spread < 0, spread - (-(2**31)), spread)  # wrapped past 2**31 - 1: back into [0, 2**31)
    spread = tf.where(seed[0] < 0, tf.fill([batch], seed[0]), spread)
    return tf.where(tf.equal(tf.size(seed), 1), spread, seed)


def seen_from_ids(ids: tf.Tensor, lengths: tf.Tensor, vocab: int) -> tf.Tensor:
    """Float32 `(batch, vocab)`: 1 where an id occurs in a row's first `lengths` `ids` `(batch, time)`."""
    valid = tf.range(tf.shape(ids)[1])[None, :] < lengths[:, None]
    # masked by a product, not by index -1: ONNX's OneHot counts negative indices from the end
    hot = tf.one_hot(ids, vocab) * tf.expand_dims(tf.cast(valid, tf.float32), -1)  # (batch, time, vocab)
    return tf.reduce_max(tf.concat([hot, tf.zeros_like(hot[:, :1])], 1), axis=1)


def start_state(
    logits: tf.Tensor,
    states: list[tf.Tensor],
    prev_ids: tf.Tensor,
    seen: tf.Tensor,
    max_new: tf.Tensor,
    with_tail: bool = False,
) -> DecodeState:
    """The loop's state right after priming (`max_new` `(batch,)`: rows at 0 are done already)."""
    batch = tf.shape(logits)[0]
    tail = tf.fill([batch], "") if with_tail else tf.zeros([batch], tf.int32)
    return DecodeState(logits, states, prev_ids, seen, max_new <= 0, tf.zeros([batch], tf.int32), tail)


def decode(
    step: StepFn,
    state: DecodeState,
    settings: SamplingSettings,
    seeds: tf.Tensor,
    max_new: tf.Tensor,
    num_steps: tf.Tensor,
    *,
    banned: Sequence[int] = (0,),
    stop_ids: tf.Tensor | None = None,
    stop_text: StopText | None = None,
    conditional: bool = True,
    lean: bool = True,
    growing_output: bool = False,
) -> tuple[tf.Tensor, DecodeState]:
    """Run up to `num_steps` iterations; returns the ids `(batch, steps)` (0 after a row stops) and the final state.

    When no row uses a filter (repetition penalty, top-k, top-p) or a stop rule, a lean variant of
    the loop runs, chosen once per call: the same draws without those per-step branches, and rows
    simply run to their length.

    Args:
        step: the step function; state: `DecodeState` after priming (or after the previous chunk).
        settings: SamplingSettings, one value per row; seeds: int32 `(batch,)`.
        max_new: int32 `(batch,)`, the most tokens each row generates in all (counting earlier chunks).
        num_steps: int32 `()`, iterations of this call (the loop ends earlier once every row is done).
        banned: ids never generated.
        stop_ids: int32 `(batch, s)` or None; a row stops after generating one of its ids (0 = padding).
        stop_text: StopText or None (then no string op runs, and the loop compiles under XLA).
        conditional: skip unused processors and the stop-string check with `tf.cond` inside the loop;
            False applies every processor at every step of the general loop.
        lean: choose the lean loop when nothing needs the general one (a `tf.cond` around two loops;
            the ONNX exporter fixes tf2onnx's shapeless Loop inputs so onnxruntime runs it).
        growing_output: collect the ids in a growing tensor instead of a `TensorArray` (TFLite lowers
            TensorLists to builtins only with a static element shape, and the batch is not static).
    """
    vocab = state.logits.shape[-1]
    batch = tf.shape(state.logits)[0]
    never = tf.reduce_sum(tf.one_hot(list(banned), vocab, on_value=NEVER, off_value=0.0), axis=0)  # (vocab,)
    keys = seed_keys(seeds)  # (batch,), once per call
    inverse_t = inverse_temperature(settings.temperature)
    in_use = processors_in_use(settings)
    flags = list(in_use[:2])
    if stop_ids is not None:
        flags.append(tf.reduce_any(stop_ids > 0))
    has_stop_text = tf.constant(False)
    if stop_text is not None:
        has_stop_text = tf.reduce_any(tf.strings.length(stop_text.stop) > 0)
        flags.append(has_stop_text)
    general = tf.reduce_any(tf.stack(flags))

    def check_text(tail, prev_ids, next_ids):
        assert stop_text is not None  # only traced when some row has a stop string
        return ends_with_stop(tail, stop_text.pieces(prev_ids, next_ids), stop_text.stop)

    def general_body(t, noise, s: DecodeState, out):
        active = tf.logical_not(s.done)
        next_ids = next_token(
            s.logits + never,
            s.seen > 0,
            settings,
            keys,
            None,
            in_use if conditional else None,
            inverse_t=inverse_t,
            noise=noise,
        )
        next_ids = tf.where(active, next_ids, 0)
        out = tf.concat([out, next_ids[:, None]], axis=1) if growing_output else out.write(t, next_ids)
        count = s.count + tf.cast(active, tf.int32)

        def grow_seen():
            return tf.maximum(s.seen, tf.one_hot(next_ids, vocab) * tf.expand_dims(tf.cast(active, tf.float32), -1))

        seen = tf.cond(in_use[0], grow_seen, lambda: s.seen) if conditional else grow_seen()
        stopped = count >= max_new
        if stop_ids is not None:
            hit = tf.logical_and(tf.equal(stop_ids, next_ids[:, None]), stop_ids > 0)
            stopped = tf.logical_or(stopped, tf.reduce_any(hit, axis=1))
        tail = s.tail
        if stop_text is not None:
            if conditional:  # string ops only when some row has a stop string
                tail, matched = tf.cond(
                    has_stop_text,
                    lambda: check_text(s.tail, s.prev_ids, next_ids),
                    lambda: (s.tail, tf.zeros_like(active)),
                )
            else:
                tail, matched = check_text(s.tail, s.prev_ids, next_ids)
            stopped = tf.logical_or(stopped, tf.logical_and(active, matched))
        done = tf.logical_or(s.done, stopped)
        logits, states = step(next_ids, s.states)  # a stopped row's state no longer matters
        return DecodeState(logits, states, next_ids, seen, done, count, tail), out

    def plain_body(t, noise, carry, out):
        logits, states = carry
        next_ids = next_token(
            logits + never,
            None,
            settings,
            keys,
            None,
            in_use if conditional else None,
            filters=False,
            inverse_t=inverse_t,
            noise=noise,
        )
        out = tf.concat([out, next_ids[:, None]], axis=1) if growing_output else out.write(t, next_ids)
        return step(next_ids, states), out

    def blocked_loop(body, carry, limit, finished):
        """Up to `limit` iterations of `body(t, noise, carry, out) -> carry, out` until `finished(carry)`.

        The Gumbel noise of a block of steps is computed ahead in one vectorized pass (at most
        `AHEAD` values; a row's draw at step t uses its token index count + t, which is its count
        while it is active), so a step pays a gather instead of the generator's ~25 integer ops.
        Returns the steps run, the final carry and the ids `(batch, steps)` (`(batch, limit)` from a
        `TensorArray`).
        """
        static_batch = state.logits.shape[0]
        if static_batch is None:
            block = tf.maximum(1, tf.minimum(limit, AHEAD // (batch * vocab)))
        else:  # a static block (XLA needs static shapes): the last one may compute a little noise for nothing
            block = max(1, AHEAD // (static_batch * vocab))
        if growing_output:
            out = tf.zeros(tf.stack([batch, 0]), tf.int32)
            shapes = (tf.TensorShape([]), tf.nest.map_structure(lambda x: x.shape, carry), tf.TensorShape([None, None]))
        else:
            out, shapes = tf.TensorArray(tf.int32, size=limit, element_shape=tf.TensorShape([None])), None

        def outer(i, carry, out):
            n = tf.minimum(block, limit - i)
            width = n if static_batch is None else block
            keys_ahead = row_keys(keys[None, :], state.count[None, :] + i + tf.range(width)[:, None])  # (width, batch)
            noise = tf.reshape(
                gumbel_from_row_keys(tf.reshape(keys_ahead, [-1]), vocab), tf.stack([width, batch, vocab])
            )

            def inner(t, carry, out):
                noise_t = tf.gather(noise, t)
                noise_t.set_shape(state.logits.shape)  # keep a static batch (XLA) through the loop
                carry, out = body(i + t, noise_t, carry, out)
                return t + 1, carry, out

            t, carry, out = tf.while_loop(
                lambda t, c, o: tf.logical_and(t < n, tf.logical_not(finished(c))),
                inner,
                (0, carry, out),
                shape_invariants=shapes,
            )
            return i + t, carry, out

        steps, carry, out = tf.while_loop(
            lambda i, c, o: tf.logical_and(i < limit, tf.logical_not(finished(c))),
            outer,
            (0, carry, out),
            shape_invariants=shapes,
        )
        if not growing_output:  # (batch, limit): the caller cuts it to `steps` where the loop can end early
            out = tf.cond(
                steps > 0, lambda: tf.transpose(out.stack()), lambda: tf.zeros(tf.stack([batch, 0]), tf.int32)
            )
        return steps, carry, out

    def general_loop():
        limit = tf.maximum(num_steps, 0)
        steps, final, ids = blocked_loop(general_body, state, limit, lambda s: tf.reduce_all(s.done))
        return ids[:, :steps], final

    def plain_loop():
        """Rows run to their length, carrying only logits and states (TF pays per loop variable and
        step); the count, the end and the padding follow after the loop."""
        remaining = tf.where(state.done, 0, max_new - state.count)
        limit = tf.maximum(tf.minimum(num_steps, tf.reduce_max(tf.concat([remaining, [0]], 0))), 0)
        carry = (state.logits, state.states)
        steps, (logits, states), ids = blocked_loop(plain_body, carry, limit, lambda c: tf.constant(False))
        valid = tf.range(tf.shape(ids)[1])[None, :] < remaining[:, None]  # (batch, steps); a static width under XLA
        ids = tf.where(valid, ids, 0)
        prev_ids = tf.cond(steps > 0, lambda: ids[:, -1], lambda: state.prev_ids)
        count = state.count + tf.minimum(remaining, steps)
        done = tf.logical_or(state.done, count >= max_new)
        return ids, state._replace(logits=logits, states=states, prev_ids=prev_ids, count=count, done=done)

    return tf.cond(general, general_loop, plain_loop) if lean else general_loop()

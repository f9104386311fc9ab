"""The decode loop, written once over a step function: prime on the prompt, then sample until every row stops.

Every runtime runs it: `CharGenerator` (the Python API, and the SavedModel's `serving_default`,
`decode_start` and `decode_chunk`) and the id-level TFLite and ONNX generators
(`keras_chargen.export.id_generator`). Only the step function and the text side
(`keras_chargen.codecs`) vary; the set-up (`begin`: prime, last prompt id, seen ids, stop sequences,
start state) and the seeds (`resolve_seeds`) are written here once too.

A step function maps ids `(batch,)` int32 and a list of states to logits `(batch, vocab)` and the
new states. Each loop iteration draws one token per row with `keras_chargen.sampling.next_token`
(the row's seed and its own token index key the noise, so a row's draws do not depend on the other
rows or on how the loop is cut into chunks), then feeds it. A row stops after `max_new` tokens or
once its generated ids end with one of its stop sequences (`keras_chargen.contract`: `stop_ids`
`(batch, n, s)`, right-padded with 0); from then on it emits the padding id 0. The loop ends early
when every row has stopped.
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
    """What the loop carries per row; a stream keeps it between chunks (`contract.DECODE_STATE`).

    logits: float32 `(batch, vocab)`, the next token's logits; states: the step's states;
    prev_ids: int32 `(batch,)`, the last token fed (word pieces depend on it); seen: float32
    `(batch, vocab)`, 1 where a token is in the row's text (repetition penalty); done: bool `(batch,)`;
    count: int32 `(batch,)`, tokens generated so far (the index of the next draw); recent: int32
    `(batch, s)`, the last generated ids, most recent first, 0 where none (stop sequences).
    """

    logits: tf.Tensor
    states: list[tf.Tensor]
    prev_ids: tf.Tensor
    seen: tf.Tensor
    done: tf.Tensor
    count: tf.Tensor
    recent: tf.Tensor


class StopSequences(NamedTuple):
    """`stop_ids` `(batch, n, s)` prepared once per call for matching against `DecodeState.recent`.

    reversed: int32 `(batch, n, s)`, each sequence last id first; need: bool `(batch, n, s)`, the
    positions a sequence covers; usable: bool `(batch, n)`, sequences that can match (non-empty, no 0
    inside).
    """

    reversed: tf.Tensor
    need: tf.Tensor
    usable: tf.Tensor


def with_end_ids(stop_ids: tf.Tensor, end_ids: Sequence[int]) -> tf.Tensor:
    """`stop_ids` `(batch, n, s)` with one more (zero) column and a sequence per id of `end_ids` (e.g. `</doc>`).

    The zero column gives even an empty `(batch, n, 0)` a width of 1; the extra sequences stop every row.
    """
    stop_ids = tf.pad(tf.cast(stop_ids, tf.int32), [[0, 0], [0, 0], [0, 1]])
    for end in end_ids:
        shape = tf.shape(stop_ids)
        first = tf.cast(tf.equal(tf.range(shape[2]), 0), tf.int32)  # [1, 0, 0, …] (an int OneHot breaks ONNX)
        sequence = tf.broadcast_to(first * end, tf.stack([shape[0], 1, shape[2]]))
        stop_ids = tf.concat([stop_ids, sequence], axis=1)
    return stop_ids


def prepare_stops(stop_ids: tf.Tensor) -> StopSequences:
    """Reverse each sequence of `stop_ids` `(batch, n, s)` (right-padded with 0), once, with a one-hot product
    (no gather; `expand_dims`, not `[..., None]`, which TFLite converts only as a Flex op at rank 3)."""
    width = tf.shape(stop_ids)[2]
    positions = tf.range(width)  # (s,)
    nonzero = tf.cast(stop_ids != 0, tf.int32)
    lengths = tf.reduce_max(tf.concat([nonzero * (positions + 1), tf.zeros_like(nonzero[:, :, :1])], 2), 2)  # (b, n)
    source = tf.expand_dims(lengths, 2) - 1 - positions  # (b, n, s): reversed[k] = sequence[length - 1 - k]
    pick = tf.cast(tf.equal(tf.expand_dims(source, 3), positions), tf.int32)  # (b, n, s, s)
    reversed_ids = tf.reduce_sum(pick * tf.expand_dims(stop_ids, 2), axis=3)
    need = positions < tf.expand_dims(lengths, 2)
    inner_zero = tf.reduce_any(tf.logical_and(need, reversed_ids <= 0), axis=2)
    return StopSequences(reversed_ids, need, tf.logical_and(lengths > 0, tf.logical_not(inner_zero)))


def push_recent(recent: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """`recent` `(batch, s)` with `ids` `(batch,)` in front (most recent first), the oldest dropped."""
    return tf.concat([ids[:, None], recent[:, :-1]], axis=1)


def stop_hit(recent: tf.Tensor, stops: StopSequences) -> tf.Tensor:
    """Whether each row's generated ids (`recent` `(batch, s)`, most recent first) end with one of its sequences."""
    differs = tf.logical_and(stops.need, tf.not_equal(tf.expand_dims(recent, 1), stops.reversed))  # (b, n, s)
    matched = tf.logical_and(stops.usable, tf.logical_not(tf.reduce_any(differs, axis=2)))  # (b, n)
    return tf.reduce_any(matched, axis=1)


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
    seeds row i with (s + i) mod 2**31 (a negative one stays negative: each row draws its own)."""
    seed = tf.reshape(tf.cast(seed, tf.int32), [-1])
    spread = seed[0] + tf.range(batch)
    spread = tf.where(spread < 0, spread - (-(2**31)), spread)  # wrapped past 2**31 - 1: back into [0, 2**31)
    spread = tf.where(seed[0] < 0, tf.fill([batch], seed[0]), spread)
    return tf.where(tf.equal(tf.size(seed), 1), spread, seed)


def random_seeds(batch: tf.Tensor) -> tf.Tensor:
    """`(batch,)` random int32 seeds in 0..2**31-1, from two float uniforms (16 + 15 bits): TF's RandomUniform,
    TFLite's builtin RANDOM_UNIFORM and ONNX's RandomUniformLike (an int32 uniform is no TFLite builtin)."""
    draws = tf.random.uniform(tf.stack([2, batch]))  # float32 in [0, 1)
    high = tf.minimum(tf.cast(draws[0] * 65536.0, tf.int32), 65535)
    low = tf.minimum(tf.cast(draws[1] * 32768.0, tf.int32), 32767)
    return high * 32768 + low  # <= SEED_MAX


def resolve_seeds(seed: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
    """The seed each row uses `(batch,)`: `row_seeds`, with a random seed in 0..SEED_MAX where it is negative."""
    seeds = row_seeds(seed, batch)
    return tf.where(seeds < 0, random_seeds(batch), seeds)


def seen_from_ids(ids: tf.Tensor, lengths: tf.Tensor, vocab: int) -> tf.Tensor:
    """Float32 `(batch, vocab)`: 1 where an id occurs in a row's first `lengths` `ids` `(batch, time)`."""
    valid = tf.range(tf.shape(ids)[1])[None, :] < lengths[:, None]
    # masked by a product, not by index -1: ONNX's OneHot counts negative indices from the end
    hot = tf.one_hot(ids, vocab) * tf.expand_dims(tf.cast(valid, tf.float32), -1)  # (batch, time, vocab)
    return tf.reduce_max(tf.concat([hot, tf.zeros_like(hot[:, :1])], 1), axis=1)


def start_state(
    logits: tf.Tensor, states: list[tf.Tensor], prev_ids: tf.Tensor, seen: tf.Tensor, max_new: tf.Tensor, width
) -> DecodeState:
    """The loop's state right after priming (`max_new` `(batch,)`: rows at 0 are done already; `width`: the
    stop sequences' width, `tf.shape(stop_ids)[2]`)."""
    batch = tf.shape(logits)[0]
    recent = tf.zeros(tf.stack([batch, width]), tf.int32)
    return DecodeState(logits, states, prev_ids, seen, max_new <= 0, tf.zeros([batch], tf.int32), recent)


def begin(
    prime_fn: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, list[tf.Tensor]]],
    ids: tf.Tensor,
    lengths: tf.Tensor,
    max_new: tf.Tensor,
    stop_ids: tf.Tensor,
    vocab: int,
    end_ids: Sequence[int] = (),
) -> tuple[DecodeState, tf.Tensor]:
    """The decode set-up every runtime shares: prime, last prompt id, seen ids, stop sequences, start state.

    Args:
        prime_fn: `(ids, lengths) -> (logits, states)`, e.g. `CharGenerator.prime`.
        ids: int32 `(batch, time)`, the ids each row is primed on (right-padded); lengths: int32 `(batch,)`, >= 1.
        max_new: int32 `(batch,)`; stop_ids: int32 `(batch, n, s)`; vocab: the logits' width.
        end_ids: ids that stop every row by themselves (a document model's end marker).

    Returns the state after priming and the stop sequences to decode with (`with_end_ids`).
    """
    logits, states = prime_fn(ids, lengths)
    prev_ids = tf.gather(ids, lengths - 1, batch_dims=1)  # (batch,) the last prompt id
    stop_ids = with_end_ids(stop_ids, end_ids)
    seen = seen_from_ids(ids, lengths, vocab)
    return start_state(logits, states, prev_ids, seen, max_new, tf.shape(stop_ids)[2]), stop_ids


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
    conditional: bool = True,
    lean: bool = True,
    growing_output: bool = False,
) -> tuple[tf.Tensor, DecodeState]:
    """Run up to `num_steps` iterations; returns the ids `(batch, steps)` (0 after a row stops) and the final state.

    When no row uses a filter (repetition penalty, top-k, top-p) or a stop sequence, a lean variant of
    the loop runs, chosen once per call: the same draws without those per-step branches, and rows
    simply run to their length.

    Args:
        step: the step function; state: `DecodeState` after priming (or after the previous chunk).
        settings: SamplingSettings, one value per row; seeds: int32 `(batch,)`.
        max_new: int32 `(batch,)`, the most tokens each row generates in all (counting earlier chunks).
        num_steps: int32 `()`, iterations of this call (the loop ends earlier once every row is done).
        banned: ids never generated.
        stop_ids: int32 `(batch, n, s)` stop sequences (as `begin` returns them), or None; a row stops once
            its generated ids end with one of them (see the module docstring). `state.recent` is
            fitted to their width.
        conditional: skip unused processors and the stop check with `tf.cond` inside the loop;
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
    stops = None
    has_stops = tf.constant(False)
    if stop_ids is not None:
        stops = prepare_stops(tf.cast(stop_ids, tf.int32))
        has_stops = tf.reduce_any(stops.usable)
        flags.append(has_stops)
        width = tf.shape(stop_ids)[2]
        recent = tf.pad(state.recent, tf.stack([[0, 0], [0, tf.maximum(width - tf.shape(state.recent)[1], 0)]]))
        state = state._replace(recent=recent[:, :width])
    general = tf.reduce_any(tf.stack(flags))

    def check_stops(recent, next_ids):
        assert stops is not None  # only traced with stop sequences
        recent = push_recent(recent, next_ids)
        return recent, stop_hit(recent, stops)

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
        recent = s.recent
        if stops is not None:
            if conditional:  # the matching runs only when some row has a stop sequence
                recent, hit = tf.cond(
                    has_stops, lambda: check_stops(s.recent, next_ids), lambda: (s.recent, tf.zeros_like(active))
                )
            else:
                recent, hit = check_stops(s.recent, next_ids)
            stopped = tf.logical_or(stopped, tf.logical_and(active, hit))
        done = tf.logical_or(s.done, stopped)
        logits, states = step(next_ids, s.states)  # a stopped row's state no longer matters
        return DecodeState(logits, states, next_ids, seen, done, count, recent), out

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

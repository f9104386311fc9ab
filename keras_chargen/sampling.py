"""Choosing the next token from logits: the logit processors and the seeded draw, per row, in-graph.

Each processor is a small pure TF function on `(batch, vocab)` logits with one setting per row, and
each has an "off" value, so that a batch can mix strategies (and a SavedModel signature can take
them all as inputs). They are applied in this order (as in Hugging Face's `generate`):

1. repetition penalty (CTRL): tokens already in the row's text get `logit / penalty` when the logit
   is positive and `logit * penalty` when it is negative; 1 = off;
2. temperature: `logit / T`; rows at T = 0 are greedy (argmax of the penalized logits);
3. top-k: only the k highest logits stay (ties broken towards the lower id, as argmax); 0 = off;
4. top-p (nucleus): only the smallest set of highest-probability tokens whose probabilities sum
   to at least p stays (always at least the most likely one); 1 = off;
5. the draw: `argmax(logits + Gumbel noise)` (the Gumbel-max trick), which samples exactly
   `categorical(softmax(logits))`, from stateless noise seeded with `(seed, step)`.

Everything compiles under XLA (sorts, cumsum, gathers; no `StatelessMultinomial`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from keras_chargen.errors import ChargenError

TOP_K_OFF, TOP_P_OFF, PENALTY_OFF = 0, 1.0, 1.0  # the in-graph "off" values


class SamplingSettings(NamedTuple):
    """Per-row sampling settings, each a `(batch,)` tensor; see the module docstring for the off values."""

    temperature: tf.Tensor  # float32, >= 0; 0 = greedy
    top_k: tf.Tensor  # int32, >= 0; 0 = off
    top_p: tf.Tensor  # float32, in (0, 1]; 1 = off
    repetition_penalty: tf.Tensor  # float32, > 0; 1 = off


def sampling_settings(
    batch: tf.Tensor, temperature, top_k=TOP_K_OFF, top_p=TOP_P_OFF, repetition_penalty=PENALTY_OFF
) -> SamplingSettings:
    """`SamplingSettings` with every value (a scalar or one per row) broadcast to `(batch,)`."""

    def row(value, dtype):
        return tf.broadcast_to(tf.cast(value, dtype), tf.reshape(batch, [1]))

    return SamplingSettings(
        row(temperature, tf.float32), row(top_k, tf.int32), row(top_p, tf.float32), row(repetition_penalty, tf.float32)
    )


def apply_repetition_penalty(logits: tf.Tensor, seen: tf.Tensor, penalty: tf.Tensor) -> tf.Tensor:
    """CTRL's penalty on the tokens `seen` `(batch, vocab)` bool: positive logits / penalty, negative ones * penalty."""
    penalty = penalty[:, None]  # (batch, 1)
    penalized = tf.where(logits > 0, logits / penalty, logits * penalty)
    return tf.where(seen, penalized, logits)  # (batch, vocab)


def apply_temperature(logits: tf.Tensor, temperature: tf.Tensor) -> tf.Tensor:
    """Divide each row's logits by its temperature (rows at temperature 0 are left as they are)."""
    safe = tf.where(temperature > 0, temperature, tf.ones_like(temperature))
    return logits / safe[:, None]  # (batch, vocab)


def _ranks(logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The ids in descending-logit order `(batch, vocab)` and each id's rank in it (ties: lower id first)."""
    order = tf.argsort(logits, axis=-1, direction="DESCENDING", stable=True)
    return order, tf.argsort(order, axis=-1, stable=True)  # the inverse permutation = ranks


def apply_top_k(logits: tf.Tensor, top_k: tf.Tensor) -> tf.Tensor:
    """Keep the `top_k` `(batch,)` highest logits of each row (exactly k, ties towards the lower id); 0 = all."""
    _, ranks = _ranks(logits)
    keep = tf.logical_or(ranks < top_k[:, None], (top_k <= 0)[:, None])  # (batch, vocab)
    return tf.where(keep, logits, tf.constant(-float("inf"), logits.dtype))


def apply_top_p(logits: tf.Tensor, top_p: tf.Tensor) -> tf.Tensor:
    """Keep each row's nucleus: its most likely tokens until their probabilities sum to `top_p` `(batch,)`; 1 = all.

    A token stays when the probability of the tokens ranked before it is below p, so the most
    likely token always stays and p -> 0 is greedy.
    """
    order, ranks = _ranks(logits)
    probs = tf.nn.softmax(tf.gather(logits, order, batch_dims=1), axis=-1)  # (batch, vocab), sorted
    before = tf.math.cumsum(probs, axis=-1, exclusive=True)
    keep_sorted = before < top_p[:, None]
    keep = tf.gather(keep_sorted, ranks, batch_dims=1)  # back to id order
    keep = tf.logical_or(keep, (top_p >= 1.0)[:, None])  # exactly off at 1, whatever the rounding
    return tf.where(keep, logits, tf.constant(-float("inf"), logits.dtype))


def _when(condition: tf.Tensor, process, logits: tf.Tensor, setting: tf.Tensor) -> tf.Tensor:
    """`process(logits, setting)` if `condition` (some row uses it), else `logits`: skips the sorts when off."""
    return tf.cond(condition, lambda: process(logits, setting), lambda: logits)


def sample_next(
    logits: tf.Tensor,
    temperature: tf.Tensor,
    seed: tf.Tensor,
    top_k: tf.Tensor | None = None,
    top_p: tf.Tensor | None = None,
    in_use: tuple[tf.Tensor, tf.Tensor] | None = None,
) -> tf.Tensor:
    """Next ids `(batch,)` int32: a draw from the filtered `softmax(logits / T)`, or argmax where `T == 0`.

    The draw uses the Gumbel-max trick, `argmax(filtered logits / T + Gumbel noise)`, which samples
    exactly that categorical distribution; its stateless uniform noise also compiles under XLA,
    where `StatelessMultinomial` does not. The noise does not depend on top-k/top-p, so with the
    filters off the draw is the same as plain temperature sampling.

    Args:
        logits: float32 `(batch, vocab)` (already penalized, if a repetition penalty is used).
        temperature: float32 `(batch,)`, each >= 0.
        seed: int64 `(2,)`, the stateless seed of this step; the same seed gives the same draw.
        top_k: int32 `(batch,)` or None; 0 or None = off.
        top_p: float32 `(batch,)` or None; 1 or None = off.
        in_use: whether any row uses top-k, top-p (bool scalars); None: found from `top_k`, `top_p`.
    """
    use_top_k, use_top_p = in_use or (
        tf.reduce_any(top_k > 0) if top_k is not None else None,
        tf.reduce_any(top_p < 1) if top_p is not None else None,
    )
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    scaled = apply_temperature(logits, temperature)
    if top_k is not None:
        scaled = _when(use_top_k, apply_top_k, scaled, top_k)
    if top_p is not None:
        scaled = _when(use_top_p, apply_top_p, scaled, top_p)
    uniform = tf.random.stateless_uniform(tf.shape(logits), seed, minval=1e-12, maxval=1.0)
    gumbel = -tf.math.log(-tf.math.log(uniform))  # (batch, vocab)
    sampled = tf.argmax(scaled + gumbel, axis=-1, output_type=tf.int32)
    return tf.where(temperature > 0, sampled, greedy)


def processors_in_use(settings: SamplingSettings) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Whether any row uses the repetition penalty, top-k, top-p (bool scalars).

    A generation loop computes them once, outside the loop: the processors of unused strategies
    (sorts, for top-k and top-p) are then skipped at every step for the price of a `tf.cond`.
    """
    return (
        tf.reduce_any(settings.repetition_penalty != PENALTY_OFF),
        tf.reduce_any(settings.top_k > 0),
        tf.reduce_any(settings.top_p < TOP_P_OFF),
    )


def next_token(
    logits: tf.Tensor,
    seen: tf.Tensor,
    settings: SamplingSettings,
    seed: tf.Tensor,
    in_use: tuple[tf.Tensor, tf.Tensor, tf.Tensor] | None = None,
) -> tf.Tensor:
    """All processors in order, then the draw: next ids `(batch,)` int32.

    Args:
        logits: float32 `(batch, vocab)`.
        seen: bool `(batch, vocab)`, the tokens already in each row's text (for the repetition penalty).
        settings: SamplingSettings, one value per row.
        seed: int64 `(2,)`, the stateless seed of this step.
        in_use: `processors_in_use(settings)`, or None to find it here.
    """
    use_penalty, use_top_k, use_top_p = in_use or processors_in_use(settings)
    logits = _when(use_penalty, lambda x, p: apply_repetition_penalty(x, seen, p), logits, settings.repetition_penalty)
    return sample_next(logits, settings.temperature, seed, settings.top_k, settings.top_p, (use_top_k, use_top_p))


# --- validation of explicit values (Python API, CLI); None means off ---
def _is_number(value, integer: bool = False) -> bool:
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    return isinstance(value, kinds) and not isinstance(value, (bool, np.bool_))


def check_top_k(value) -> int:
    """`top_k` as an int >= 1 (None: off, 0); `ChargenError` otherwise."""
    if value is None:
        return TOP_K_OFF
    if not _is_number(value, integer=True) or value < 1:
        raise ChargenError(f"top_k must be an integer >= 1; got {value!r}")
    return int(value)


def check_top_p(value) -> float:
    """`top_p` as a float in (0, 1] (None: off, 1.0); `ChargenError` otherwise."""
    if value is None:
        return TOP_P_OFF
    if not _is_number(value) or not 0 < float(value) <= 1:  # NaN fails the comparison too
        raise ChargenError(f"top_p must be a number in (0, 1]; got {value!r}")
    return float(value)


def check_repetition_penalty(value) -> float:
    """`repetition_penalty` as a finite float > 0 (None: off, 1.0); `ChargenError` otherwise."""
    if value is None:
        return PENALTY_OFF
    if not _is_number(value) or not math.isfinite(float(value)) or not float(value) > 0:
        raise ChargenError(f"repetition_penalty must be a finite number > 0; got {value!r}")
    return float(value)

"""Choosing the next token from logits: the logit processors and the seeded draw, per row, in-graph.

Each processor is a small pure TF function on `(batch, vocab)` logits with one setting per row, and
each has an "off" value (`keras_chargen.settings`), so that a batch can mix strategies and every
export can take them all as inputs. They are applied in this order (as in Hugging Face's `generate`):

1. repetition penalty (CTRL): tokens already in the row's text get `logit / penalty` when the logit
   is positive and `logit * penalty` when it is negative; 1 = off;
2. temperature: `logit / T`; rows at T = 0 are greedy (argmax of the penalized logits);
3. top-k: only the logits at or above the row's k-th highest stay (ties at it stay too); 0 = off;
4. top-p (nucleus): only the highest-probability tokens whose probabilities before them sum to
   less than p stay (always at least the most likely one); 1 = off;
5. the draw: `argmax(logits + Gumbel noise)` (the Gumbel-max trick), which samples exactly
   `categorical(softmax(logits))`.

The noise comes from a counter-based generator (`uniform_noise`): each value is a pure function of
(seed, step, token), built only from int32 multiply, add, xor and arithmetic right shift, which give
bit-identical results in TensorFlow, LiteRT (TFLite builtins) and onnxruntime. So the same seed and
settings draw the same ids on every runtime wherever their logits agree. Filters are thresholds
(`top_k` values, a cumulative sum), not scatters, so they too convert to TFLite builtins and ONNX.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from keras_chargen.settings import BY_NAME

TOP_K_OFF = BY_NAME["top_k"].off
TOP_P_OFF = BY_NAME["top_p"].off
PENALTY_OFF = BY_NAME["repetition_penalty"].off

# murmur3's 32-bit finalizer constants, and odd multipliers that spread the counters, as int32
_M1, _M2 = -2048144789, -1028477387  # 0x85EBCA6B, 0xC2B2AE35
_SEED_MULT, _STEP_MULT, _TOKEN_MULT = -1640531535, 1779033703, 668265263  # 0x9E3779B1, 0x6A09E667, 0x27D4EB2F


class SamplingSettings(NamedTuple):
    """Per-row sampling settings, each a `(batch,)` tensor; off values in `keras_chargen.settings`."""

    temperature: tf.Tensor  # float32, >= 0; 0 = greedy
    top_k: tf.Tensor  # int32, >= 0; 0 = off
    top_p: tf.Tensor  # float32, in (0, 1]; 1 = off
    repetition_penalty: tf.Tensor  # float32, > 0; 1 = off


def sampling_settings(
    batch, temperature, top_k=TOP_K_OFF, top_p=TOP_P_OFF, repetition_penalty=PENALTY_OFF
) -> SamplingSettings:
    """`SamplingSettings` with every value (a scalar or one per row) broadcast to `(batch,)`."""

    def row(value, dtype):
        return tf.broadcast_to(tf.cast(value, dtype), tf.reshape(batch, [1]))

    return SamplingSettings(
        row(temperature, tf.float32), row(top_k, tf.int32), row(top_p, tf.float32), row(repetition_penalty, tf.float32)
    )


# --- the counter-based generator ---
def _shift_right(x: tf.Tensor, bits: int) -> tf.Tensor:
    """Logical right shift of int32 from the arithmetic one (TFLite has no BitwiseAnd): clear the sign fill."""
    return tf.bitwise.bitwise_xor(tf.bitwise.right_shift(x, bits), tf.bitwise.right_shift(x, 31) * (2 ** (32 - bits)))


def mix(x: tf.Tensor) -> tf.Tensor:
    """murmur3's 32-bit finalizer on int32 (wrapping multiplies): a bijection that scrambles every bit."""
    x = tf.bitwise.bitwise_xor(x, _shift_right(x, 16)) * _M1
    x = tf.bitwise.bitwise_xor(x, _shift_right(x, 13)) * _M2
    return tf.bitwise.bitwise_xor(x, _shift_right(x, 16))


def uniform_noise(seed: tf.Tensor, step: tf.Tensor, vocab: int) -> tf.Tensor:
    """Uniform float32 `(batch, vocab)` in (0, 1), a pure function of `seed`, `step` (int32 `(batch,)`) and token.

    23 random bits per value: `(2 * (h >> 9) + 2**23 + 1) / 2**24` is odd over 2**24, exact in float32,
    never 0 or 1 (a shift and an offset, not a modulo: onnxruntime's modulo of negatives differs).
    """
    row_key = mix(mix(tf.cast(seed, tf.int32) * _SEED_MULT) + tf.cast(step, tf.int32) * _STEP_MULT)  # (batch,)
    tokens = tf.range(vocab, dtype=tf.int32) * _TOKEN_MULT  # (vocab,)
    bits = mix(row_key[:, None] + tokens[None, :])  # (batch, vocab)
    odd = tf.bitwise.right_shift(bits, 9) * 2 + (2**23 + 1)  # in [1, 2**24 - 1]
    return tf.cast(odd, tf.float32) * (1.0 / 2**24)


def gumbel_noise(seed: tf.Tensor, step: tf.Tensor, vocab: int) -> tf.Tensor:
    """Gumbel(0, 1) noise `(batch, vocab)` from `uniform_noise`."""
    return -tf.math.log(-tf.math.log(uniform_noise(seed, step, vocab)))


# --- the processors ---
def apply_repetition_penalty(logits: tf.Tensor, seen: tf.Tensor, penalty: tf.Tensor) -> tf.Tensor:
    """CTRL's penalty on the tokens `seen` `(batch, vocab)` bool: positive logits / penalty, negative ones * penalty."""
    penalty = penalty[:, None]  # (batch, 1)
    penalized = tf.where(logits > 0, logits / penalty, logits * penalty)
    return tf.where(seen, penalized, logits)  # (batch, vocab)


def apply_temperature(logits: tf.Tensor, temperature: tf.Tensor) -> tf.Tensor:
    """Divide each row's logits by its temperature (rows at temperature 0 are left as they are)."""
    safe = tf.where(temperature > 0, temperature, tf.ones_like(temperature))
    return logits / safe[:, None]  # (batch, vocab)


def _sorted(logits: tf.Tensor) -> tf.Tensor:
    """Each row's logits in descending order `(batch, vocab)` (TFLite TOPK_V2, ONNX TopK)."""
    vocab = logits.shape[-1] if logits.shape[-1] is not None else tf.shape(logits)[-1]
    return tf.math.top_k(logits, k=vocab, sorted=True).values


def _keep_from(logits: tf.Tensor, sorted_logits: tf.Tensor, keep_sorted: tf.Tensor) -> tf.Tensor:
    """Keep the logits at or above the smallest kept sorted value of each row; -inf elsewhere."""
    threshold = tf.reduce_min(tf.where(keep_sorted, sorted_logits, float("inf")), axis=-1, keepdims=True)
    return tf.where(logits >= threshold, logits, float("-inf"))


def apply_top_k(logits: tf.Tensor, top_k: tf.Tensor) -> tf.Tensor:
    """Keep the logits at or above each row's `top_k` `(batch,)`-th highest (ties stay); 0 = all."""
    sorted_logits = _sorted(logits)
    ranks = tf.range(tf.shape(logits)[-1])[None, :]  # (1, vocab)
    keep_sorted = tf.logical_or(ranks < top_k[:, None], (top_k <= 0)[:, None])
    return _keep_from(logits, sorted_logits, keep_sorted)


def apply_top_p(logits: tf.Tensor, top_p: tf.Tensor) -> tf.Tensor:
    """Keep each row's nucleus: its most likely tokens until their probabilities sum to `top_p` `(batch,)`; 1 = all.

    A token stays when the probability of the tokens ranked before it is below p, so the most
    likely token always stays and p -> 0 is greedy.
    """
    sorted_logits = _sorted(logits)
    probs = tf.nn.softmax(sorted_logits, axis=-1)  # (batch, vocab), descending
    before = tf.math.cumsum(probs, axis=-1, exclusive=True)
    keep_sorted = tf.logical_or(before < top_p[:, None], (top_p >= 1.0)[:, None])  # exactly off at 1
    return _keep_from(logits, sorted_logits, keep_sorted)


def processors_in_use(settings: SamplingSettings) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Whether any row uses the repetition penalty, top-k, top-p, a temperature > 0 (bool scalars).

    A generation loop computes them once, outside the loop, and skips the processors nobody uses for
    the price of a `tf.cond` per step (the result is the same: an off processor changes nothing).
    """
    return (
        tf.reduce_any(settings.repetition_penalty != PENALTY_OFF),
        tf.reduce_any(settings.top_k > 0),
        tf.reduce_any(settings.top_p < TOP_P_OFF),
        tf.reduce_any(settings.temperature > 0),
    )


def next_token(
    logits: tf.Tensor,
    seen: tf.Tensor,
    settings: SamplingSettings,
    seed: tf.Tensor,
    step: tf.Tensor,
    in_use: tuple[tf.Tensor, ...] | None = None,
) -> tf.Tensor:
    """All processors in order, then the draw: next ids `(batch,)` int32.

    Args:
        logits: float32 `(batch, vocab)` (tokens never to generate already at a very low value).
        seen: bool `(batch, vocab)`, the tokens already in each row's text (for the repetition penalty).
        settings: SamplingSettings, one value per row.
        seed: int32 `(batch,)`, each row's seed; step: int32 `(batch,)`, the index of the token drawn.
        in_use: `processors_in_use(settings)` to skip unused processors with `tf.cond` (TF only: the
            converters get one straight graph), or None to apply every processor.
    """
    vocab = logits.shape[-1]

    def maybe(index, fn, x):
        return fn(x) if in_use is None else tf.cond(in_use[index], lambda: fn(x), lambda: x)

    logits = maybe(0, lambda x: apply_repetition_penalty(x, seen, settings.repetition_penalty), logits)
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)

    def draw(x):
        x = apply_temperature(x, settings.temperature)
        x = maybe(1, lambda z: apply_top_k(z, settings.top_k), x)
        x = maybe(2, lambda z: apply_top_p(z, settings.top_p), x)
        return tf.argmax(x + gumbel_noise(seed, step, vocab), axis=-1, output_type=tf.int32)

    sampled = draw(logits) if in_use is None else tf.cond(in_use[3], lambda: draw(logits), lambda: greedy)
    return tf.where(settings.temperature > 0, sampled, greedy)

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

from keras_chargen.contract import SAMPLING_STAGES
from keras_chargen.settings import BY_NAME

TOP_K_OFF = BY_NAME["top_k"].off
TOP_P_OFF = BY_NAME["top_p"].off
PENALTY_OFF = BY_NAME["repetition_penalty"].off

# murmur3's 32-bit finalizer multipliers, and odd multipliers that spread the counters, as int32
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


def settings_from(values, batch) -> SamplingSettings:
    """`SamplingSettings` from `{name: value}` (any other keys ignored), each broadcast to `(batch,)` in its dtype."""
    dtypes = {"float32": tf.float32, "int32": tf.int32}
    return SamplingSettings(
        *(
            tf.broadcast_to(tf.cast(values[name], dtypes[BY_NAME[name].dtype]), tf.reshape(batch, [1]))
            for name in SamplingSettings._fields
        )
    )


# --- the counter-based generator ---
def mix(x: tf.Tensor) -> tf.Tensor:
    """Two xorshift-multiply rounds of murmur3's 32-bit finalizer on int32 (wrapping multiplies).

    The shifts are arithmetic (TFLite has no BitwiseAnd to make them logical): each xorshift then
    maps two inputs to one output, uniformly, and the odd multiply spreads the bits again; the noise
    reads the high bits, which depend on every input bit.
    """
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16)) * _M1
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 13)) * _M2


def seed_keys(seed: tf.Tensor) -> tf.Tensor:
    """int32 `(batch,)` keys of the row seeds; a loop computes them once and passes them to `uniform_from_keys`."""
    return mix(tf.cast(seed, tf.int32) * _SEED_MULT)


def row_keys(keys: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
    """int32 keys of (row seed, step), any shape broadcasting `keys` (from `seed_keys`) against `step`."""
    return mix(keys + tf.cast(step, tf.int32) * _STEP_MULT)


def uniform_from_row_keys(row_key: tf.Tensor, vocab: int) -> tf.Tensor:
    """`uniform_noise` `(batch, vocab)` from `row_keys(seed_keys(seed), step)` `(batch,)`."""
    tokens = tf.range(vocab, dtype=tf.int32) * _TOKEN_MULT  # (vocab,)
    bits = mix(row_key[:, None] + tokens[None, :])  # (batch, vocab)
    # the high 23 bits h >> 9, as (2 * (h >> 9) + 2**23 + 1) / 2**24: exact in float32, odd over 2**24
    return tf.cast(tf.bitwise.right_shift(bits, 9), tf.float32) * (1.0 / 2**23) + (0.5 + 1.0 / 2**24)


def gumbel_from_row_keys(row_key: tf.Tensor, vocab: int) -> tf.Tensor:
    """Gumbel(0, 1) noise `(batch, vocab)` from `row_keys` `(batch,)`."""
    return -tf.math.log(-tf.math.log(uniform_from_row_keys(row_key, vocab)))


def uniform_from_keys(keys: tf.Tensor, step: tf.Tensor, vocab: int) -> tf.Tensor:
    """`uniform_noise` from `seed_keys(seed)` (the part that does not change from step to step)."""
    return uniform_from_row_keys(row_keys(keys, step), vocab)


def uniform_noise(seed: tf.Tensor, step: tf.Tensor, vocab: int) -> tf.Tensor:
    """Uniform float32 `(batch, vocab)` in (0, 1), a pure function of `seed`, `step` (int32 `(batch,)`) and token.

    `mix(mix(mix(seed * A) + step * B) + token * C)`, then the high 23 bits as an odd multiple of
    2**-24: never 0 or 1 (a shift and an offset, not a modulo: onnxruntime's modulo of negatives differs).
    """
    return uniform_from_keys(seed_keys(seed), step, vocab)


def gumbel_noise(seed: tf.Tensor, step: tf.Tensor, vocab: int) -> tf.Tensor:
    """Gumbel(0, 1) noise `(batch, vocab)` from `uniform_noise`."""
    return -tf.math.log(-tf.math.log(uniform_noise(seed, step, vocab)))


# --- the processors ---
def apply_repetition_penalty(logits: tf.Tensor, seen: tf.Tensor, penalty: tf.Tensor) -> tf.Tensor:
    """CTRL's penalty on the tokens `seen` `(batch, vocab)` bool: positive logits / penalty, negative ones * penalty."""
    penalty = penalty[:, None]  # (batch, 1)
    penalized = tf.where(logits > 0, logits / penalty, logits * penalty)
    return tf.where(seen, penalized, logits)  # (batch, vocab)


def inverse_temperature(temperature: tf.Tensor) -> tf.Tensor:
    """`1 / T` per row `(batch,)` (1 where T = 0); a loop computes it once."""
    return 1.0 / tf.where(temperature > 0, temperature, tf.ones_like(temperature))


def apply_temperature(logits: tf.Tensor, temperature: tf.Tensor) -> tf.Tensor:
    """Each row's logits times `1 / T` (rows at temperature 0 are left as they are): one multiply per step,
    rounded the same way on every runtime."""
    return logits * inverse_temperature(temperature)[:, None]  # (batch, vocab)


def apply_top_k_top_p(logits: tf.Tensor, top_k: tf.Tensor, top_p: tf.Tensor) -> tf.Tensor:
    """Top-k, then top-p on what top-k kept, from one sort: the logits at or above each row's threshold stay.

    Top-k keeps the `top_k` `(batch,)` highest logits (0 = all; ties at the k-th value stay); top-p
    then keeps the most likely of those while the probability ranked before them is below `top_p`
    `(batch,)` (so the most likely token always stays and p -> 0 is greedy; 1 = all). One descending
    sort (TFLite TOPK_V2, ONNX TopK), a softmax and a cumulative sum; the threshold is the smallest
    kept sorted value, so no scatter is needed.
    """
    vocab = logits.shape[-1] if logits.shape[-1] is not None else tf.shape(logits)[-1]
    sorted_logits = tf.math.top_k(logits, k=vocab, sorted=True).values  # (batch, vocab), descending
    ranks = tf.range(tf.shape(logits)[-1])[None, :]  # (1, vocab)
    keep = tf.logical_or(ranks < top_k[:, None], (top_k <= 0)[:, None])
    probs = tf.nn.softmax(tf.where(keep, sorted_logits, float("-inf")), axis=-1)
    before = tf.math.cumsum(probs, axis=-1, exclusive=True)
    keep = tf.logical_and(keep, tf.logical_or(before < top_p[:, None], (top_p >= 1.0)[:, None]))  # off at 1
    threshold = tf.reduce_min(tf.where(keep, sorted_logits, float("inf")), axis=-1, keepdims=True)
    return tf.where(logits >= threshold, logits, float("-inf"))


def apply_top_k(logits: tf.Tensor, top_k: tf.Tensor) -> tf.Tensor:
    """Keep the logits at or above each row's `top_k` `(batch,)`-th highest (ties stay); 0 = all."""
    return apply_top_k_top_p(logits, top_k, tf.ones_like(logits[:, 0]))


def apply_top_p(logits: tf.Tensor, top_p: tf.Tensor) -> tf.Tensor:
    """Keep each row's nucleus: its most likely tokens until their probabilities sum to `top_p` `(batch,)`; 1 = all."""
    return apply_top_k_top_p(logits, tf.zeros_like(top_p, tf.int32), top_p)


def processors_in_use(settings: SamplingSettings) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Whether any row uses the repetition penalty, top-k or top-p, a temperature > 0 (bool scalars).

    A generation loop computes them once, outside the loop, and skips the processors nobody uses for
    the price of a `tf.cond` per step (the result is the same: an off processor changes nothing).
    """
    return (
        tf.reduce_any(settings.repetition_penalty != PENALTY_OFF),
        tf.logical_or(tf.reduce_any(settings.top_k > 0), tf.reduce_any(settings.top_p < TOP_P_OFF)),
        tf.reduce_any(settings.temperature > 0),
    )


def next_token(
    logits: tf.Tensor,
    seen: tf.Tensor | None,
    settings: SamplingSettings,
    keys: tf.Tensor,
    step: tf.Tensor,
    in_use: tuple[tf.Tensor, ...] | None = None,
    filters: bool = True,
    inverse_t: tf.Tensor | None = None,
    noise: tf.Tensor | None = None,
) -> tf.Tensor:
    """All processors in order, then the draw: next ids `(batch,)` int32.

    Args:
        logits: float32 `(batch, vocab)` (tokens never to generate already at a very low value).
        seen: bool `(batch, vocab)`, the tokens already in each row's text (for the repetition penalty).
        settings: SamplingSettings, one value per row.
        keys: int32 `(batch,)`, `seed_keys` of the rows' seeds; step: int32 `(batch,)`, the index of the token drawn.
        in_use: `processors_in_use(settings)` to skip unused processors with `tf.cond` (TF only: the
            converters get one straight graph), or None to apply every processor.
        filters: False leaves out the penalty, top-k and top-p (for a caller that knows they are off).
        inverse_t: `inverse_temperature(settings.temperature)`, computed once by a loop; None: here.
        noise: the Gumbel noise `(batch, vocab)` of this step when a loop computed it ahead; None: here.
    """
    vocab = logits.shape[-1]

    def maybe(index, fn, x):
        return fn(x) if in_use is None else tf.cond(in_use[index], lambda: fn(x), lambda: x)

    if filters:
        logits = maybe(0, lambda x: apply_repetition_penalty(x, seen, settings.repetition_penalty), logits)
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)

    def draw(x):
        scale = inverse_temperature(settings.temperature) if inverse_t is None else inverse_t
        x = x * scale[:, None]
        if filters:
            x = maybe(1, lambda z: apply_top_k_top_p(z, settings.top_k, settings.top_p), x)
        gumbel = noise
        if gumbel is None:
            gumbel = gumbel_from_row_keys(row_keys(keys, step), vocab)
        return tf.argmax(x + gumbel, axis=-1, output_type=tf.int32)

    sampled = draw(logits) if in_use is None else tf.cond(in_use[2], lambda: draw(logits), lambda: greedy)
    return tf.where(settings.temperature > 0, sampled, greedy)


# --- what each processor does (the playground's sampling chart) ---
STAGES = SAMPLING_STAGES  # the distribution as the model gives it, then after each processor, in order


def stage_probabilities(logits: tf.Tensor, seen: tf.Tensor, settings: SamplingSettings) -> tf.Tensor:
    """The next-token distribution before and after each processor, as `next_token` applies them: float32
    `(batch, len(STAGES), vocab)`. The last stage is the distribution the draw samples from; at temperature 0
    the stages from `temperature` on are the greedy choice (probability 1 on the argmax).

    Args:
        logits: float32 `(batch, vocab)` (tokens never to generate already at a very low value).
        seen: bool `(batch, vocab)`, the tokens already in each row's text.
        settings: SamplingSettings, one value per row.
    """
    penalized = apply_repetition_penalty(logits, seen, settings.repetition_penalty)
    scaled = apply_temperature(penalized, settings.temperature)
    top_k = apply_top_k(scaled, settings.top_k)
    both = apply_top_k_top_p(scaled, settings.top_k, settings.top_p)
    vocab = tf.shape(logits)[-1]
    greedy = tf.one_hot(tf.argmax(penalized, axis=-1, output_type=tf.int32), vocab)  # (batch, vocab)
    sampled = (settings.temperature > 0)[:, None]
    stages = [tf.nn.softmax(logits), tf.nn.softmax(penalized)]
    stages += [tf.where(sampled, tf.nn.softmax(x), greedy) for x in (scaled, top_k, both)]
    return tf.stack(stages, axis=1)

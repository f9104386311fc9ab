"""Choosing the next character from logits: temperature sampling, greedy at temperature 0."""

from __future__ import annotations

import tensorflow as tf


def apply_temperature(logits: tf.Tensor, temperature: tf.Tensor) -> tf.Tensor:
    """Divide each row's logits by its temperature (rows at temperature 0 are left as they are)."""
    safe = tf.where(temperature > 0, temperature, tf.ones_like(temperature))
    return logits / safe[:, None]  # (batch, vocab)


def sample_next(logits: tf.Tensor, temperature: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Next ids `(batch,)` int32 drawn from `categorical(softmax(logits / T))`, or argmax where `T == 0`.

    The draw uses the Gumbel-max trick, `argmax(logits / T + Gumbel noise)`, which samples exactly
    that categorical distribution; its stateless uniform noise also compiles under XLA, where
    `StatelessMultinomial` does not.

    Args:
        logits: float32 `(batch, vocab)`.
        temperature: float32 `(batch,)`, each >= 0.
        seed: int64 `(2,)`, the stateless seed of this step; the same seed gives the same draw.
    """
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    uniform = tf.random.stateless_uniform(tf.shape(logits), seed, minval=1e-12, maxval=1.0)
    gumbel = -tf.math.log(-tf.math.log(uniform))  # (batch, vocab)
    sampled = tf.argmax(apply_temperature(logits, temperature) + gumbel, axis=-1, output_type=tf.int32)
    return tf.where(temperature > 0, sampled, greedy)

"""Language-model metrics over the whole epoch: bits per character and perplexity."""

from __future__ import annotations

import math

import keras
from keras import ops


class _MeanCrossEntropy(keras.metrics.Metric):
    """Accumulates the summed next-character cross-entropy (nats) and the character count."""

    def __init__(self, name: str, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        losses = ops.cast(keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True), "float32")
        if sample_weight is None:
            self.total.assign_add(ops.sum(losses))
            self.count.assign_add(ops.cast(ops.size(losses), "float32"))
        else:  # document mode: weight 0 marks padding
            weights = ops.cast(sample_weight, "float32")
            self.total.assign_add(ops.sum(losses * weights))
            self.count.assign_add(ops.sum(weights))

    def mean_nats(self):
        return self.total / ops.maximum(self.count, 1.0)

    def reset_state(self) -> None:
        self.total.assign(0.0)
        self.count.assign(0.0)


@keras.saving.register_keras_serializable(package="keras_chargen")
class BitsPerChar(_MeanCrossEntropy):
    """Mean cross-entropy in bits per character (nats / ln 2)."""

    def __init__(self, name: str = "bpc", **kwargs) -> None:
        super().__init__(name=name, **kwargs)

    def result(self):
        return self.mean_nats() / math.log(2.0)


@keras.saving.register_keras_serializable(package="keras_chargen")
class Perplexity(_MeanCrossEntropy):
    """exp(mean cross-entropy in nats) over all characters seen."""

    def __init__(self, name: str = "perplexity", **kwargs) -> None:
        super().__init__(name=name, **kwargs)

    def result(self):
        return ops.exp(self.mean_nats())

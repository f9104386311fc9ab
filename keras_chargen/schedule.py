"""Learning-rate schedules that run on the fraction of the time budget used, not on the step count.

With `--max-minutes`, how many batches fit the budget depends on the machine; a cosine schedule
over a guessed number of epochs is cut off on a slow machine and ends early on a fast one. Here
the schedule's position is `elapsed fitting time / budget`, read from `Progress` (which counts the
fitting time over every resumed run) before each batch, so a 10-minute run anneals exactly at its
tenth minute on any CPU.
"""

from __future__ import annotations

import math

import keras

from keras_chargen.callbacks import Progress

COSINE_ALPHA = 0.01  # the cosine schedules end at 1 % of the peak (as keras' CosineDecay(alpha=0.01))


def cosine_at(fraction: float, peak: float, alpha: float = COSINE_ALPHA) -> float:
    """Keras' `CosineDecay` at `fraction` (clamped to [0, 1]) of its decay: `peak` → `alpha * peak`."""
    fraction = min(max(fraction, 0.0), 1.0)
    return peak * ((1.0 - alpha) * 0.5 * (1.0 + math.cos(math.pi * fraction)) + alpha)


class BudgetCosine(keras.callbacks.Callback):
    """Before every training batch, set the optimizer's learning rate to the cosine at the budget fraction used.

    Args:
        peak: float, the learning rate at the start.
        seconds: float > 0, the fitting-time budget (`max_minutes * 60`).
        progress: Progress, whose `elapsed` (with its injectable clock) gives the time used so far.
        alpha: float, the final rate as a fraction of `peak`. Default 0.01.

    Example:
    >>> cosine_at(0.5, 4e-3)  # half way: the mean of the peak and the floor
    0.00202
    """

    def __init__(self, peak: float, seconds: float, progress: Progress, alpha: float = COSINE_ALPHA) -> None:
        super().__init__()
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0; got {seconds}")
        self.peak, self.seconds, self.progress, self.alpha = peak, seconds, progress, alpha

    @property
    def fraction(self) -> float:
        """The share of the budget used so far, in [0, 1]."""
        return min(self.progress.elapsed / self.seconds, 1.0)

    def on_train_batch_begin(self, batch, logs=None) -> None:
        self.model.optimizer.learning_rate.assign(cosine_at(self.fraction, self.peak, self.alpha))

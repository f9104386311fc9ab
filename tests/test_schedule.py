import math

import keras
import numpy as np
import pytest
from conftest import CORPUS, tiny_config

from keras_chargen import FileSource, train
from keras_chargen.callbacks import Progress
from keras_chargen.schedule import BudgetCosine, cosine_at


class ManualClock:
    """A fake clock the test sets by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_cosine_at_matches_keras_cosine_decay():
    decay = keras.optimizers.schedules.CosineDecay(4e-3, decay_steps=1000, alpha=0.01)
    for step in (0, 1, 250, 500, 999, 1000):
        assert cosine_at(step / 1000, 4e-3) == pytest.approx(float(decay(step)), rel=1e-6)
    assert cosine_at(-0.5, 4e-3) == 4e-3 and cosine_at(7.0, 4e-3) == pytest.approx(4e-5)


def test_budget_cosine_follows_the_fraction_of_the_budget_used():
    clock = ManualClock()
    progress = Progress(elapsed_seconds=60.0, clock=clock)  # a resumed run: one minute already spent
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(4e-3), loss="mse")
    callback = BudgetCosine(4e-3, 600.0, progress)
    callback.set_model(model)
    progress.start_clock()
    expected = {0.0: 0.1, 240.0: 0.5, 480.0: 0.9, 540.0: 1.0, 900.0: 1.0}  # seconds into this run → fraction
    for seconds, fraction in expected.items():
        clock.now = 100.0 + seconds
        callback.on_train_batch_begin(0)
        assert callback.fraction == pytest.approx(fraction)
        peak_share = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * fraction))
        assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(4e-3 * peak_share, rel=1e-6)


def test_training_under_a_budget_anneals_to_the_floor_whatever_the_epochs(tmp_path, monkeypatch):
    """No --epochs (0): the budget alone ends training, and the last batch runs at 1 % of the peak."""

    class Tick:
        now = 0.0

        def __call__(self) -> float:
            self.now += 0.05
            return self.now

    schedules: list[BudgetCosine] = []
    original = BudgetCosine.__init__

    def record(self, *args, **kwargs):
        original(self, *args, **kwargs)
        schedules.append(self)

    monkeypatch.setattr(BudgetCosine, "__init__", record)
    config = tiny_config(epochs=0, max_minutes=0.05, lr_schedule="cosine", learning_rate=4e-3)
    result = train(config, FileSource((CORPUS,)), tmp_path / "m", verbose=0, sample_every_epoch=False, clock=Tick())
    assert result.progress.elapsed_seconds >= 3.0 and np.isfinite(result.progress.best_val_loss)
    assert len(schedules) == 1 and schedules[0].fraction == 1.0
    assert float(schedules[0].model.optimizer.learning_rate.numpy()) == pytest.approx(4e-5, rel=0.02)
    assert config.epoch_limit > 1000 and tiny_config(epochs=0).epoch_limit == 10

"""Training callbacks: state resets, atomic best checkpoint, resumable backups, time limit, samples."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from keras_chargen.config import UNLIMITED_EPOCHS
from keras_chargen.distribute import ReplicaStates, workers_agree
from keras_chargen.io import atomic_path, atomic_write_text, drop_partial_line, writing
from keras_chargen.model import reset_states

STEP_LOG_EVERY = 20  # batches per row of steps.csv


@dataclasses.dataclass
class Progress:
    """Where training stands; saved atomically as `backup/progress.json` so a rerun resumes."""

    epoch: int = 0  # epoch in progress (0-based)
    step: int = 0  # batches already done in that epoch
    best_val_loss: float = float("inf")
    elapsed_seconds: float = 0.0  # fitting time over all runs (for --max-minutes)
    stopped_early: bool = False
    _clock: float | None = dataclasses.field(default=None, repr=False, compare=False)
    # what `elapsed` reads: seconds from any origin (tests inject a fake clock; never saved)
    clock: Callable[[], float] = dataclasses.field(default=time.monotonic, repr=False, compare=False)

    def start_clock(self) -> None:
        self._clock = self.clock()

    @property
    def elapsed(self) -> float:
        return self.elapsed_seconds + (self.clock() - self._clock if self._clock is not None else 0.0)

    def save(self, path: Path) -> None:
        if self._clock is not None:  # fold the running clock into elapsed_seconds
            now = self.clock()
            self.elapsed_seconds, self._clock = self.elapsed_seconds + now - self._clock, now
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("_clock", "clock")}
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path, clock: Callable[[], float] = time.monotonic) -> Progress:
        """The saved progress (a fresh one if `path` does not exist), its clock reading `clock`."""
        from keras_chargen.backup_files import read_progress

        return cls(**read_progress(path), clock=clock) if path.exists() else cls(clock=clock)


class StatesCallback(keras.callbacks.Callback):
    """A callback that reads or writes the model's carried RNN states: `states`, built on first use."""

    @functools.cached_property
    def states(self) -> ReplicaStates:
        """The model's states over all replicas (each replica holds its own streams under a strategy)."""
        return ReplicaStates(self.model)


class ResetStates(StatesCallback):
    """Zero the carried recurrent state at each epoch start and before validation.

    `pending` holds states to restore once, right after the first reset (a mid-epoch resume).
    With `reset_prob > 0`, each stream's state is also zeroed with that chance before every training
    batch: a purely carried state is almost never zero, yet generation starts from zero, and a
    model that never learned that start produces junk after a short prompt.
    """

    def __init__(self, pending: list[np.ndarray] | None = None, reset_prob: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        self.pending, self.reset_prob = pending, reset_prob
        self.rng = np.random.default_rng(seed)

    def on_train_batch_begin(self, batch, logs=None) -> None:
        if self.reset_prob <= 0:
            return
        # Every worker draws the same mask (same seed, same batches) and zeroes its own streams.
        keep = self.rng.random(self.states.batch_size) >= self.reset_prob
        if not keep.all():
            self.states.keep_rows(keep)  # the same streams in every layer

    def on_epoch_begin(self, epoch, logs=None) -> None:
        reset_states(self.model)
        if self.pending is not None:
            self.states.write(self.pending)
            self.pending = None

    def on_test_begin(self, logs=None) -> None:
        reset_states(self.model)


class BestCheckpoint(keras.callbacks.Callback):
    """Write `model.keras` (a batch-flexible inference model) atomically whenever val_loss improves."""

    def __init__(self, path: Path, inference_model: keras.Model, progress: Progress, verbose: int = 1) -> None:
        super().__init__()
        self.path, self.inference_model, self.progress, self.verbose = path, inference_model, progress, verbose

    def on_epoch_end(self, epoch, logs=None) -> None:
        val_loss = (logs or {}).get("val_loss")
        if val_loss is None or not np.isfinite(val_loss) or val_loss >= self.progress.best_val_loss:
            return
        self.progress.best_val_loss = float(val_loss)
        self.inference_model.set_weights(self.model.get_weights())
        with atomic_path(self.path, suffix=".keras") as tmp:
            self.inference_model.save(tmp)
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: val_loss improved to {val_loss:.4f}, saved {self.path}")


class TrainingBackup(StatesCallback):
    """Resumable state in `directory`: weights + optimizer, carried RNN states, `progress.json`.

    Written atomically every `save_every` batches and at each epoch end, so killing the process
    loses at most `save_every` batches and a rerun of the same command continues from there.
    """

    def __init__(
        self, directory: Path, progress: Progress, save_every: int, batches_per_epoch: int, step_offset: int = 0
    ) -> None:
        super().__init__()
        self.directory, self.progress, self.save_every = directory, progress, save_every
        self.batches_per_epoch, self.step_offset = batches_per_epoch, step_offset

    @property
    def weights_path(self) -> Path:
        return self.directory / "state.weights.h5"

    @property
    def states_path(self) -> Path:
        return self.directory / "rnn_states.npz"

    @property
    def progress_path(self) -> Path:
        return self.directory / "progress.json"

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.progress.epoch = epoch
        self.progress.step = self.step_offset
        self.step_offset = 0

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.progress.step += 1
        if self.progress.step % self.save_every == 0 and self.progress.step < self.batches_per_epoch:
            self.save()

    def on_epoch_end(self, epoch, logs=None) -> None:
        if self.progress.step >= self.batches_per_epoch:  # a whole epoch (not one cut by the time limit)
            self.progress.epoch, self.progress.step = epoch + 1, 0
        self.save()

    def save(self) -> None:
        """Weights first, then states, then progress: progress.json only ever points at saved files."""
        from keras_chargen.backup_files import write_weights

        write_weights(self.model, self.weights_path)
        states = self.states.read()
        with atomic_path(self.states_path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, *states)
        self.progress.save(self.progress_path)

    def restore(self, source: Path | None = None) -> list[np.ndarray] | None:
        """Load the saved weights and optimizer state; return the saved RNN states for a mid-epoch resume.

        Args:
            source: Path | None, the backup folder to read (default: this one; a non-chief worker reads the chief's).
        """
        source = source or self.directory
        optimizer = self.model.optimizer
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        from keras_chargen.backup_files import check_states, load_weights, read_states

        load_weights(self.model, source / self.weights_path.name)
        states_path = source / self.states_path.name
        if self.progress.step == 0 or not states_path.exists():
            return None
        states = read_states(states_path)
        shapes = [(self.states.batch_size, int(v.shape[1])) for v in self.states.variables]  # no collective
        check_states(states_path, states, shapes)
        return states


class TimeLimit(keras.callbacks.Callback):
    """Stop fitting once the total fitting time (over all resumed runs) reaches `seconds`."""

    def __init__(self, seconds: float, progress: Progress) -> None:
        super().__init__()
        self.seconds, self.progress = seconds, progress
        self.stopped_at: tuple[int, int] | None = None  # (epoch, batches done in it) when the time ran out

    def on_train_batch_end(self, batch, logs=None) -> None:
        # In a cluster all workers must stop at the same batch, or the others wait in a collective.
        if workers_agree(self.model.distribute_strategy, self.progress.elapsed >= self.seconds):
            self.model.stop_training = True
            self.stopped_at = (self.progress.epoch, self.progress.step)


class PartialEpochProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, except that an epoch cut short (time budget) ends at the batch it reached.

    Keras' own bar jumps to `steps/steps` at every epoch end, so a cut epoch looked complete. When
    the time budget alone ends training (no `--epochs`), epochs are headed `Epoch N (until the time
    budget ends)` instead of Keras' `Epoch N/1000000`.
    """

    epochs: int  # set by Keras (`set_params`)

    def on_epoch_begin(self, epoch, logs=None) -> None:
        if self.epochs < UNLIMITED_EPOCHS:
            super().on_epoch_begin(epoch, logs)
            return
        self.epochs = 1  # Keras prints its "Epoch e/N" heading only when N > 1
        super().on_epoch_begin(epoch, logs)
        self.epochs = UNLIMITED_EPOCHS
        if self.verbose:
            print(f"Epoch {epoch + 1} (until the time budget ends)", flush=True)

    def on_epoch_end(self, epoch, logs=None) -> None:
        if self.progbar is not None and self.target is not None and 0 < self.seen < self.target:
            self.progbar.update(self.seen, list((logs or {}).items()), finalize=True)
        else:
            super().on_epoch_end(epoch, logs)


class StopFlag(keras.callbacks.EarlyStopping):
    """Keras EarlyStopping that records in `progress` that it stopped training."""

    def __init__(self, progress: Progress, **kwargs) -> None:
        super().__init__(**kwargs)
        self.progress = progress

    def on_epoch_end(self, epoch, logs=None) -> None:
        super().on_epoch_end(epoch, logs)
        if self.model.stop_training and self.wait >= self.patience:
            self.progress.stopped_early = True


class SampleText(keras.callbacks.Callback):
    """Print a short generated sample at a few temperatures after each epoch."""

    def __init__(self, generator, temperatures=(0.5, 1.0), length: int = 200, seed: int = 0) -> None:
        super().__init__()
        self.generator, self.temperatures, self.length, self.seed = generator, temperatures, length, seed

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.generator.model.set_weights(self.model.get_weights())
        texts = self.generator.generate(
            [""] * len(self.temperatures), list(self.temperatures), self.length, seed=self.seed + epoch
        )
        for temperature, text in zip(self.temperatures, texts):
            print(f"\n--- sample after epoch {epoch + 1}, temperature {temperature} ---\n{text}")
        print("---")


class HistoryLog(keras.callbacks.CSVLogger):
    """Keras' CSVLogger (append mode), a write error as a one-line `ChargenError` naming the file.

    After a failed write its file is closed at once, so that Python does not try the write again
    (and print another error) when the process exits.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(str(path), append=True)
        self.path = path

    def on_train_begin(self, logs=None) -> None:
        drop_partial_line(self.path)
        with self._closing_on_error():
            super().on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None) -> None:
        with self._closing_on_error():
            super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None) -> None:
        with self._closing_on_error():
            super().on_train_end(logs)

    @contextlib.contextmanager
    def _closing_on_error(self):
        try:
            with writing(self.path):
                yield
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        """Close the file (if open), dropping what a full disk did not take."""
        handle = getattr(self, "csv_file", None)
        if handle is not None and not handle.closed:
            with contextlib.suppress(OSError):
                handle.close()
            if not handle.closed:  # the flush failed: drop the buffer
                with contextlib.suppress(OSError):
                    os.close(handle.fileno())


class StepLog(keras.callbacks.Callback):
    """Append the training bits/char of the last `every` batches, and validation at epoch ends, to a CSV.

    Columns: `step` (global batch count), `epoch`, `bpc`, `val_bpc` (empty except at epoch ends).
    Read by `training.plot_history`; it continues across resumed runs.
    """

    def __init__(self, path: Path, progress: Progress, batches_per_epoch: int, every: int = 0) -> None:
        super().__init__()
        self.path, self.progress, self.batches_per_epoch = path, progress, batches_per_epoch
        self.every = every or STEP_LOG_EVERY
        self._last = (0, 0.0)  # (batches into the epoch, running epoch mean) at the previous row

    def _write(self, bpc, val_bpc="") -> None:
        new = not self.path.exists()
        with writing(self.path), open(self.path, "a") as handle:
            if new:
                handle.write("step,epoch,bpc,val_bpc\n")
            step = self.progress.epoch * self.batches_per_epoch + self.progress.step
            handle.write(f"{step},{self.progress.epoch},{bpc},{val_bpc}\n")

    def on_train_begin(self, logs=None) -> None:
        drop_partial_line(self.path)

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._last = (0, 0.0)

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self.progress.step % self.every or not logs or "bpc" not in logs:
            return
        # Keras reports the running mean over the epoch; turn it into the mean of the last batches.
        count, mean = batch + 1, float(logs["bpc"])
        last_count, last_mean = self._last
        if count > last_count:
            self._write((count * mean - last_count * last_mean) / (count - last_count))
        self._last = (count, mean)

    def on_epoch_end(self, epoch, logs=None) -> None:
        logs = logs or {}
        if "val_bpc" in logs:
            self._write(float(logs.get("bpc", "nan")), float(logs["val_bpc"]))

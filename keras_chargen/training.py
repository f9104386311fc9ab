"""`train`: prepare the corpus, build the model, and run Keras `fit` with resumable callbacks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import tensorflow as tf

from keras_chargen import callbacks as cb
from keras_chargen.config import ChargenConfig
from keras_chargen.corpus import PreparedCorpus, TextSource, prepare_corpus
from keras_chargen.data import (num_shuffled_batches, num_stateful_batches, shuffled_dataset,
                                stateful_dataset)
from keras_chargen.errors import ChargenError
from keras_chargen.generation import CharGenerator
from keras_chargen.metrics import BitsPerChar, Perplexity
from keras_chargen.model import build_model
from keras_chargen.saving import CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE
from keras_chargen.vocab import Vocabulary

# Fields that may change between a run and its resumption (they only say how long to train).
RESUMABLE_FIELDS = {"epochs", "max_minutes", "patience", "save_every"}


@dataclasses.dataclass
class TrainResult:
    """What `train` did: the model directory, its history and where it stopped."""

    model_dir: Path
    history: dict[str, list[float]]
    progress: cb.Progress


def datasets(config: ChargenConfig, corpus: PreparedCorpus) -> tuple[tf.data.Dataset, tf.data.Dataset, int]:
    """(train, validation, batches per training epoch). Validation always uses the stateful layout."""
    dtype = corpus.vocab.id_dtype
    if config.layout == "stateful":
        train = stateful_dataset(corpus.train_path, corpus.num_train, dtype, config.batch_size, config.seq_len)
        steps = num_stateful_batches(corpus.num_train, config.batch_size, config.seq_len)
    else:
        train = shuffled_dataset(corpus.train_path, corpus.num_train, dtype, config.batch_size, config.seq_len,
                                 config.window_stride, config.seed)
        steps = num_shuffled_batches(corpus.num_train, config.batch_size, config.seq_len, config.window_stride)
    val = stateful_dataset(corpus.val_path, corpus.num_val, dtype, config.batch_size, config.seq_len, "validation")
    return train, val, steps


def compile_model(model: keras.Model, config: ChargenConfig, steps_per_epoch: int) -> None:
    """Adam with optional cosine decay and gradient clipping; cross-entropy in nats, bits/char, perplexity."""
    learning_rate = config.learning_rate
    if config.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=config.epochs * steps_per_epoch, alpha=0.01)
    optimizer = keras.optimizers.Adam(learning_rate, clipnorm=config.clipnorm or None)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[BitsPerChar(), Perplexity()])


def _check_resumable(model_dir: Path, config: ChargenConfig) -> ChargenConfig | None:
    """The saved config if `model_dir` already holds this training run; error if it holds another."""
    if not (model_dir / CONFIG_FILE).exists():
        return None
    saved = ChargenConfig.load(model_dir / CONFIG_FILE)
    changed = [f"{k}: {v!r} → {getattr(config, k)!r}" for k, v in saved.to_dict().items()
               if k not in RESUMABLE_FIELDS and getattr(config, k) != v]
    if changed:
        raise ChargenError(f"{model_dir} holds a model trained with other settings ({'; '.join(changed)}); "
                           "use another --out directory")
    return saved


def _prepare(source: TextSource, config: ChargenConfig, model_dir: Path, resuming: bool) -> PreparedCorpus:
    vocab = Vocabulary.load(model_dir / VOCAB_FILE) if resuming and (model_dir / VOCAB_FILE).exists() else None
    corpus = prepare_corpus(source, model_dir / "data", config.val_fraction, vocab, config.level, config.lowercase,
                            config.max_vocab)
    if corpus.num_train < config.seq_len + 1:
        raise ChargenError(f"corpus is too short: {corpus.num_train} training {config.level}s, "
                           f"fewer than one window (seq_len + 1 = {config.seq_len + 1})")
    return corpus


def train(config: ChargenConfig, source: TextSource, model_dir: str | Path, verbose: int = 1,
          sample_every_epoch: bool = True) -> TrainResult:
    """Train a model on `source` into `model_dir`; rerunning with the same arguments resumes.

    Args:
        config: ChargenConfig, all settings (saved as `model_dir/config.json`).
        source: a `FileSource` or `TfdsSource` (see `make_source`).
        model_dir: str | Path, created if needed; holds config, vocabulary, `model.keras` (best
            validation loss), `history.csv`, `history.png`, TensorBoard `logs/` and `backup/`.
        verbose: int, Keras progress bar mode (0 silent, 1 bar, 2 one line per epoch).
        sample_every_epoch: bool, print generated samples after each epoch.
    """
    model_dir = Path(model_dir)
    resuming = _check_resumable(model_dir, config) is not None
    corpus = _prepare(source, config, model_dir, resuming)
    config.save(model_dir / CONFIG_FILE)
    corpus.vocab.save(model_dir / VOCAB_FILE)
    train_ds, val_ds, steps = datasets(config, corpus)

    keras.utils.set_random_seed(config.seed)
    stateful = config.layout == "stateful"
    model = build_model(config, corpus.vocab.size, config.batch_size if stateful else None, stateful)
    compile_model(model, config, steps)
    backup_dir = model_dir / "backup"
    progress = cb.Progress.load(backup_dir / "progress.json")
    finished = (progress.epoch >= config.epochs or progress.stopped_early
                or (config.max_minutes and progress.elapsed_seconds >= config.max_minutes * 60))
    if finished:
        print(f"{model_dir}: training already finished at epoch {progress.epoch} "
              f"(best val_loss {progress.best_val_loss:.4f}); raise --epochs or --max-minutes to continue")
        return TrainResult(model_dir, {}, progress)

    backup = cb.TrainingBackup(backup_dir, progress, config.save_every, steps, step_offset=progress.step)
    backup.set_model(model)
    pending_states = None
    if (backup_dir / "state.weights.h5").exists():
        pending_states = backup.restore()
        if verbose:
            print(f"Resuming {model_dir} at epoch {progress.epoch + 1}, batch {progress.step}/{steps}")
    inference = build_model(config, corpus.vocab.size)
    callbacks = [
        cb.ResetStates(pending_states, config.state_reset_prob, config.seed) if stateful else None,
        cb.BestCheckpoint(model_dir / WEIGHTS_FILE, inference, progress, verbose),
        backup,  # before StepLog and after BestCheckpoint: it advances `progress`
        cb.StepLog(model_dir / "steps.csv", progress, steps),
        cb.StopFlag(progress, monitor="val_loss", patience=config.patience) if config.patience else None,
        cb.TimeLimit(config.max_minutes * 60, progress) if config.max_minutes else None,
        keras.callbacks.CSVLogger(str(model_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(model_dir / "logs")),
        cb.SampleText(CharGenerator(build_model(config, corpus.vocab.size), corpus.vocab.tokens, config.level,
                                    config.lowercase),
                      seed=config.seed) if sample_every_epoch else None,
    ]
    callbacks = [c for c in callbacks if c is not None]
    history: dict[str, list[float]] = {}
    progress.start_clock()
    if progress.step:  # finish the interrupted epoch first, skipping the batches already done
        first = model.fit(train_ds.skip(progress.step), validation_data=val_ds, initial_epoch=progress.epoch,
                          epochs=progress.epoch + 1, callbacks=callbacks, verbose=verbose, shuffle=False)
        _extend(history, first.history)
    if not model.stop_training and progress.epoch < config.epochs:
        rest = model.fit(train_ds, validation_data=val_ds, initial_epoch=progress.epoch, epochs=config.epochs,
                         callbacks=callbacks, verbose=verbose, shuffle=False)
        _extend(history, rest.history)
    backup.save()
    plot_history(model_dir / "steps.csv", model_dir / "history.png", config.batch_size * config.seq_len,
                 "word" if config.level == "word" else "character")
    return TrainResult(model_dir, history, progress)


def _extend(history: dict[str, list[float]], more: dict[str, list[float]]) -> None:
    for key, values in more.items():
        history.setdefault(key, []).extend(values)


def plot_history(csv_path: Path, png_path: Path, chars_per_batch: int, unit: str = "character") -> None:
    """Training curves from `steps.csv`: running training bits per `unit` (token) and validation per epoch."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_chargen.io import atomic_path

    if not csv_path.exists():
        return
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    train = [(int(r["step"]) * chars_per_batch / 1e6, float(r["bpc"])) for r in rows if not r["val_bpc"]]
    val = [(int(r["step"]) * chars_per_batch / 1e6, float(r["val_bpc"])) for r in rows if r["val_bpc"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label=f"training (mean of the last {cb.STEP_LOG_EVERY} batches)", alpha=0.8)
    if val:
        ax.plot(*zip(*val), marker="o", label="validation")
    ax.set_xlabel(f"{unit}s trained (millions)")
    ax.set_ylabel(f"bits per {unit}")
    ax.set_title(f"Training curves: {csv_path.parent.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(png_path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)

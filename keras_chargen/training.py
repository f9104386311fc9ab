"""`train`: prepare the corpus, build the model, and run Keras `fit` with resumable callbacks."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from keras_chargen import callbacks as cb
from keras_chargen.config import ChargenConfig
from keras_chargen.corpus import PreparedCorpus, TextSource, corpus_vocabulary, prepare_corpus
from keras_chargen.data import num_shuffled_batches, num_stateful_batches, shuffled_dataset, stateful_dataset
from keras_chargen.distribute import (
    AllReduceClipAdam,
    distribute_rows,
    is_chief,
    make_strategy,
    num_workers,
    replica_batch_size,
    unpin_strategy,
    write_dir,
)
from keras_chargen.documents import document_resets, document_splits
from keras_chargen.errors import WRITE_ERRNOS, ChargenError, WriteError, describe_os_error
from keras_chargen.finetune import check_architecture, grow_weights, grown_vocabulary
from keras_chargen.io import remove_stale_temps
from keras_chargen.lock import DirectoryLock
from keras_chargen.metrics import BitsPerChar, Perplexity
from keras_chargen.model import build_model
from keras_chargen.precision import resolve_precision
from keras_chargen.provenance import check_same_corpus, fingerprint, save_record
from keras_chargen.saving import CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE, generator_for, load_model
from keras_chargen.schedule import COSINE_ALPHA, BudgetCosine
from keras_chargen.vocab import Vocabulary

HISTORY_FILE = "history.csv"
# said after a write error: what a user can do
RESUME_HINT = "the files saved before are intact: rerun the same command once it can write there to resume"
# Fields that may change between a run and its resumption (they say how long to train, or on what hardware).
RESUMABLE_FIELDS = {"epochs", "max_minutes", "patience", "save_every", "strategy", "logical_cpus", "precision"}


@dataclasses.dataclass
class TrainResult:
    """What `train` did: the model directory, its history and where it stopped."""

    model_dir: Path
    history: dict[str, list[float]]
    progress: cb.Progress
    stop_reason: str = ""  # why training stopped, as printed (see `stop_message`)


def datasets(config: ChargenConfig, corpus: PreparedCorpus) -> tuple[tf.data.Dataset, tf.data.Dataset, int]:
    """(train, validation, batches per training epoch). Validation always uses the stateful layout."""
    if config.documents:
        train_batches, val_batches = document_splits(config, corpus)
        return train_batches.dataset(), val_batches.dataset(), train_batches.num_batches
    dtype = corpus.vocab.id_dtype
    if config.layout == "stateful":
        train = stateful_dataset(corpus.train_path, corpus.num_train, dtype, config.batch_size, config.seq_len)
        steps = num_stateful_batches(corpus.num_train, config.batch_size, config.seq_len)
    else:
        train = shuffled_dataset(
            corpus.train_path,
            corpus.num_train,
            dtype,
            config.batch_size,
            config.seq_len,
            config.window_stride,
            config.seed,
        )
        steps = num_shuffled_batches(corpus.num_train, config.batch_size, config.seq_len, config.window_stride)
    val = stateful_dataset(corpus.val_path, corpus.num_val, dtype, config.batch_size, config.seq_len, "validation")
    return train, val, steps


def compile_model(model: keras.Model, config: ChargenConfig, steps_per_epoch: int) -> None:
    """Adam with optional cosine decay and gradient clipping; cross-entropy in nats, bits/char, perplexity."""
    learning_rate = config.learning_rate
    if config.lr_schedule == "cosine" and not config.max_minutes:  # under a budget: `BudgetCosine` sets it
        learning_rate = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=config.epoch_limit * steps_per_epoch, alpha=COSINE_ALPHA
        )
    # Under a strategy Keras would clip each replica's share of the gradient; clip their sum instead.
    adam = keras.optimizers.Adam if config.strategy == "default" else AllReduceClipAdam
    optimizer = adam(learning_rate, clipnorm=config.clipnorm or None)
    # documents: padding has weight 0; the loss and the metrics (Keras passes sample weights to
    # `weighted_metrics` only) are means over the real positions
    reduction = "mean_with_sample_weight" if config.documents else "sum_over_batch_size"
    metrics = [BitsPerChar(), Perplexity()]
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction),
        metrics=None if config.documents else metrics,
        weighted_metrics=metrics if config.documents else None,
    )


def _check_resumable(model_dir: Path, config: ChargenConfig) -> ChargenConfig | None:
    """The saved config if `model_dir` already holds this training run; error if it holds another."""
    if not (model_dir / CONFIG_FILE).exists():
        return None
    saved = ChargenConfig.load(model_dir / CONFIG_FILE)
    changed = [
        f"{k}: {v!r} → {getattr(config, k)!r}"
        for k, v in saved.to_dict().items()
        if k not in RESUMABLE_FIELDS and getattr(config, k) != v
    ]
    if changed:
        raise ChargenError(
            f"{model_dir} holds a model trained with other settings ({'; '.join(changed)}); use another --out directory"
        )
    return saved


def _prepare(
    source: TextSource,
    config: ChargenConfig,
    model_dir: Path,
    resuming: bool,
    out_dir: Path | None = None,
    base_vocab: Vocabulary | None = None,
) -> PreparedCorpus:
    """The corpus as ids in `out_dir/data` (default `model_dir`), with `model_dir`'s vocabulary when resuming,
    or `base_vocab` (a fine-tuning source's) grown by the new text's tokens."""
    vocab = Vocabulary.load(model_dir / VOCAB_FILE) if resuming and (model_dir / VOCAB_FILE).exists() else None
    if vocab is None and base_vocab is not None:
        vocab = grown_vocabulary(base_vocab, text_vocabulary(source, config), config.max_vocab)
    if config.documents:
        from keras_chargen.documents import prepare_documents

        corpus = prepare_documents(source, (out_dir or model_dir) / "data", config, vocab)
    else:
        corpus = prepare_corpus(
            source,
            (out_dir or model_dir) / "data",
            config.val_fraction,
            vocab,
            config.level,
            config.lowercase,
            config.max_vocab,
        )
    if corpus.num_train < config.seq_len + 1 and not config.documents:
        raise ChargenError(
            f"corpus is too short: {corpus.num_train} training {config.level}s, "
            f"fewer than one window (seq_len + 1 = {config.seq_len + 1})"
        )
    return corpus


def text_vocabulary(source: TextSource, config: ChargenConfig) -> Vocabulary:
    """The vocabulary `source`'s training part alone would get (documents: without the markers)."""
    if config.documents:
        from keras_chargen.documents import document_vocabulary

        return document_vocabulary(source, config, markers=False)
    return corpus_vocabulary(source, config.val_fraction, config.level, config.lowercase, config.max_vocab)


def _restart_from_best(model_dir: Path, config: ChargenConfig) -> int:
    """Drop `model_dir/backup` (damaged, or unwanted) so training restarts from `model.keras`; returns the
    epoch to start at: the next one after those `history.csv` records (their numbering goes on)."""
    if not (model_dir / WEIGHTS_FILE).is_file():
        raise ChargenError(
            f"--restart-from-best: {model_dir / WEIGHTS_FILE} does not exist (no epoch finished yet); "
            "train into a fresh --out"
        )
    start = recorded_epochs(model_dir / HISTORY_FILE)
    if start >= config.epoch_limit:
        raise ChargenError(
            f"--restart-from-best: {model_dir / HISTORY_FILE} already records all {config.epoch_limit} epochs; "
            "raise --epochs to train more"
        )
    shutil.rmtree(model_dir / "backup", ignore_errors=True)
    return start


def recorded_epochs(history_csv: Path) -> int:
    """How many epochs `history.csv` records (its last epoch number + 1; 0 without it)."""
    import csv

    try:
        with open(history_csv, newline="") as handle:
            numbers = [row.get("epoch", "") for row in csv.DictReader(handle)]
    except OSError:
        return 0
    return max((int(n) + 1 for n in numbers if n and n.isdigit()), default=0)


def train(
    config: ChargenConfig,
    source: TextSource,
    model_dir: str | Path,
    verbose: int = 1,
    sample_every_epoch: bool = True,
    clock: Callable[[], float] = time.monotonic,
    restart_from_best: bool = False,
) -> TrainResult:
    """Train a model on `source` into `model_dir`; rerunning with the same arguments resumes.

    Args:
        config: ChargenConfig, all settings (saved as `model_dir/config.json`).
        source: a `FileSource`, `TfdsSource` or `EmbeddedSource` (see `make_source`).
        model_dir: str | Path, created if needed; holds config, vocabulary, `model.keras` (best
            validation loss), `history.csv`, `steps.csv`, `history.png`, TensorBoard `logs/` and `backup/`.
        verbose: int, Keras progress bar mode (0 silent, 1 bar, 2 one line per epoch); above 0 the corpus,
            model and budget are printed first. Why training stopped is printed in every mode.
        sample_every_epoch: bool, print generated samples after each epoch.
        clock: the seconds clock that `--max-minutes` and the budget schedule read (default
            `time.monotonic`; tests inject a fake one).
        restart_from_best: bool, drop `model_dir/backup` (e.g. a damaged one) and restart from the
            weights of `model_dir/model.keras` with a fresh optimizer and progress. Default False.

    With `config.init_from`, training starts from that model (see `keras_chargen.finetune`).
    `model_dir` is locked while training (`keras_chargen.lock`), and remembers its corpus
    (`trained_on.json`): another corpus is refused before anything there changes.

    With `config.strategy` other than `default`, every worker runs this with the same arguments
    (`model_dir` on storage they all see); only the chief writes `model_dir` (docs/distributed.md).
    """
    model_dir = Path(model_dir)
    strategy = make_strategy(config.strategy, config.logical_cpus)  # first: it may configure the devices
    out_dir = write_dir(model_dir, strategy)  # model_dir, or a temporary folder on a non-chief worker
    with DirectoryLock(out_dir):  # one writer at a time
        remove_stale_temps(out_dir, locked=True)  # what killed runs left (no other writer runs here now)
        try:
            return _train(
                config, source, model_dir, strategy, out_dir, verbose, sample_every_epoch, clock, restart_from_best
            )
        except (WriteError, OSError) as err:  # a full disk, a read-only folder …: what was saved stays valid
            if not isinstance(err, WriteError) and err.errno not in WRITE_ERRNOS:
                raise
            text = str(err) if isinstance(err, WriteError) else describe_os_error(err)
            raise WriteError(f"{text}; {RESUME_HINT}") from None


def _train(
    config: ChargenConfig,
    source: TextSource,
    model_dir: Path,
    strategy: tf.distribute.Strategy,
    out_dir: Path,
    verbose: int,
    sample_every_epoch: bool,
    clock: Callable[[], float],
    restart_from_best: bool,
) -> TrainResult:
    """`train` once `out_dir` is locked."""
    resuming = _check_resumable(model_dir, config) is not None
    record = fingerprint(source, config.documents)
    check_same_corpus(model_dir, record)  # before anything in model_dir changes
    start_epoch = _restart_from_best(model_dir, config) if restart_from_best else 0
    source_model, source_vocab = None, None
    if config.init_from:
        source_config, source_vocab, source_model = load_model(config.init_from)
        check_architecture(config, source_config)
    corpus = _prepare(source, config, model_dir, resuming, out_dir, source_vocab)
    save_record(out_dir, record)
    config.save(out_dir / CONFIG_FILE)
    corpus.vocab.save(out_dir / VOCAB_FILE)
    keras.utils.set_random_seed(config.seed)  # before the datasets: their shuffle order depends on it too
    steps = datasets(config, corpus)[2]
    stateful = config.layout == "stateful"
    with strategy.scope():  # model, optimizer and metrics are mirrored over the replicas
        batch = replica_batch_size(strategy, config.batch_size) if stateful else None
        model = build_model(config, corpus.vocab.size, batch, stateful, resolve_precision(config.precision))
        compile_model(model, config, steps)
        if config.strategy != "default":
            unpin_strategy(model)  # fit runs inside strategy.scope() below (a Keras 3 multi-worker bug otherwise)
    progress = cb.Progress.load(model_dir / "backup" / "progress.json", clock)
    if restart_from_best:
        progress.epoch = start_epoch  # history.csv and steps.csv number on from the epochs already recorded
    finished = (
        progress.epoch >= config.epoch_limit
        or progress.stopped_early
        or (config.max_minutes and progress.elapsed_seconds >= config.max_minutes * 60)
    )
    if finished:
        reason = already_finished_message(model_dir, config, progress)
        print(reason)
        if out_dir != model_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
        return TrainResult(model_dir, {}, progress, reason)
    if verbose:
        print(describe_run(source, config, corpus, model.count_params(), steps))

    backup = cb.TrainingBackup(out_dir / "backup", progress, config.save_every, steps, step_offset=progress.step)
    backup.set_model(model)
    pending_states = None
    if (model_dir / "backup" / "progress.json").exists():
        with strategy.scope():
            pending_states = backup.restore(model_dir / "backup")  # the chief's backup, on every worker
        if verbose:
            print(f"Resuming {model_dir} at epoch {progress.epoch + 1}, batch {progress.step}/{steps}")
    elif restart_from_best:
        model.set_weights(load_model(model_dir)[2].get_weights())
        if verbose:
            print(f"Restarting {model_dir} from {model_dir / WEIGHTS_FILE} (backup dropped, fresh optimizer)")
    elif source_model is not None:
        added = grow_weights(source_model, model)
        if verbose:
            old = source_model.get_layer("embedding").input_dim
            print(f"Fine-tuning from {config.init_from}: {added} new tokens appended to its {old} ids")
    inference = build_model(config, corpus.vocab.size)
    time_limit = cb.TimeLimit(config.max_minutes * 60, progress) if config.max_minutes else None
    reset_prob = 0.0 if config.documents else config.state_reset_prob  # documents: exact resets instead
    callbacks = [
        cb.PartialEpochProgbar(),
        cb.ResetStates(pending_states, reset_prob, config.seed) if stateful else None,
        cb.BestCheckpoint(out_dir / WEIGHTS_FILE, inference, progress, verbose),
        backup,  # before StepLog and after BestCheckpoint: it advances `progress`
        cb.StepLog(out_dir / "steps.csv", progress, steps),
        document_resets(config, corpus, progress) if config.documents else None,
        cb.StopFlag(progress, monitor="val_loss", patience=config.patience) if config.patience else None,
        time_limit,
        BudgetCosine(config.learning_rate, config.max_minutes * 60, progress)
        if config.max_minutes and config.lr_schedule == "cosine"
        else None,
        cb.HistoryLog(out_dir / HISTORY_FILE),
        keras.callbacks.TensorBoard(str(out_dir / "logs")),
        cb.SampleText(generator_for(build_model(config, corpus.vocab.size), corpus.vocab), seed=config.seed)
        if sample_every_epoch and is_chief(strategy)
        else None,
    ]
    callbacks = [c for c in callbacks if c is not None]
    history: dict[str, list[float]] = {}
    progress.start_clock()
    fit = _fitter(model, config, strategy, corpus, callbacks, verbose)
    with strategy.scope(), _worker_failures(strategy, progress):
        if progress.step:  # finish the interrupted epoch first, skipping the batches already done
            _extend(history, fit(progress.epoch, progress.epoch + 1, progress.step))
        if not model.stop_training and progress.epoch < config.epoch_limit:
            _extend(history, fit(progress.epoch, config.epoch_limit, 0))
        backup.save()
    reason = stop_message(config, progress, time_limit.stopped_at if time_limit else None, steps)
    print(reason)
    plot_history(
        out_dir / "steps.csv",
        out_dir / "history.png",
        config.batch_size * config.seq_len,
        "word" if config.level == "word" else "character",
    )
    if out_dir != model_dir:
        shutil.rmtree(out_dir, ignore_errors=True)  # a non-chief worker's files are temporary
    return TrainResult(model_dir, history, progress, reason)


def describe_run(source: TextSource, config: ChargenConfig, corpus: PreparedCorpus, params: int, steps: int) -> str:
    """The lines printed before training: the corpus, the model and the budget."""
    unit = "word" if config.level == "word" else "character"
    total = corpus.num_train + corpus.num_val
    batches = f"{steps:,} batches of {config.batch_size}×{config.seq_len} {unit}s"
    if config.max_minutes and not config.epochs:  # --epochs 0: the time budget alone ends training
        budget = f"epochs of {batches} until {config.max_minutes:g} min of fitting are used"
    else:
        budget = f"{config.epoch_limit} epochs of {batches}"
        budget += f", at most {config.max_minutes:g} min of fitting" if config.max_minutes else ", no time limit"
    if config.patience:
        budget += f", early stopping after {config.patience} epochs without improvement"
    return (
        f"corpus: {source.describe()}: {total:,} {unit}s, vocabulary {corpus.vocab.size - 1:,} {unit}s "
        f"(+1 unknown id); training {corpus.num_train:,} / validation {corpus.num_val:,} "
        f"(the last {config.val_fraction:.0%})\n"
        f"model: {config.num_layers}×{config.units} {config.cell.upper()}, embedding {config.embedding_dim}, "
        f"{params:,} parameters\n"
        f"budget: {budget}"
    )


def best_validation(progress: cb.Progress, level: str = "char") -> str:
    """`best validation loss X nats/char (Y bits/char)`, or that there was no validation yet."""
    if not math.isfinite(progress.best_val_loss):
        return "no validation loss yet"
    loss = progress.best_val_loss
    return f"best validation loss {loss:.4f} nats/{level} ({loss / math.log(2):.4f} bits/{level})"


def stop_message(config: ChargenConfig, progress: cb.Progress, time_stop: tuple[int, int] | None, steps: int) -> str:
    """Why `fit` returned: the time budget (where), early stopping, or every epoch done."""
    best = best_validation(progress, config.level)
    if time_stop is not None:
        epoch, batch = time_stop
        return f"time budget of {config.max_minutes:g} min reached at epoch {epoch + 1}, batch {batch}/{steps}; {best}"
    if progress.stopped_early:
        return (
            f"early stopping: no validation improvement in {config.patience} epochs, stopped after epoch "
            f"{progress.epoch} of {config.epoch_limit}; {best}"
        )
    return f"finished all {config.epoch_limit} epochs; {best}"


def already_finished_message(model_dir: Path, config: ChargenConfig, progress: cb.Progress) -> str:
    """What a rerun of a finished training prints: why it had stopped, and how to continue."""
    if progress.stopped_early:
        why = f"early stopping after epoch {progress.epoch}"
    elif progress.epoch >= config.epoch_limit:
        why = f"all {config.epoch_limit} epochs done"
    else:
        why = f"time budget of {config.max_minutes:g} min used up in epoch {progress.epoch + 1}"
    return (
        f"{model_dir}: training already finished ({why}); {best_validation(progress, config.level)}; "
        "raise --epochs or --max-minutes to continue"
    )


def _fitter(
    model: keras.Model,
    config: ChargenConfig,
    strategy: tf.distribute.Strategy,
    corpus: PreparedCorpus,
    callbacks: list,
    verbose: int,
):
    """`fit(initial_epoch, epochs, skip)` → history; skips `skip` batches of the first epoch (a resume)."""

    def fit(initial_epoch: int, epochs: int, skip: int) -> dict[str, list[float]]:
        # Fresh datasets per fit: a shuffled dataset's order depends on how often that object was iterated.
        train_data, val_data, steps = datasets(config, corpus)
        train_data, val_steps = train_data.skip(skip), None
        if config.strategy != "default":  # fixed rows of every global batch per replica; the datasets repeat
            train_data = distribute_rows(strategy, lambda: datasets(config, corpus)[0].skip(skip), config.batch_size)
            val_data = distribute_rows(strategy, lambda: datasets(config, corpus)[1], config.batch_size)
            val_steps = num_stateful_batches(corpus.num_val, config.batch_size, config.seq_len)
        return model.fit(
            train_data,
            validation_data=val_data,
            initial_epoch=initial_epoch,
            epochs=epochs,
            steps_per_epoch=steps - skip if val_steps else None,
            validation_steps=val_steps,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,
        ).history

    return fit


@contextlib.contextmanager
def _worker_failures(strategy: tf.distribute.Strategy, progress: cb.Progress):
    """Turn the error a multi-worker run gets when a peer dies into a clear `ChargenError`."""
    try:
        yield
    except (
        tf.errors.UnavailableError,
        tf.errors.DeadlineExceededError,
        tf.errors.CancelledError,
        tf.errors.InternalError,
        tf.errors.FailedPreconditionError,
    ) as err:
        if num_workers(strategy) == 1:
            raise
        raise ChargenError(
            f"lost contact with another worker ({type(err).__name__}); training stopped in epoch "
            f"{progress.epoch + 1}. Restart every worker with the same command: it resumes from the last "
            "backup."
        ) from None


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

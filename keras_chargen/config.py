"""`ChargenConfig`: every hyper-parameter of a model and its training, saved as JSON beside the weights."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from keras_chargen.errors import ChargenError

CELLS = ("lstm", "gru", "rnn")
LAYOUTS = ("stateful", "shuffled")
LR_SCHEDULES = ("constant", "cosine")
ENCODING_ERRORS = ("strict", "replace")
LEVELS = ("char", "word")
STRATEGIES = ("default", "mirrored", "multiworker")
PRECISIONS = ("auto", "float32", "mixed_bfloat16")  # keras_chargen.precision
DEFAULT_EPOCHS = 10  # epochs=0 without --max-minutes
UNLIMITED_EPOCHS = 1_000_000  # epochs=0 with --max-minutes: the budget ends training


def _field(default: Any, help: str) -> Any:
    """A dataclass field whose help text is shown by `keras-chargen train --help`."""
    return dataclasses.field(default=default, metadata={"help": help})


# The fields that take one of a fixed set of values (the CLI offers them as choices).
CHOICES: dict[str, tuple[str, ...]] = {
    "cell": CELLS,
    "layout": LAYOUTS,
    "lr_schedule": LR_SCHEDULES,
    "encoding_errors": ENCODING_ERRORS,
    "level": LEVELS,
    "strategy": STRATEGIES,
    "precision": PRECISIONS,
}


# Fields whose CLI flag is not simply --field-name.
FLAG_NAMES = {"num_layers": "--layers"}


def flag_name(field: str) -> str:
    """The command-line flag of a config field (`--seq-len`; `--layers` for `num_layers`)."""
    return FLAG_NAMES.get(field, "--" + field.replace("_", "-"))


@dataclasses.dataclass
class ChargenConfig:
    """Model, data and training settings; CLI flags map one-to-one to these fields.

    Example:
    >>> config = ChargenConfig(units=128, num_layers=1)
    >>> ChargenConfig.from_dict(config.to_dict()) == config
    True
    """

    # --- model ---
    level: str = _field("char", "token level: char (Unicode code points) | word (words and punctuation)")
    lowercase: bool = _field(False, "word level: lowercase the text before splitting it into words")
    max_vocab: int = _field(10000, "word level: keep the most frequent words, the rest become [UNK]; 0 keeps all")
    cell: str = _field("lstm", "recurrent cell: lstm | gru | rnn (SimpleRNN)")
    num_layers: int = _field(2, "stacked recurrent layers")
    units: int = _field(512, "hidden units per recurrent layer")
    embedding_dim: int = _field(64, "size of the token (character or word) embedding")
    dropout: float = _field(0.0, "dropout after each recurrent layer (training only)")
    # --- data ---
    seq_len: int = _field(100, "tokens per training window (truncated BPTT length)")
    batch_size: int = _field(64, "windows per batch (= parallel streams in the stateful layout)")
    layout: str = _field("stateful", "stateful (char-rnn streams, state carried) | shuffled (overlapping windows)")
    state_reset_prob: float = _field(
        0.05,
        "stateful layout: chance a stream's carried state is zeroed before a "
        "batch, so the model also learns to start from the zero state generation uses",
    )
    stride: int = _field(0, "shuffled layout: step between window starts; 0 means seq_len")
    val_fraction: float = _field(0.1, "last fraction of the text held out for validation")
    encoding_errors: str = _field("strict", "invalid UTF-8: strict (error) | replace (U+FFFD)")
    # --- optimisation ---
    epochs: int = _field(
        0, "passes over the training text; 0 = as many as --max-minutes allows (10 without --max-minutes)"
    )
    learning_rate: float = _field(2e-3, "Adam learning rate (peak, for the cosine schedule)")
    lr_schedule: str = _field(
        "constant",
        "constant | cosine (decays to 1 % over all epochs; with --max-minutes, over the time budget instead)",
    )
    precision: str = _field(
        "auto",
        "training products: auto (mixed_bfloat16 where the CPU has native bfloat16, AVX-512 BF16 or AMX; "
        "else float32) | float32 | mixed_bfloat16; weights and exports stay float32",
    )
    clipnorm: float = _field(5.0, "gradient clipping by global norm; 0 disables")
    patience: int = _field(3, "early stopping: epochs without validation improvement; 0 disables")
    max_minutes: float = _field(0.0, "stop training after this many minutes of fitting; 0 = no limit")
    save_every: int = _field(200, "batches between resumable backups (also written at each epoch end)")
    seed: int = _field(0, "seed for weight init, shuffling and the per-epoch samples")
    # --- your own text (docs/training.md) ---
    init_from: str = _field(
        "",
        "fine-tune: start from this trained model directory's weights, architecture and vocabulary "
        "(its ids kept, new tokens appended); '' = from scratch",
    )
    documents: bool = _field(
        False,
        "the text is a list of documents: one per line (blank lines skipped), or one per *.txt file of a "
        "directory; each is trained between start/end markers with the state reset at its start",
    )
    # --- distribution (docs/distributed.md); may change when resuming ---
    strategy: str = _field(
        "default",
        "default (one device) | mirrored (all local GPUs, else the logical CPUs) | "
        "multiworker (the hosts in TF_CONFIG); the global batch is split over the replicas",
    )
    logical_cpus: int = _field(
        0,
        "split the CPU into this many logical devices first (tests and benchmarks of "
        "--strategy mirrored without GPUs; adds no compute); 0 = no split",
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ChargenError` naming the first field with an invalid value."""
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ChargenError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        for name in ("num_layers", "units", "embedding_dim", "seq_len", "batch_size", "save_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ChargenError(f"{name} must be a positive integer; got {value!r}")
        for name in ("lowercase", "documents"):
            if not isinstance(getattr(self, name), bool):
                raise ChargenError(f"{name} must be true or false; got {getattr(self, name)!r}")
        if not isinstance(self.init_from, str):
            raise ChargenError(f"init_from must be a model directory path (a string); got {self.init_from!r}")
        for name in ("epochs", "stride", "patience", "seed", "max_vocab", "logical_cpus"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ChargenError(f"{name} must be a non-negative integer; got {value!r}")
        for name, low, high in (("dropout", 0.0, 1.0), ("val_fraction", 0.0, 1.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not low <= value < high:
                raise ChargenError(f"{name} must be in [{low}, {high}); got {value!r}")
        if not isinstance(self.state_reset_prob, (int, float)) or not 0.0 <= self.state_reset_prob <= 1.0:
            raise ChargenError(f"state_reset_prob must be in [0, 1]; got {self.state_reset_prob!r}")
        if not self.val_fraction > 0.0:
            raise ChargenError(f"val_fraction must be > 0 (validation drives checkpoints); got {self.val_fraction}")
        for name in ("learning_rate", "clipnorm", "max_minutes"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
                raise ChargenError(f"{name} must be a number >= 0; got {value!r}")
        if self.documents and (self.layout != "stateful" or self.strategy != "default"):
            raise ChargenError(
                "documents: document mode has its own layout (whole documents in stateful streams) on one device; "
                "drop --layout shuffled / --strategy"
            )
        if self.learning_rate == 0:
            raise ChargenError("learning_rate must be > 0")

    @property
    def epoch_limit(self) -> int:
        """Epochs to train: `epochs`, or when 0, unlimited under a time budget (it stops training) and 10 without."""
        if self.epochs:
            return self.epochs
        return UNLIMITED_EPOCHS if self.max_minutes else DEFAULT_EPOCHS

    @property
    def window_stride(self) -> int:
        """Stride of the shuffled layout (defaults to non-overlapping windows)."""
        return self.stride or self.seq_len

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChargenConfig:
        """Build from a dict; unknown keys are an error (a typo must not be silently ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ChargenError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        from keras_chargen.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ChargenConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ChargenError(f"missing model config: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ChargenError(f"corrupt model config {path}: {err}") from None
        if not isinstance(data, dict):
            raise ChargenError(f"corrupt model config {path}: expected a JSON object")
        return cls.from_dict(data)

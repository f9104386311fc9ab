"""The recommended settings for a 10-minute CPU budget, written once.

README's `keras-chargen train ... --max-minutes 10` command, `keras-chargen bench`'s training
figure, `scripts/quality.py` and `scripts/train_speed.py` all read `RECOMMENDED` (a test checks the
README's command against `train_command()`). Why these values: docs/training.md (levers) and
docs/quality.md (quality at 10 minutes).
"""

from __future__ import annotations

from typing import Any

from keras_chargen.config import ChargenConfig, flag_name

# No `epochs`: under `--max-minutes` the cosine schedule runs on the fraction of the budget used,
# so it ends annealed at the last minute whatever the CPU's speed (keras_chargen/schedule.py).
RECOMMENDED: dict[str, Any] = {
    "num_layers": 1,
    "units": 384,
    "seq_len": 64,
    "batch_size": 64,
    "learning_rate": 0.004,
    "lr_schedule": "cosine",
}
MINUTES = 10.0  # the budget the settings were chosen for
OUT = "models/shakespeare-10min"  # the README command's model directory


def recommended_config(**overrides: Any) -> ChargenConfig:
    """A `ChargenConfig` with the recommended settings (and `MINUTES`), then `overrides`.

    Example:
    >>> recommended_config(max_minutes=2).max_minutes
    2
    """
    return ChargenConfig(**{**RECOMMENDED, "max_minutes": MINUTES, **overrides})


def train_flags(minutes: float = MINUTES, out: str = OUT) -> list[str]:
    """The `keras-chargen train` arguments of the recommended run: `--out`, the settings, `--max-minutes`."""
    flags = ["--out", out]
    for field, value in RECOMMENDED.items():
        flags += [flag_name(field), f"{value:g}" if isinstance(value, float) else str(value)]
    return flags + ["--max-minutes", f"{minutes:g}"]


def train_command(minutes: float = MINUTES, out: str = OUT) -> str:
    """The README's one-line command: `keras-chargen train --out ... --max-minutes 10`."""
    return " ".join(["keras-chargen", "train", *train_flags(minutes, out)])

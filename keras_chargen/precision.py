"""Which floating-point policy training uses: bfloat16 products only on CPUs that multiply bfloat16 natively.

`mixed_bfloat16` (Keras' policy: float32 variables, bfloat16 products) doubles the peak rate of
matrix products on CPUs with AVX-512 BF16 or AMX, and is slower where bfloat16 must be emulated
(AVX2-only CPUs, e.g. AMD Zen 3: docs/training.md has the figures). `auto` picks it only where the
CPU reports those instructions. The weights stay float32 either way, so every export is float32.
"""

from __future__ import annotations

from pathlib import Path

from keras_chargen.config import PRECISIONS

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bfloat16 products


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags (the first `flags` line of `cpuinfo`; empty where it cannot be read)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def has_native_bf16(flags: set[str] | None = None) -> bool:
    """Whether the CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in BF16_FLAGS)


def resolve_precision(precision: str, flags: set[str] | None = None) -> str:
    """The Keras dtype policy for training: `float32` or `mixed_bfloat16` (`auto`: bfloat16 where native).

    Example:
    >>> resolve_precision("auto", {"avx2"})
    'float32'
    >>> resolve_precision("auto", {"avx2", "avx512_bf16"})
    'mixed_bfloat16'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "auto":
        return "mixed_bfloat16" if has_native_bf16(flags) else "float32"
    return precision

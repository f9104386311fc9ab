"""Benchmarks (`keras-chargen bench`): reference loops, runner and report, kept out of the core modules."""

from keras_chargen.bench.reference import (
    NEW_CHARS,
    PROMPT_CHARS,
    OneStep,
    TutorialModel,
    keras_window_loop,
    onestep_loop,
    step_loop,
    xla_generator,
)
from keras_chargen.bench.report import SPEED_TARGETS, chars_per_second, target_rows, write_report
from keras_chargen.bench.runner import PeakRSS, measure, run_benchmarks

__all__ = [
    "NEW_CHARS",
    "PROMPT_CHARS",
    "SPEED_TARGETS",
    "OneStep",
    "PeakRSS",
    "TutorialModel",
    "chars_per_second",
    "keras_window_loop",
    "measure",
    "onestep_loop",
    "run_benchmarks",
    "step_loop",
    "target_rows",
    "write_report",
    "xla_generator",
]

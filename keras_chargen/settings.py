"""The sampling settings, described once: name, dtype, off value, valid range and meaning of each.

Standard library only (the REST client imports it). Everything else derives from `SETTINGS`: the
SavedModel signature and its defaults (`keras_chargen.export.savedmodel`), the in-graph checks
(`keras_chargen.generation`), the Python API and CLI checks and flags, the REST validation of
`:predict` and `:stream` (`keras_chargen.serving.protocol`), the client's checks and the table in
README.md (`markdown_table`). Adding a setting is one entry here plus its logit processor in
`keras_chargen.sampling`.

Every setting is one value per row. The Python API and the client take `None` for "off" (and for
`seed`: draw a random seed); the serving signature takes the off value itself.

Seeds mean one thing on every runtime (SavedModel, Python API, TFLite, ONNX, `:stream`): a seed in
0..2**31-1 gives the same text everywhere; one seed for several rows seeds row i with
(seed + i) mod 2**31; a negative seed draws a seed in 0..2**31-1 for its row, and every runtime
returns the seed each row used (`keras_chargen.contract`), which reproduces the text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keras_chargen.errors import ChargenError

MAX_NEW_CHARS = 100_000  # cap on the tokens generated per row in one call
MAX_PROMPT_CHARS = 100_000  # cap on a prompt's length for the Python API
MAX_STOP_CHARS = 1_000  # cap on a stop string's length for the Python API
SEED_MAX = 2**31 - 1  # seeds are int32: the counter-based generator works in int32 on every runtime


@dataclass(frozen=True)
class Setting:
    """One sampling setting.

    Args:
        name: str, the input name everywhere (signature, REST, Python keyword; the CLI flag is `--name-with-dashes`).
        dtype: str, "float32", "int32" or "string".
        off: the value that turns it off (or, for `temperature`/`max_new_chars`, the API default).
        rule: str, the valid values in words, as error messages say them.
        meaning: str, one line for help texts and the docs table.
        low, high: the valid range (None: unbounded); low_open: whether `low` itself is excluded;
            finite: whether NaN and infinities are refused.
        default: the Python API / CLI default (None = off).
        api_rule: str | None, the rule in the Python API and the client, where None means off and the
            off value itself is refused; None: the same as `rule`.
    """

    name: str
    dtype: str
    off: Any
    rule: str
    meaning: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    finite: bool = False
    default: Any = None
    api_rule: str | None = None

    @property
    def integer(self) -> bool:
        return self.dtype.startswith("int")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def valid(self, value: Any) -> bool:
        """Whether one number (already type-checked) is in range; strings always are."""
        if self.dtype == "string":
            return True
        value = float(value)
        if math.isnan(value) or (self.finite and math.isinf(value)):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def check(self, value: Any) -> Any:
        """`value` converted to this setting's Python type; `ChargenError` naming the setting otherwise."""
        if not has_type(value, self.dtype) or not self.valid(value):
            raise ChargenError(f"{self.name} must be {self.rule}; got {value!r}")
        return value if self.dtype == "string" else int(value) if self.integer else float(value)


def has_type(value: Any, dtype: str) -> bool:
    """Whether `value` is a Python (or NumPy) value of `dtype`: bools are never numbers, floats never ints."""
    if dtype == "string":
        return isinstance(value, str)
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return False
    if dtype.startswith("int"):
        return isinstance(value, int) or type(value).__name__.startswith(("int", "uint"))
    return isinstance(value, (int, float)) or type(value).__name__.startswith(("float", "int", "uint"))


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "temperature",
        "float32",
        1.0,
        "a finite number >= 0",
        "divides the logits; 0 = greedy (argmax), higher = more varied",
        low=0,
        finite=True,
        default=0.8,
    ),
    Setting(
        "max_new_chars",
        "int32",
        0,
        f"an integer in 0..{MAX_NEW_CHARS}",
        "tokens to generate per row (characters, or words for a word-level model)",
        low=0,
        high=MAX_NEW_CHARS,
        default=500,
    ),
    Setting(
        "seed",
        "int32",
        -1,
        f"an integer <= {SEED_MAX} (negative: a random seed)",
        "the same seed, prompt and settings give the same text on every runtime; one seed for several rows "
        "seeds row i with seed + i; a negative one draws a seed in 0..2147483647 per row (returned as `seed`)",
        low=-(2**31),
        high=SEED_MAX,
        api_rule=f"an integer in 0..{SEED_MAX} (None = random)",
    ),
    Setting(
        "top_k",
        "int32",
        0,
        "an integer >= 0 (0 = off)",
        "sample only from the k most likely tokens (ties at the k-th value stay)",
        low=0,
        high=SEED_MAX,
        api_rule="an integer >= 1 (None = off)",
    ),
    Setting(
        "top_p",
        "float32",
        1.0,
        "a number in (0, 1] (1 = off)",
        "sample only from the most likely tokens whose probabilities sum to p (nucleus sampling)",
        low=0,
        high=1,
        low_open=True,
    ),
    Setting(
        "repetition_penalty",
        "float32",
        1.0,
        "a finite number > 0 (1 = off)",
        "CTRL's penalty on tokens already in the prompt or the output: > 1 discourages repeats",
        low=0,
        low_open=True,
        finite=True,
    ),
    Setting(
        "stop",
        "string",
        "",
        "a string ('' = off)",
        "stop a row once its generated text ends with this string (it is included in the output)",
        api_rule="a non-empty string (None = off)",
    ),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def offs() -> dict[str, Any]:
    """`{name: off value}` of the settings a `:predict` request may leave out: the sampling filters and the stop
    (`temperature`, `max_new_chars` and `seed` are required, as in the first four-input signature)."""
    return {s.name: s.off for s in SETTINGS if s.name not in ("temperature", "max_new_chars", "seed")}


def check_api(name: str, value: Any) -> Any:
    """Python API / client form: None = off (`seed`: random, -1); a value must be in range and not the
    off value of `top_k`/`stop` (say None instead)."""
    spec = BY_NAME[name]
    if value is None:
        return spec.off
    rule = spec.api_rule or spec.rule
    if not has_type(value, spec.dtype) or not spec.valid(value):
        raise ChargenError(f"{name} must be {rule}; got {value!r}")
    checked = spec.check(value)
    if spec.api_rule and (checked == spec.off or (name == "seed" and checked < 0)):
        raise ChargenError(f"{name} must be {rule}; got {value!r}")
    return checked


def check_stop(stop: str | None) -> str:
    """A stop string for the Python API: a non-empty str of at most MAX_STOP_CHARS characters ("" = off for None)."""
    checked: str = check_api("stop", stop)
    if len(checked) > MAX_STOP_CHARS:
        raise ChargenError(f"stop has {len(checked)} characters; the maximum is {MAX_STOP_CHARS}")
    return checked


def check_stops(stop: str | Sequence[str] | None) -> list[str]:
    """One stop string or several (a row stops at whichever comes first), each as `check_stop`; `[""]` for None."""
    if stop is None or isinstance(stop, str) or not isinstance(stop, (list, tuple)):
        return [check_stop(stop)]  # type: ignore[arg-type]  # a wrong type gets check_stop's message
    if not stop:
        raise ChargenError("stop must be a string or a non-empty list of strings; got []")
    return [check_stop(s) for s in stop]


def markdown_table() -> str:
    """The settings as a Markdown table (README.md embeds it; a test checks that it matches)."""
    rows = ["| setting | type | off / default | valid values | meaning |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        off = f"{s.off!r}" if s.default is None else f"default {s.default!r}"
        rows.append(f"| `{s.name}` | {s.dtype} | {off} | {s.rule} | {s.meaning} |")
    return "\n".join(rows)


def _several(value: Any) -> bool:
    """Whether `value` is a list of values (a list, tuple or NumPy array), not one value."""
    return isinstance(value, (list, tuple)) or (type(value).__name__ == "ndarray" and getattr(value, "ndim", 0) > 0)


def check_generation_args(
    prompts: Sequence[str], temperature: Any, max_new_chars: int, seed: int | None
) -> list[float]:
    """Validate the Python API's generation arguments; return one temperature per prompt. Raises `ChargenError`."""
    if not prompts:
        raise ChargenError("no prompts given")
    for prompt in prompts:
        if not isinstance(prompt, str):
            raise ChargenError(f"prompt must be a string; got {type(prompt).__name__}")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ChargenError(f"prompt has {len(prompt)} characters; the maximum is {MAX_PROMPT_CHARS}")
    temps = list(temperature) if _several(temperature) else [temperature] * len(prompts)
    if len(temps) == 1 and len(prompts) > 1:
        temps = temps * len(prompts)
    if len(temps) != len(prompts):
        raise ChargenError(f"got {len(temps)} temperatures for {len(prompts)} prompts")
    temps = [check_api("temperature", value) for value in temps]
    check_api("max_new_chars", max_new_chars)
    check_api("seed", seed)
    return temps


def expand_temperatures(prompts: list[str], temperature: Any) -> list[str]:
    """One prompt with several temperatures → the prompt once per temperature (one row each)."""
    if len(prompts) == 1 and _several(temperature) and len(temperature) > 1:
        return prompts * len(temperature)
    return prompts

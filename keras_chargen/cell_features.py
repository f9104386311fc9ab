"""Finding interpretable cells: simple features of a text, and the cells whose activation follows them.

For every position of a text (a character, or a word at the word level) `FeatureTracker` computes
a few features of the text read so far, as in Karpathy, Johnson & Fei-Fei, "Visualizing and
Understanding Recurrent Networks" (2015); `Correlations` accumulates, chunk by chunk in constant
memory, the Pearson correlation of every feature with every recurrent activation (each layer's
`h`, and an LSTM's `c`), and `best_cells` names the cell that follows each feature most closely.

Features (the value after reading the position's text; a word is read character by character):

- `in_quotes`: 1 between an opening and a closing double quote (`"`, or `“` … `”`), else 0;
- `bracket_depth`: open `( [ {` minus closed `) ] }` so far (never below 0);
- `line_position`: characters since the last newline (0 right after it);
- `in_word`: 1 if the last character is a letter or digit;
- `after_newline`: 1 if the last character is a newline;
- `upper_run`: the length of the run of uppercase letters that ends here (0 if the last character
  is not uppercase; a speaker name such as `ROMEO` counts 1, 2, ... 5).

NumPy only (no TensorFlow).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FEATURES = ("in_quotes", "bracket_depth", "line_position", "in_word", "after_newline", "upper_run")
_OPEN, _CLOSE = "([{", ")]}"


class FeatureTracker:
    """The features of each position of a text read piece by piece (state carried across calls)."""

    def __init__(self) -> None:
        self.quoted = False
        self.depth = 0
        self.line_position = 0
        self.upper_run = 0
        self.last = "\n"  # a text is read as if it began at the start of a line

    def values(self, pieces: Sequence[str]) -> np.ndarray:
        """float64 `(len(pieces), len(FEATURES))`: the features after reading each piece (its text)."""
        out = np.zeros((len(pieces), len(FEATURES)))
        for row, piece in enumerate(pieces):
            for char in piece:
                self._read(char)
            last = self.last
            out[row] = (
                self.quoted,
                self.depth,
                self.line_position,
                last.isalnum(),
                last == "\n",
                self.upper_run,
            )
        return out

    def _read(self, char: str) -> None:
        if char == '"':
            self.quoted = not self.quoted
        elif char == "“":
            self.quoted = True
        elif char == "”":
            self.quoted = False
        if char in _OPEN:
            self.depth += 1
        elif char in _CLOSE:
            self.depth = max(0, self.depth - 1)
        self.line_position = 0 if char == "\n" else self.line_position + 1
        self.upper_run = self.upper_run + 1 if char.isupper() else 0
        self.last = char


class Correlations:
    """Pearson correlations of features with activation columns, merged chunk by chunk (Chan et al.'s
    pairwise update of means and co-moments: stable over millions of positions, constant memory).

    Args:
        features: int, feature columns; columns: int, activation columns.
    """

    def __init__(self, features: int, columns: int) -> None:
        self.count = 0
        self.mean_f = np.zeros(features)
        self.mean_x = np.zeros(columns)
        self.m2_f = np.zeros(features)
        self.m2_x = np.zeros(columns)
        self.co = np.zeros((features, columns))

    def add(self, f: np.ndarray, x: np.ndarray) -> None:
        """Add a chunk: features `f` `(n, features)`, activations `x` `(n, columns)`."""
        n = f.shape[0]
        if n == 0:
            return
        # centred within the chunk in float32 (the bulk of the work), accumulated in float64
        f, x = f.astype(np.float64), x.astype(np.float32)
        mean_f, mean_x = f.mean(0), x.mean(0, dtype=np.float64)
        df, dx = f - mean_f, x - mean_x.astype(np.float32)
        m2_f, m2_x = (df * df).sum(0), (dx * dx).sum(0, dtype=np.float64)
        co = (df.astype(np.float32).T @ dx).astype(np.float64)
        total = self.count + n
        delta_f, delta_x = mean_f - self.mean_f, mean_x - self.mean_x
        weight = self.count * n / total
        self.m2_f += m2_f + delta_f**2 * weight
        self.m2_x += m2_x + delta_x**2 * weight
        self.co += co + np.outer(delta_f, delta_x) * weight
        self.mean_f += delta_f * n / total
        self.mean_x += delta_x * n / total
        self.count = total

    def correlations(self) -> np.ndarray:
        """`(features, columns)` Pearson r; NaN where a feature or a column never varies."""
        denominator = np.sqrt(np.outer(self.m2_f, self.m2_x))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = self.co / denominator
        r[denominator <= 1e-12 * max(1, self.count)] = np.nan
        return r


@dataclass(frozen=True)
class CellMatch:
    """A cell that follows a feature: `correlation` of `feature` with `kind` (`h` or `c`) of `cell` in `layer`."""

    feature: str
    layer: int
    kind: str
    cell: int
    correlation: float

    def to_json(self) -> dict[str, object]:
        return {
            "feature": self.feature,
            "layer": self.layer,
            "kind": self.kind,
            "cell": self.cell,
            "correlation": round(self.correlation, 4),
        }


def ranked_cells(r: np.ndarray, kinds: Sequence[str], per_feature: int = 3) -> list[CellMatch]:
    """The `per_feature` cells with the largest |r| for each feature (best first), from correlations
    `r` `(features, layers, kinds, units)`; features that never vary in the text are left out."""
    matches = []
    for f, feature in enumerate(FEATURES):
        scores = np.nan_to_num(np.abs(r[f]), nan=-1.0).ravel()
        if scores.max() < 0:
            continue
        for index in np.argsort(-scores, kind="stable")[:per_feature]:
            if scores[index] < 0:  # a cell that never varies
                break
            layer, kind, cell = np.unravel_index(index, r[f].shape)
            matches.append(CellMatch(feature, int(layer), kinds[kind], int(cell), float(r[f][layer, kind, cell])))
    return matches


def best_cells(matches: Sequence[CellMatch]) -> list[CellMatch]:
    """The first (best) match of each feature, in `FEATURES` order."""
    seen: dict[str, CellMatch] = {}
    for match in matches:
        seen.setdefault(match.feature, match)
    return [seen[f] for f in FEATURES if f in seen]

"""`Vocabulary`: tokens (characters, or words at the word level) ↔ integer ids, with an out-of-vocabulary id 0."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_chargen.config import LEVELS
from keras_chargen.errors import ChargenError
from keras_chargen.io import atomic_write_text

OOV_TOKEN = "[UNK]"  # id 0, as in Keras `StringLookup(num_oov_indices=1)`
MAX_CODE_POINT = 0x110000
# Document markers (document mode): reserved tokens that no text produces: a text splits into single
# characters, or into words that never hold "<" or ">" (the word tokenizer splits them off).
DOC_START, DOC_END = "<doc>", "</doc>"
MARKERS = (DOC_START, DOC_END)


class Vocabulary:
    """The tokens a model knows; id 0 is reserved for unknown ones.

    Character level: single characters in code-point order (or in the given order with `ordered`:
    a fine-tuned vocabulary keeps its source's ids and appends the new characters). Word level: the
    words and punctuation tokens of `keras_chargen.tokenizer`, in the given order (most frequent
    first, as `keras.layers.StringLookup.adapt` orders them), with their lowercasing setting. Either
    level may also hold the document markers `<doc>` / `</doc>` (`MARKERS`), which no text encodes
    to and which decode to "".

    Args:
        tokens: list[str], the known tokens, without the OOV token.
        level: "char" (default) or "word".
        lowercase: bool, word level only: prompts and texts are lowercased before lookup. Default False.
        ordered: bool, character level: keep `tokens` in the given order instead of sorting. Default False.

    Example:
    >>> vocab = Vocabulary(["a", "b", "\\n"])
    >>> vocab.tokens, vocab.size
    (['\\n', 'a', 'b'], 4)
    >>> vocab.encode("ba?").tolist()
    [3, 2, 0]
    >>> vocab.decode([3, 2])
    'ba'
    """

    def __init__(self, tokens: list[str], level: str = "char", lowercase: bool = False, ordered: bool = False) -> None:
        if level not in LEVELS:
            raise ChargenError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
        if not tokens:
            raise ChargenError("vocabulary is empty")
        if len(set(tokens)) != len(tokens):
            raise ChargenError("vocabulary has duplicate tokens")
        self.level, self.lowercase = level, bool(lowercase) and level == "word"
        if level == "char":
            bad = [t for t in tokens if not isinstance(t, str) or (len(t) != 1 and t not in MARKERS)]
            if bad:
                raise ChargenError(f"vocabulary tokens must be single characters; got {bad[:3]!r}")
            chars = [t for t in tokens if t not in MARKERS]
            self.tokens: list[str] = (
                list(tokens) if ordered else sorted(chars, key=ord) + [t for t in tokens if t in MARKERS]
            )
            self._lut = np.zeros(MAX_CODE_POINT, dtype=np.int32)  # code point -> id; 0 = OOV
            ids = [i for i, t in enumerate(self.tokens, start=1) if t not in MARKERS]
            self._lut[[ord(self.tokens[i - 1]) for i in ids]] = np.array(ids, dtype=np.int32)
        else:
            bad = [
                t for t in tokens if not isinstance(t, str) or not t or (t != "\n" and not t.strip()) or t == OOV_TOKEN
            ]
            if bad:
                raise ChargenError(f"vocabulary has invalid word tokens: {bad[:3]!r}")
            self.tokens = list(tokens)
        self._ids = {token: i for i, token in enumerate(self.tokens, start=1)}

    @property
    def size(self) -> int:
        """Number of ids, including the OOV id 0 (the model's output width)."""
        return len(self.tokens) + 1

    @property
    def document_start(self) -> int | None:
        """Id of the document start marker, None if this is not a document vocabulary."""
        return self._ids.get(DOC_START)

    @property
    def document_end(self) -> int | None:
        """Id of the document end marker, None if this is not a document vocabulary."""
        return self._ids.get(DOC_END)

    def extend(self, tokens: list[str]) -> Vocabulary:
        """A vocabulary with every id of this one unchanged and `tokens` (those not in it yet) appended."""
        new = [t for t in dict.fromkeys(tokens) if t not in self._ids]
        return Vocabulary(self.tokens + new, self.level, self.lowercase, ordered=True)

    @property
    def id_dtype(self) -> np.dtype:
        """Smallest unsigned dtype that holds every id (used for the on-disk id files)."""
        return np.dtype(np.uint16) if self.size <= 2**16 else np.dtype(np.uint32)

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> Vocabulary:
        """Build from a per-code-point count array (length `MAX_CODE_POINT`)."""
        return cls([chr(c) for c in np.flatnonzero(counts)])

    def code_points_to_ids(self, code_points: np.ndarray) -> np.ndarray:
        """Map an array of code points to ids (unknown → 0)."""
        ids: np.ndarray = self._lut[code_points]
        return ids

    def split(self, text: str) -> list[str]:
        """The tokens of `text` (characters, or words after lowercasing as configured)."""
        if self.level == "char":
            return list(text)
        from keras_chargen.tokenizer import tokenize  # TensorFlow, so imported only for words

        return tokenize(text, self.lowercase)

    def encode(self, text: str) -> np.ndarray:
        """Ids of `text` (unknown tokens → 0)."""
        if self.level == "char":
            return self.code_points_to_ids(text_to_code_points(text))
        return np.array([self._ids.get(t, 0) for t in self.split(text)], dtype=np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of `ids`; the OOV id decodes to U+FFFD (characters) or `[UNK]` (words)."""
        tokens = [self.tokens[i - 1] if i > 0 else None for i in np.asarray(ids).tolist()]
        tokens = [t for t in tokens if t not in MARKERS]  # markers decode to ""
        if self.level == "char":
            return "".join("\ufffd" if t is None else t for t in tokens)
        from keras_chargen.tokenizer import detokenize

        return detokenize([OOV_TOKEN if t is None else t for t in tokens])

    def unknown_tokens(self, text: str) -> list[str]:
        """Distinct tokens of `text` not in the vocabulary, in order of first appearance."""
        return list(dict.fromkeys(t for t in self.split(text) if t not in self._ids))

    def token_id(self, token: str) -> int:
        """Id of one token (0 if unknown)."""
        return self._ids.get(token, 0)

    def save(self, path: str | Path) -> None:
        atomic_write_text(
            path,
            json.dumps(
                {"level": self.level, "lowercase": self.lowercase, "oov_token": OOV_TOKEN, "tokens": self.tokens},
                ensure_ascii=False,
                indent=0,
            )
            + "\n",
        )

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(list(data["tokens"]), data.get("level", "char"), data.get("lowercase", False), ordered=True)
        except FileNotFoundError:
            raise ChargenError(f"missing vocabulary file: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
            raise ChargenError(f"corrupt vocabulary file {path}: {err!r}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and (other.tokens, other.level, other.lowercase) == (
            self.tokens,
            self.level,
            self.lowercase,
        )

    def __repr__(self) -> str:
        return f"Vocabulary(level={self.level!r}, size={self.size})"


def text_to_code_points(text: str) -> np.ndarray:
    """Code points of `text` as uint32, vectorised through UTF-32."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)

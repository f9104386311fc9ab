"""Word-level tokenization and detokenization, in-graph (TF string ops) so training, generation and
every export split text the same way.

Rules (documented in README "Word level"):
- optional lowercasing (Unicode-aware);
- a *word* is a run of letters, digits, combining marks, `_`, `'` and `-` ("don't", "o'er",
  "well-known" are one word each);
- every other visible character (punctuation, symbols) is a token of its own, and so is each newline;
- other whitespace (spaces, tabs, carriage returns, Unicode spaces) only separates tokens.

Detokenization joins tokens with one space, except: no space before closing punctuation
(`. , ; : ! ? ) ] } %` …) or a newline, and none after an opening bracket or a newline.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

WORD_CHARS = r"\pL\pN\pM_'\-"  # RE2 classes: letters, numbers, combining marks, underscore, apostrophe, hyphen
NO_SPACE_BEFORE = frozenset(".,;:!?)]}%…\n")
NO_SPACE_AFTER = frozenset("([{¿¡\n")


def split_words(text: tf.Tensor, lowercase: bool) -> tf.RaggedTensor:
    """Strings `(batch,)` → word tokens, ragged `(batch, None)` tf.string."""
    text = tf.convert_to_tensor(text, tf.string)
    if lowercase:
        text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, r"[\t\f\r\v\pZ]", " ")  # every non-newline space is a separator
    text = tf.strings.regex_replace(text, rf"([^{WORD_CHARS} ])", r" \1 ")  # punctuation and "\n" stand alone
    tokens = tf.strings.split(text, sep=" ")
    return tf.ragged.boolean_mask(tokens, tf.strings.length(tokens) > 0)


def tokenize(text: str, lowercase: bool) -> list[str]:
    """Word tokens of one Python string (runs the same graph ops as `split_words`)."""
    return [t.decode("utf-8") for t in split_words(tf.constant([text]), lowercase)[0].numpy()]


def joins_without_space(prev: str, token: str) -> bool:
    """Whether `token` follows `prev` directly (no space) when detokenizing."""
    return token in NO_SPACE_BEFORE or prev in NO_SPACE_AFTER


def detokenize(tokens: Sequence[str]) -> str:
    """Readable text from word tokens (the Python twin of `WordPieces`)."""
    pieces, prev = [], "\n"  # the start of a text behaves like the start of a line
    for token in tokens:
        pieces.append(token if joins_without_space(prev, token) else " " + token)
        prev = token
    return "".join(pieces)


class WordPieces:
    """In-graph detokenization: the text each token id adds after the previous one.

    Args:
        tokens: list[str], the vocabulary in id order starting at id 0 (the OOV token included).
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        self.no_space_before = tf.constant([t in NO_SPACE_BEFORE for t in tokens])
        self.no_space_after = tf.constant([t in NO_SPACE_AFTER for t in tokens])

    def __call__(self, token_text: tf.Tensor, prev_ids: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        """`token_text` (the looked-up strings of `ids`) with a leading space where one belongs."""
        joined = tf.logical_or(tf.gather(self.no_space_before, ids), tf.gather(self.no_space_after, prev_ids))
        return tf.where(joined, token_text, " " + token_text)

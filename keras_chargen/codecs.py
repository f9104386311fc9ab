"""The text side of generation, one codec per level: split a prompt, look it up, and the text each token adds.

`CharCodec` (characters) and `WordCodec` (the words of `keras_chargen.tokenizer`) share one
interface, so the generator, the exports and the stream hold a codec instead of branching on the
level. Marker ids (a document model's start and end tokens) are looked up like any token but add
no text.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from keras_chargen.tokenizer import WordPieces, split_words, tokenize
from keras_chargen.vocab import OOV_TOKEN


class CharCodec(keras.layers.Layer):
    """Characters: a prompt is its characters; unknown ones are skipped in-graph.

    Args:
        vocabulary: list[str], the tokens in id order (ids 1..n; 0 is OOV).
        markers: ids that add no text (document markers). Default none.
    """

    level = "char"
    oov_policies = ("error", "skip")  # what `CharGenerator.generate` may do with unknown prompt tokens
    unknown_hint = "--oov skip to drop them"

    def __init__(self, vocabulary: Sequence[str], markers: Sequence[int] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        self.vocabulary = list(vocabulary)
        self.markers = [int(m) for m in markers]
        self.encoder = keras.layers.StringLookup(vocabulary=self.vocabulary, oov_token=OOV_TOKEN, name="encoder")
        self.decoder = keras.layers.StringLookup(
            vocabulary=self.vocabulary, oov_token=OOV_TOKEN, invert=True, name="decoder"
        )
        silent = [False] * (len(self.vocabulary) + 1)
        for marker in self.markers:
            silent[marker] = True
        self._silent = silent

    def split(self, prompt: tf.Tensor) -> tf.RaggedTensor:
        """Prompts `(batch,)` → ragged tokens `(batch, None)` tf.string."""
        return tf.strings.unicode_split(prompt, "UTF-8")

    def encode(self, prompt: tf.Tensor) -> tf.RaggedTensor:
        """Prompts `(batch,)` → ragged ids `(batch, None)` int32 (unknown characters dropped)."""
        tokens = self.split(prompt)
        ids = tokens.with_flat_values(tf.cast(self.encoder(tokens.flat_values), tf.int32))
        return tf.ragged.boolean_mask(ids, ids > 0)

    def stop_ids(self, stops: tf.Tensor) -> tf.Tensor:
        """Stop strings `(batch, n)` → stop sequences `(batch, n, s)` int32, right-padded with 0.

        A string is split as a prompt is; one with a token outside the vocabulary can never be the
        end of the generated text, so it becomes all 0 (unused), as does "".
        """
        stops = tf.convert_to_tensor(stops, tf.string)
        tokens = self.split(tf.reshape(stops, [-1]))
        ids = tokens.with_flat_values(tf.cast(self.encoder(tokens.flat_values), tf.int32))  # unknown → 0
        known = tf.reduce_all(ids > 0, axis=1)  # (batch * n,); True for ""
        dense = tf.where(known[:, None], ids.to_tensor(default_value=0), 0)  # (batch * n, s)
        return tf.reshape(dense, tf.concat([tf.shape(stops), tf.shape(dense)[1:]], 0))

    def token_text(self, prev_ids: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        """The looked-up text of `ids` (any shape; the previous tokens matter only for words)."""
        return self.decoder(ids)

    def pieces(self, prev_ids: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        """The text each token `ids` adds after `prev_ids` (int32, same shape): tf.string; markers add ""."""
        text = self.token_text(prev_ids, ids)
        if not self.markers:
            return text
        return tf.where(tf.gather(tf.constant(self._silent), ids), "", text)

    def finish(self, prompt: tf.Tensor, generated: tf.Tensor) -> tf.Tensor:
        """The continuation as it follows the prompt (characters need nothing)."""
        return generated

    def text_pieces(self, tokens: tf.Tensor, prev_ids: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        """The text each token of a split text adds, as written (unknown ones too), for showing a text token by
        token: `tokens` from `split`, `ids` their ids, `prev_ids` the ids before them (same shape)."""
        return tokens

    def tokens(self, text: str) -> list[str]:
        """The tokens of one Python string (to name unknown ones before generating)."""
        return list(text)

    def describe_unknown(self, unknown: Sequence[str]) -> tuple[str, str]:
        """(what, the tokens shown) for the unknown-token error."""
        return "characters", ", ".join(f"{c!r} (U+{ord(c):04X})" for c in unknown[:10])


class WordCodec(CharCodec):
    """Words: prompts split as in training; unknown words become `[UNK]` (id 0); output detokenized readably.

    Args:
        vocabulary: list[str], the tokens in id order (ids 1..n; 0 is OOV).
        lowercase: bool, lowercase prompts before the lookup (as the corpus was). Default False.
        markers: ids that add no text; a word after one follows it without a space, as after a newline.
    """

    level = "word"
    oov_policies = ("error", "unk")
    unknown_hint = "--oov unk to feed them as [UNK]"

    def __init__(
        self, vocabulary: Sequence[str], lowercase: bool = False, markers: Sequence[int] = (), **kwargs
    ) -> None:
        super().__init__(vocabulary, markers, **kwargs)
        self.lowercase = lowercase
        tokens = [OOV_TOKEN] + self.vocabulary
        self.word_pieces = WordPieces(["\n" if i in self.markers else t for i, t in enumerate(tokens)])

    def split(self, prompt: tf.Tensor) -> tf.RaggedTensor:
        return split_words(prompt, self.lowercase)

    def encode(self, prompt: tf.Tensor) -> tf.RaggedTensor:
        """Prompts `(batch,)` → ragged ids `(batch, None)` int32 (unknown words → 0, `[UNK]`, seen in training)."""
        tokens = self.split(prompt)
        return tokens.with_flat_values(tf.cast(self.encoder(tokens.flat_values), tf.int32))

    def token_text(self, prev_ids: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        return self.word_pieces(self.decoder(ids), prev_ids, ids)

    def text_pieces(self, tokens: tf.Tensor, prev_ids: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        return self.word_pieces(tokens, prev_ids, ids)

    def finish(self, prompt: tf.Tensor, generated: tf.Tensor) -> tf.Tensor:
        """ "to be " + " or" would double the space: drop the continuation's leading space after one."""
        ends_in_space = tf.strings.regex_full_match(prompt, r"(?s).*\s")
        return tf.where(ends_in_space, tf.strings.regex_replace(generated, "^ ", ""), generated)

    def tokens(self, text: str) -> list[str]:
        return tokenize(text, self.lowercase)

    def describe_unknown(self, unknown: Sequence[str]) -> tuple[str, str]:
        return "words", ", ".join(repr(w) for w in unknown[:10])


def make_codec(
    vocabulary: Sequence[str], level: str = "char", lowercase: bool = False, markers: Sequence[int] = ()
) -> CharCodec:
    """The codec of `level` ("char" or "word")."""
    if level == "word":
        return WordCodec(vocabulary, lowercase, markers, name="codec")
    return CharCodec(vocabulary, markers, name="codec")

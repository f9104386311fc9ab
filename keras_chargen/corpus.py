"""Corpus sources (text files, directories, TFDS) streamed in chunks, and their preparation into id files.

Preparation follows nanoGPT's `prepare.py`: the text is streamed once to count tokens (characters,
or words at the word level), once to build the vocabulary from the training part, and once to write
`train.bin` / `val.bin` (one little-endian id per token). Training then reads these files through `tf.data`
(see `data.py`), so memory stays bounded whatever the corpus size.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import json
import logging
import socket
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from keras_chargen.corpora import EmbeddedSource
from keras_chargen.errors import ChargenError
from keras_chargen.io import atomic_path, atomic_write_text
from keras_chargen.vocab import MAX_CODE_POINT, OOV_TOKEN, Vocabulary, text_to_code_points

CHUNK_BYTES = 1 << 20  # read files 1 MiB at a time


class TextSource(Protocol):
    """Anything that yields a corpus as a sequence of text chunks, the same each time."""

    def chunks(self) -> Iterator[str]: ...

    def describe(self) -> str: ...


def resolve_text_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and directories (their `*.txt`, sorted) into a list of files; error on missing ones."""
    if not paths:
        raise ChargenError("no text files given")
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.txt") if p.is_file())
            if not found:
                raise ChargenError(f"directory has no *.txt files: {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ChargenError(f"no such file or directory: {path}")
    return files


@dataclasses.dataclass(frozen=True)
class FileSource:
    """Text files read in 1 MiB chunks with an incremental UTF-8 decoder, concatenated as they are.

    Args:
        paths: the files, in order.
        errors: "strict" (invalid UTF-8 is an error naming file and byte offset) or "replace" (U+FFFD).
        whole_files: the files among `paths` that are one document each in document mode (the
            `*.txt` of a directory given with `--documents`); the others hold one document per line.
    """

    paths: tuple[Path, ...]
    errors: str = "strict"
    whole_files: tuple[Path, ...] = ()  # document mode: files that are one document each (found in a directory)

    def chunks(self) -> Iterator[str]:
        for path in self.paths:
            decoder = codecs.getincrementaldecoder("utf-8")(errors=self.errors)
            offset = 0
            try:
                with open(path, "rb") as handle:
                    while block := handle.read(CHUNK_BYTES):
                        try:
                            text = decoder.decode(block)
                        except UnicodeDecodeError as err:
                            raise ChargenError(
                                f"{path}: invalid UTF-8 at byte {offset + err.start} "
                                "(use --encoding-errors replace to substitute U+FFFD)"
                            ) from None
                        offset += len(block)
                        if text:
                            yield text
                    tail = decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                raise ChargenError(
                    f"{path}: truncated UTF-8 sequence at the end of the file "
                    "(use --encoding-errors replace to substitute U+FFFD)"
                ) from None
            except OSError as err:
                raise ChargenError(f"cannot read {path}: {err.strerror}") from None
            if tail:
                yield tail

    def describe(self) -> str:
        return ", ".join(str(p) for p in self.paths)


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """A tensorflow-datasets text dataset, its examples' `feature` joined by newlines.

    Args:
        name: TFDS name, e.g. "tiny_shakespeare".
        split: TFDS split expression; "all" concatenates every split in train, validation, test order
            (for tiny_shakespeare this is the whole original text, so our last-10 % validation matches).
        feature: the text feature of each example.
        data_dir: where TFDS keeps prepared data (default: TFDS' own).
        manual_dir: a folder with the raw download files, for preparing offline
            (tiny_shakespeare: a folder holding `input.txt`, e.g. a copy of tinyshakespeare.txt).
    """

    name: str
    split: str = "all"
    feature: str = "text"
    data_dir: str | None = None
    manual_dir: str | None = None

    def _dataset(self) -> Any:  # a tf.data.Dataset (TensorFlow is untyped here)
        import tensorflow_datasets as tfds

        config = tfds.download.DownloadConfig(manual_dir=self.manual_dir) if self.manual_dir else None
        try:
            builder = tfds.builder(self.name, data_dir=self.data_dir)
            with quiet_logger("absl"):  # "Variant folder ... has no dataset_info.json" before every first download
                prepared = builder.is_prepared()
            if not self.manual_dir and not prepared:
                check_download_hosts(self.name, builder.url_infos or {})
            builder.download_and_prepare(download_config=config)  # a no-op once prepared
            split = self.split
            if split == "all":
                order = {"train": 0, "validation": 1, "test": 2}
                split = "+".join(sorted(builder.info.splits.keys(), key=lambda s: (order.get(s, 3), s)))
            return builder.as_dataset(split=split, shuffle_files=False)
        except ChargenError:
            raise
        except Exception as err:  # TFDS raises many types; report one line
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ChargenError(f"cannot load TFDS dataset {self.name!r}: {first}; {TFDS_ALTERNATIVES}") from None

    def chunks(self) -> Iterator[str]:
        first = True
        for example in self._dataset().as_numpy_iterator():
            if self.feature not in example:
                raise ChargenError(
                    f"TFDS dataset {self.name!r} has no feature {self.feature!r}; it has {', '.join(sorted(example))}"
                )
            value = example[self.feature]
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            yield text if first else "\n" + text
            first = False

    def describe(self) -> str:
        return f"tfds:{self.name}[{self.split}]"


TFDS_ALTERNATIVES = (
    "use --text FILE, --tfds-manual-dir DIR (a folder with the dataset's raw files) "
    "or no source flag (the embedded tiny-shakespeare corpus)"
)
PROBE_TIMEOUT = 5.0  # seconds to wait for a TCP connection to a download host


def check_download_hosts(name: str, urls: Iterable[str], timeout: float = PROBE_TIMEOUT) -> None:
    """Raise `ChargenError` at once if a host `urls` point to cannot be reached.

    Without a network, TFDS' downloader retries each URL for about 3.5 minutes (urllib3 backoff,
    a warning per retry) before it fails; one short TCP connection per host fails in seconds.
    """
    for host, port in sorted({_host_port(url) for url in urls}):
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as err:
            raise ChargenError(
                f"cannot download TFDS dataset {name!r}: {host} is unreachable ({err}), the download failed; "
                f"{TFDS_ALTERNATIVES}"
            ) from None


@contextlib.contextmanager
def quiet_logger(name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Hide the Python logger `name`'s records below `level` inside the block."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(max(level, previous))
    try:
        yield
    finally:
        logger.setLevel(previous)


def _host_port(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "", parts.port or (80 if parts.scheme == "http" else 443)


@dataclasses.dataclass(frozen=True)
class PreparedCorpus:
    """A corpus encoded to id files: `train.bin` and `val.bin` in `directory`."""

    directory: Path
    vocab: Vocabulary
    num_train: int  # tokens (characters or words) in the training part
    num_val: int  # tokens in the validation part (the last ones of the text)

    @property
    def train_path(self) -> Path:
        return self.directory / "train.bin"

    @property
    def val_path(self) -> Path:
        return self.directory / "val.bin"

    def read_ids(self, split: str) -> np.ndarray:
        """All ids of a split as a memory map (for tests and small corpora)."""
        path = self.train_path if split == "train" else self.val_path
        return np.memmap(path, dtype=self.vocab.id_dtype, mode="r")


def split_sizes(num_tokens: int, val_fraction: float) -> tuple[int, int]:
    """(train, validation) token counts; validation is the last `val_fraction` of the text."""
    num_val = int(round(num_tokens * val_fraction))
    return num_tokens - num_val, num_val


def word_chunks(source: TextSource) -> Iterator[str]:
    """The source's chunks cut after their last whitespace, so that no word is split between two chunks."""
    carry = ""
    for chunk in source.chunks():
        text = carry + chunk
        cut = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"), text.rfind("\r")) + 1
        carry = text[cut:]
        if cut:
            yield text[:cut]
    if carry:
        yield carry


def _token_chunks(source: TextSource, level: str, lowercase: bool) -> Iterator[np.ndarray]:
    """Code points (char level) or word tokens as a bytes array (word level), chunk by chunk."""
    if level == "char":
        for chunk in source.chunks():
            yield text_to_code_points(chunk)
    else:
        from keras_chargen.tokenizer import split_words

        for chunk in word_chunks(source):
            yield split_words([chunk], lowercase)[0].numpy()


def _train_part(chunks: Iterator[np.ndarray], num_train: int) -> Iterator[np.ndarray]:
    """The chunks up to the first `num_train` tokens."""
    seen = 0
    for tokens in chunks:
        if seen >= num_train:
            return
        yield tokens[: num_train - seen]
        seen += len(tokens)


def build_vocabulary(chunks: Iterator[np.ndarray], level: str, lowercase: bool, max_vocab: int) -> Vocabulary:
    """The vocabulary of the token chunks: every character (char level), or the `max_vocab` most frequent
    words (word level, all if 0) counted by `keras.layers.StringLookup.adapt` over a `tf.data` stream."""
    if level == "char":
        counts = np.zeros(MAX_CODE_POINT, dtype=np.int64)
        for cps in chunks:
            counts += np.bincount(cps, minlength=MAX_CODE_POINT)
        return Vocabulary.from_counts(counts)
    import keras
    import tensorflow as tf

    dataset = tf.data.Dataset.from_generator(lambda: chunks, output_signature=tf.TensorSpec([None], tf.string))
    lookup = keras.layers.StringLookup(max_tokens=max_vocab + 1 if max_vocab else None, oov_token=OOV_TOKEN)
    lookup.adapt(dataset)
    return Vocabulary(lookup.get_vocabulary()[1:], "word", lowercase)


def corpus_vocabulary(
    source: TextSource, val_fraction: float, level: str, lowercase: bool, max_vocab: int
) -> Vocabulary:
    """The vocabulary `prepare_corpus` would build for `source` (from its training part)."""
    num_tokens = sum(len(tokens) for tokens in _token_chunks(source, level, lowercase))
    if num_tokens == 0:
        raise ChargenError(f"corpus is empty: {source.describe()}")
    num_train = split_sizes(num_tokens, val_fraction)[0]
    return build_vocabulary(
        _train_part(_token_chunks(source, level, lowercase), num_train), level, lowercase, max_vocab
    )


def prepare_corpus(
    source: TextSource,
    directory: str | Path,
    val_fraction: float,
    vocab: Vocabulary | None = None,
    level: str = "char",
    lowercase: bool = False,
    max_vocab: int = 0,
) -> PreparedCorpus:
    """Stream `source` into `directory/{train,val}.bin`, building the vocabulary from the training part.

    Args:
        source: the corpus.
        directory: where the id files and `corpus.json` go (created).
        val_fraction: the last fraction of the tokens held out for validation.
        vocab: an existing vocabulary to reuse (resuming, or evaluating another text); its level and
            lowercasing then apply. Default None: build one.
        level: "char" (default) or "word", when building the vocabulary.
        lowercase: bool, word level: lowercase the text first. Default False.
        max_vocab: int, word level: keep the most frequent words only, the rest map to id 0; 0 keeps all.
    """
    directory = Path(directory)
    if vocab is not None:
        level, lowercase = vocab.level, vocab.lowercase
    num_tokens = sum(len(tokens) for tokens in _token_chunks(source, level, lowercase))
    if num_tokens == 0:
        raise ChargenError(f"corpus is empty: {source.describe()}")
    num_train, num_val = split_sizes(num_tokens, val_fraction)
    if vocab is None:
        vocab = build_vocabulary(
            _train_part(_token_chunks(source, level, lowercase), num_train), level, lowercase, max_vocab
        )
    directory.mkdir(parents=True, exist_ok=True)
    dtype = vocab.id_dtype.newbyteorder("<")
    with (
        atomic_path(directory / "train.bin") as train_tmp,
        atomic_path(directory / "val.bin") as val_tmp,
        open(train_tmp, "wb") as train_file,
        open(val_tmp, "wb") as val_file,
    ):
        seen = 0
        for tokens in _token_chunks(source, level, lowercase):
            ids = _token_ids(vocab, tokens).astype(dtype)
            cut = min(max(num_train - seen, 0), len(ids))
            train_file.write(ids[:cut].tobytes())
            val_file.write(ids[cut:].tobytes())
            seen += len(ids)
    atomic_write_text(
        directory / "corpus.json",
        json.dumps({"source": source.describe(), "level": level, "num_train": num_train, "num_val": num_val}, indent=2)
        + "\n",
    )
    return PreparedCorpus(directory, vocab, num_train, num_val)


def _token_ids(vocab: Vocabulary, tokens: np.ndarray) -> np.ndarray:
    """Ids of one chunk from `_token_chunks` (code points or UTF-8 word bytes); unknown → 0."""
    if vocab.level == "char":
        return vocab.code_points_to_ids(tokens)
    return np.array([vocab.token_id(t.decode("utf-8")) for t in tokens.tolist()], dtype=np.int64)


def make_source(
    text: Sequence[str | Path] | None = None,
    tfds: str | None = None,
    encoding_errors: str = "strict",
    documents: bool = False,
    **tfds_kwargs: Any,
) -> TextSource:
    """A `FileSource` for `text` paths, a `TfdsSource` for a TFDS name, or with neither the embedded
    tiny-shakespeare (`corpora.EmbeddedSource`).

    With `documents`, each file found in a directory of `text` is one document (see `keras_chargen.documents`).
    """
    if text and tfds:
        raise ChargenError("give one corpus at most: --text PATH [PATH...] or --tfds NAME (neither: tiny-shakespeare)")
    if not text and not tfds:
        return EmbeddedSource()
    if tfds:
        return TfdsSource(tfds, **{k: v for k, v in tfds_kwargs.items() if v is not None})
    paths = resolve_text_paths(text or [])
    whole = tuple(p for p in paths if documents and not any(Path(raw) == p for raw in text or []))
    return FileSource(tuple(paths), encoding_errors, whole)

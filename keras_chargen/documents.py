"""Document mode (`train --documents`): a corpus of separate documents (names, titles, recipes …).

Each document is trained as `<doc>` + its tokens + `</doc>` (reserved marker ids, see
`keras_chargen.vocab.MARKERS`), with the recurrent state reset at its start, so the model learns
how documents begin from the zero state generation starts from, and when they end.

Layout. Documents are short and of every length, so the windows are aligned to documents: a
document's `n` (input, target) pairs fill `ceil(n / seq_len)` windows of one stream, the last one
padded with weight-0 positions, and the next document of that stream starts at a window start.
Documents go to the `batch_size` streams greedily (each to the stream with the fewest windows so
far), and row `i` of batch `k` is window `k` of stream `i`. The state is carried from window to
window inside a document (exact truncated BPTT, as in the stateful layout) and zeroed where a
document starts: `document_layout` returns that per-batch, per-row reset mask beside the batches,
and the `DocumentResets` callback applies it before each batch. A mid-window reset would need a
custom recurrent cell (slower, and a different layer than the one every export reads); padding
costs at most `seq_len - 1` positions per document, so choose `--seq-len` near the typical
document length (e.g. 16–32 for names).

Document corpora are read into memory (they are lists of short texts); the validation split is
the last `val_fraction` of the documents.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_chargen.callbacks import StatesCallback
from keras_chargen.config import ChargenConfig
from keras_chargen.corpus import FileSource, PreparedCorpus, TextSource, TfdsSource, build_vocabulary, split_sizes
from keras_chargen.errors import ChargenError
from keras_chargen.io import atomic_path, atomic_write_text
from keras_chargen.vocab import MARKERS, Vocabulary, text_to_code_points


def read_documents(source: TextSource) -> list[str]:
    """The documents of `source`: one per non-blank line of each file, one per file found in a directory
    (`FileSource.whole_files`), or one per TFDS example."""
    if isinstance(source, TfdsSource):
        return [doc for doc in (chunk.removeprefix("\n") for chunk in source.chunks()) if doc.strip()]
    if not isinstance(source, FileSource):
        text = "".join(source.chunks())
        return [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    documents: list[str] = []
    for path in source.paths:
        text = "".join(FileSource((path,), source.errors).chunks())
        if path in source.whole_files:
            if text.strip():
                documents.append(text.strip("\n"))
        else:
            documents.extend(line.rstrip("\r") for line in text.split("\n") if line.strip())
    if not documents:
        raise ChargenError(f"corpus has no documents (every line is blank): {source.describe()}")
    return documents


def _split(documents: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(training, validation) documents: the validation ones are the last `val_fraction`."""
    num_train, num_val = split_sizes(len(documents), val_fraction)
    if num_train < 1 or num_val < 1:
        raise ChargenError(
            f"corpus has {len(documents)} documents; --documents needs at least one for training and one "
            f"for validation (--val-fraction {val_fraction})"
        )
    return documents[:num_train], documents[num_train:]


def _tokens(documents: list[str], level: str, lowercase: bool) -> list[np.ndarray]:
    """Per document: its code points (char level) or its word tokens as UTF-8 bytes (word level)."""
    if level == "char":
        return [text_to_code_points(doc) for doc in documents]
    from keras_chargen.tokenizer import split_words

    ragged = split_words(tf.constant(documents), lowercase)
    return [row.numpy() for row in ragged]


def document_vocabulary(source: TextSource, config: ChargenConfig, markers: bool = True) -> Vocabulary:
    """The vocabulary of the training documents, with the two markers appended (`markers`)."""
    train_docs, _ = _split(read_documents(source), config.val_fraction)
    chunks = iter(_tokens(train_docs, config.level, config.lowercase))
    vocab = build_vocabulary(chunks, config.level, config.lowercase, config.max_vocab)
    return vocab.extend(list(MARKERS)) if markers else vocab


def _ids(vocab: Vocabulary, tokens: np.ndarray) -> np.ndarray:
    if vocab.level == "char":
        return vocab.code_points_to_ids(tokens)
    return np.array([vocab.token_id(t.decode("utf-8")) for t in tokens.tolist()], dtype=np.int64)


def prepare_documents(
    source: TextSource, directory: str | Path, config: ChargenConfig, vocab: Vocabulary | None = None
) -> PreparedCorpus:
    """Write `train.bin` / `val.bin`: every document as `<doc>` ids `</doc>`, and `corpus.json`.

    Args:
        source: the corpus (see `read_documents`).
        directory: where the files go (created).
        config: ChargenConfig, its level, lowercasing, max_vocab and val_fraction apply.
        vocab: a vocabulary to use (resuming, fine-tuning); the markers are appended if it lacks them.
            Default None: built from the training documents.
    """
    directory = Path(directory)
    documents = read_documents(source)
    train_docs, val_docs = _split(documents, config.val_fraction)
    if vocab is None:
        vocab = document_vocabulary(source, config)
    vocab = vocab.extend(list(MARKERS))  # a no-op when it has them
    start, end = marker_ids(vocab)
    directory.mkdir(parents=True, exist_ok=True)
    dtype = vocab.id_dtype.newbyteorder("<")
    sizes = []
    for name, docs in (("train.bin", train_docs), ("val.bin", val_docs)):
        pieces = [np.concatenate([[start], _ids(vocab, t), [end]]) for t in _tokens(docs, vocab.level, vocab.lowercase)]
        ids = np.concatenate(pieces).astype(dtype)
        with atomic_path(directory / name) as tmp:
            ids.tofile(tmp)
        sizes.append(len(ids))
    record = {
        "source": source.describe(),
        "level": vocab.level,
        "num_train": sizes[0],
        "num_val": sizes[1],
        "documents": True,
        "num_train_documents": len(train_docs),
        "num_val_documents": len(val_docs),
    }
    atomic_write_text(directory / "corpus.json", json.dumps(record, indent=2) + "\n")
    return PreparedCorpus(directory, vocab, sizes[0], sizes[1])


def marker_ids(vocab: Vocabulary) -> tuple[int, int]:
    """(start, end) marker ids of a document vocabulary; `ChargenError` if it has none."""
    start, end = vocab.document_start, vocab.document_end
    if start is None or end is None:
        raise ChargenError("this is not a document model (its vocabulary has no <doc> / </doc> markers)")
    return start, end


def split_documents(ids: np.ndarray, start: int) -> list[np.ndarray]:
    """The documents (each from its start marker to its end marker) of a prepared id array."""
    cuts = np.flatnonzero(ids == start)
    return [ids[a:b] for a, b in zip(cuts, list(cuts[1:]) + [len(ids)])]


def document_layout(
    documents: list[np.ndarray], batch_size: int, seq_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batches of whole-document windows (see the module docstring).

    Returns:
        inputs, targets int32 `(batches, batch_size, seq_len)`, weights float32 (1 for real
        positions, 0 for padding) of the same shape, and the reset mask bool `(batches, batch_size)`:
        True where the row's window starts a document (or is padding), i.e. its state must be zeroed.
    """
    streams: list[list[tuple[np.ndarray, np.ndarray, bool]]] = [[] for _ in range(batch_size)]
    heap = [(0, i) for i in range(batch_size)]
    for doc in documents:
        x, y = doc[:-1], doc[1:]
        windows = -(-len(x) // seq_len)
        count, index = heapq.heappop(heap)
        for w in range(windows):
            streams[index].append((x[w * seq_len : (w + 1) * seq_len], y[w * seq_len : (w + 1) * seq_len], w == 0))
        heapq.heappush(heap, (count + windows, index))
    num_batches = max(len(s) for s in streams)
    inputs = np.zeros((num_batches, batch_size, seq_len), np.int32)
    targets = np.zeros_like(inputs)
    weights = np.zeros(inputs.shape, np.float32)
    resets = np.ones((num_batches, batch_size), bool)
    for row, stream in enumerate(streams):
        for k, (x, y, first) in enumerate(stream):
            inputs[k, row, : len(x)], targets[k, row, : len(y)], weights[k, row, : len(x)] = x, y, 1.0
            resets[k, row] = first
    return inputs, targets, weights, resets


class DocumentBatches:
    """The document layout of one split (`train.bin` or `val.bin`) as a `tf.data` pipeline plus its resets.

    Args:
        corpus: PreparedCorpus from `prepare_documents`.
        split: "train" or "val".
        batch_size, seq_len: ints, the layout.
        seed: int, the training documents are shuffled once with it (validation keeps its order).
    """

    def __init__(self, corpus: PreparedCorpus, split: str, batch_size: int, seq_len: int, seed: int = 0) -> None:
        ids = np.asarray(corpus.read_ids(split), np.int64)
        documents = split_documents(ids, marker_ids(corpus.vocab)[0])
        if split == "train":
            order = np.random.default_rng(seed).permutation(len(documents))
            documents = [documents[i] for i in order]  # a name list is often sorted: mix the streams
        self.inputs, self.targets, self.weights, self.resets = document_layout(documents, batch_size, seq_len)

    @property
    def num_batches(self) -> int:
        return len(self.inputs)

    def dataset(self) -> tf.data.Dataset:
        """(inputs, targets, sample weights) batches; the weights keep padding out of the loss and metrics."""
        data = tf.data.Dataset.from_tensor_slices((self.inputs, self.targets, self.weights))
        return data.prefetch(tf.data.AUTOTUNE)


class DocumentResets(StatesCallback):
    """Zero the carried state of the rows whose window starts a document, before every batch.

    Args:
        train_resets, val_resets: bool `(batches, batch_size)` masks from `document_layout`.
        progress: callbacks.Progress, whose `step` is the batch index within the epoch (a resumed
            epoch skips its first batches, so Keras' own batch index would be off).
    """

    def __init__(self, train_resets: np.ndarray, val_resets: np.ndarray, progress) -> None:
        super().__init__()
        self.train_resets, self.val_resets, self.progress = train_resets, val_resets, progress

    def _reset(self, resets: np.ndarray) -> None:
        if resets.any():
            self.states.keep_rows(~resets)

    def on_train_batch_begin(self, batch, logs=None) -> None:
        self._reset(self.train_resets[self.progress.step % len(self.train_resets)])

    def on_test_batch_begin(self, batch, logs=None) -> None:
        self._reset(self.val_resets[batch % len(self.val_resets)])


def training_documents(model_dir: str | Path) -> set[str]:
    """The texts of every document the model in `model_dir` was trained and validated on (for `--novel`)."""
    from keras_chargen.saving import VOCAB_FILE

    model_dir = Path(model_dir)
    vocab = Vocabulary.load(model_dir / VOCAB_FILE)
    found: set[str] = set()
    for name in ("train.bin", "val.bin"):
        path = model_dir / "data" / name
        if not path.exists():
            raise ChargenError(f"--novel needs the prepared corpus {path}, which is missing")
        ids = np.fromfile(path, dtype=vocab.id_dtype.newbyteorder("<")).astype(np.int64)
        found.update(vocab.decode(doc) for doc in split_documents(ids, marker_ids(vocab)[0]))
    return found


def document_splits(config: ChargenConfig, corpus: PreparedCorpus) -> tuple[DocumentBatches, DocumentBatches]:
    """The training and validation layouts of a prepared document corpus."""
    return (
        DocumentBatches(corpus, "train", config.batch_size, config.seq_len, config.seed),
        DocumentBatches(corpus, "val", config.batch_size, config.seq_len),
    )


def document_resets(config: ChargenConfig, corpus: PreparedCorpus, progress) -> DocumentResets:
    """The `DocumentResets` callback of a prepared document corpus."""
    train_batches, val_batches = document_splits(config, corpus)
    return DocumentResets(train_batches.resets, val_batches.resets, progress)


NOVEL_ROUNDS = 20  # `--novel`: batches of samples drawn at most


def novel_documents(
    sample: Callable[[int | None], list[str]],
    model_dir: str | Path,
    prompt: str,
    count: int,
    rows: int,
    seed: int | None,
) -> list[str]:
    """`count` generated documents (continuations of `prompt`) that are not training documents.

    Args:
        sample: callable(seed) → a batch of `rows` generated continuations of `prompt` (row i draws with seed + i).
        model_dir: the model directory (its prepared corpus holds the training documents).
        prompt: str, the documents' beginning; count: int, documents wanted; rows: int, rows per batch.
        seed: int | None, the first batch's seed; batch k draws with `seed + k * rows` (None: random).

    Draws batches until enough are found; prints a note to stderr and returns fewer if `NOVEL_ROUNDS`
    batches do not hold enough.
    """
    import sys

    known = training_documents(model_dir)
    found: list[str] = []
    for round_ in range(NOVEL_ROUNDS):  # batches must not overlap: row i of a batch draws with seed + i
        batch = sample(None if seed is None else seed + round_ * rows)
        found += [text for text in batch if text and prompt + text not in known]
        if len(found) >= count:
            return found[:count]
    print(
        f"note: only {len(found)} of {count} novel documents in {NOVEL_ROUNDS} batches "
        "(the model mostly reproduces its training documents)",
        file=sys.stderr,
    )
    return found


def evaluate_documents(model_dir: str | Path, source: TextSource, split: str = "val") -> dict[str, float]:
    """`evaluation.evaluate` for a document model: its validation (or all) documents in the document layout.

    Every document starts from the zero state and is scored up to and including its end marker
    (padding excluded), as in training's validation.
    """
    import math
    from types import SimpleNamespace

    from keras_chargen.callbacks import ResetStates
    from keras_chargen.metrics import BitsPerChar, Perplexity
    from keras_chargen.model import build_model
    from keras_chargen.saving import load_model

    config, vocab, inference = load_model(model_dir)
    documents = read_documents(source)
    if split == "val":
        documents = _split(documents, config.val_fraction)[1]
    start, end = marker_ids(vocab)
    ids = [np.concatenate([[start], _ids(vocab, t), [end]]) for t in _tokens(documents, vocab.level, vocab.lowercase)]
    inputs, targets, weights, resets = document_layout(ids, config.batch_size, config.seq_len)
    model = build_model(config, vocab.size, config.batch_size, stateful=True)
    model.set_weights(inference.get_weights())
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight"),
        weighted_metrics=[BitsPerChar(), Perplexity()],
    )
    data = tf.data.Dataset.from_tensor_slices((inputs, targets, weights))
    callbacks = [ResetStates(), DocumentResets(resets, resets, SimpleNamespace(step=0))]
    results = model.evaluate(data, callbacks=callbacks, verbose=0, return_dict=True)
    bpc = float(results["bpc"])
    return {
        "loss": bpc * math.log(2.0),
        "bpc": bpc,
        "perplexity": float(results["perplexity"]),
        "chars": int(weights.sum()),
    }

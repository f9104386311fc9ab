"""`tf.data` sliding-window pipelines over the id files written by `corpus.prepare_corpus`.

Both layouts read the ids straight from disk with `FixedLengthRecordDataset` (no Python in the
hot path) and cache them in memory only when the split is small.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_chargen.errors import ChargenError

CACHE_MAX_IDS = 16_000_000  # cache decoded windows in RAM below this many ids (~128 MB of int32 pairs)
WINDOWS_PER_CHUNK = 256  # shuffled layout: windows read per disk record
SHUFFLE_BUFFER = 10_000  # shuffled layout: windows in the shuffle buffer


def _records(path: Path, dtype: np.dtype, total: int, start, count, length) -> tf.data.Dataset:
    """`count` consecutive records of `length` ids starting at id `start` of a file of `total` ids."""
    width = dtype.itemsize
    return tf.data.FixedLengthRecordDataset(
        str(path),
        record_bytes=length * width,
        header_bytes=start * width,
        footer_bytes=(total - start - count * length) * width,
    )


def _decoder(dtype: np.dtype):
    tf_dtype = tf.as_dtype(dtype)
    return lambda record: tf.cast(tf.io.decode_raw(record, tf_dtype, little_endian=True), tf.int32)


def stream_length(num_ids: int, batch_size: int, seq_len: int) -> int:
    """Characters per stream in the stateful layout: a multiple of `seq_len` (+1 for the last target)."""
    return (num_ids - 1) // batch_size // seq_len * seq_len


def stateful_dataset(
    path: str | Path, num_ids: int, dtype: np.dtype, batch_size: int, seq_len: int, name: str = "training"
) -> tf.data.Dataset:
    """Batches of (inputs, targets), both `(batch_size, seq_len)` int32, in char-rnn's stream layout.

    The ids are cut into `batch_size` contiguous streams of `L` characters; row i of batch k is
    `stream_i[k*seq_len : (k+1)*seq_len]` and its targets are the same slice shifted by one, so
    row i of batch k+1 continues row i of batch k exactly and the recurrent state can be carried.
    """
    path, dtype = Path(path), np.dtype(dtype)
    length = stream_length(num_ids, batch_size, seq_len)
    if length == 0:
        raise ChargenError(
            f"{name} text has {num_ids} characters, fewer than one batch needs "
            f"(batch_size × seq_len + 1 = {batch_size * seq_len + 1}); "
            "use a longer text or lower --batch-size / --seq-len"
        )
    per_stream = length // seq_len
    decode = _decoder(dtype)

    def stream(i):
        start = i * length
        inputs = _records(path, dtype, num_ids, start, per_stream, seq_len)
        targets = _records(path, dtype, num_ids, start + 1, per_stream, seq_len)
        return tf.data.Dataset.zip(inputs, targets).map(lambda x, y: (decode(x), decode(y)))

    streams = tf.data.Dataset.range(batch_size).interleave(stream, cycle_length=batch_size, block_length=1)
    dataset = streams.batch(batch_size, drop_remainder=True)
    dataset = dataset.map(
        lambda x, y: (tf.ensure_shape(x, (batch_size, seq_len)), tf.ensure_shape(y, (batch_size, seq_len)))
    )
    if num_ids <= CACHE_MAX_IDS:
        dataset = dataset.cache()
    # Keras needs the cardinality: with an unknown one, `evaluate` reports a wrong mean.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(per_stream))
    return dataset.prefetch(tf.data.AUTOTUNE)


def num_stateful_batches(num_ids: int, batch_size: int, seq_len: int) -> int:
    """Batches per epoch of `stateful_dataset`."""
    return stream_length(num_ids, batch_size, seq_len) // seq_len


def shuffled_dataset(
    path: str | Path, num_ids: int, dtype: np.dtype, batch_size: int, seq_len: int, stride: int, seed: int = 0
) -> tf.data.Dataset:
    """Shuffled batches of overlapping windows (a new order every epoch) for stateless training.

    Windows of `seq_len + 1` ids start every `stride` ids; each is split into inputs and targets
    shifted by one. Windows are read `WINDOWS_PER_CHUNK` at a time (chunks in shuffled order),
    framed in-graph and shuffled again through a buffer.
    """
    path, dtype = Path(path), np.dtype(dtype)
    num_windows = (num_ids - seq_len - 1) // stride + 1 if num_ids > seq_len else 0
    if num_windows < batch_size:
        raise ChargenError(
            f"training text has {num_ids} characters, fewer windows ({max(num_windows, 0)}) than one batch "
            f"({batch_size}); use a longer text or lower --batch-size / --seq-len / --stride"
        )
    decode = _decoder(dtype)
    num_chunks = -(-num_windows // WINDOWS_PER_CHUNK)

    def chunk(j):
        count = tf.minimum(tf.constant(WINDOWS_PER_CHUNK, tf.int64), num_windows - j * WINDOWS_PER_CHUNK)
        length = (count - 1) * stride + seq_len + 1
        ids = decode(_records(path, dtype, num_ids, j * WINDOWS_PER_CHUNK * stride, 1, length).get_single_element())
        return tf.data.Dataset.from_tensor_slices(tf.signal.frame(ids, seq_len + 1, stride))

    dataset = tf.data.Dataset.range(num_chunks)
    if num_ids <= CACHE_MAX_IDS:
        dataset = dataset.flat_map(chunk).cache()
        dataset = dataset.shuffle(num_windows, seed=seed, reshuffle_each_iteration=True)
    else:
        dataset = dataset.shuffle(num_chunks, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.interleave(chunk, cycle_length=4, num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.map(lambda w: (w[:, :-1], w[:, 1:]), num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_windows // batch_size))
    return dataset.prefetch(tf.data.AUTOTUNE)


def num_shuffled_batches(num_ids: int, batch_size: int, seq_len: int, stride: int) -> int:
    """Batches per epoch of `shuffled_dataset`."""
    return ((num_ids - seq_len - 1) // stride + 1) // batch_size

import numpy as np
import pytest
from conftest import CORPUS

from keras_chargen import ChargenError, FileSource, prepare_corpus, shuffled_dataset, stateful_dataset
from keras_chargen.data import num_shuffled_batches, num_stateful_batches, stream_length


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_corpus(FileSource((CORPUS,)), tmp_path_factory.mktemp("data"), 0.1)


def test_stateful_layout_rows_continue_their_streams_exactly(prepared):
    batch, seq = 6, 25
    ids = np.asarray(prepared.read_ids("train")).astype(np.int32)
    batches = [
        (x.numpy(), y.numpy())
        for x, y in stateful_dataset(prepared.train_path, prepared.num_train, prepared.vocab.id_dtype, batch, seq)
    ]
    assert len(batches) == num_stateful_batches(prepared.num_train, batch, seq) > 10
    length = stream_length(prepared.num_train, batch, seq)
    for i in range(batch):
        inputs = np.concatenate([x[i] for x, _ in batches])
        targets = np.concatenate([y[i] for _, y in batches])
        assert np.array_equal(inputs, ids[i * length : (i + 1) * length])  # row i = stream i, in order
        assert np.array_equal(targets[:-1], inputs[1:])  # targets are inputs shifted by one
        assert targets[-1] == ids[(i + 1) * length]
    assert all(x.shape == (batch, seq) and x.dtype == np.int32 for x, _ in batches)


def test_training_batches_never_contain_validation_text(prepared):
    train_ids = np.asarray(prepared.read_ids("train")).astype(np.int32)
    seen = np.concatenate(
        [
            y.numpy().ravel()
            for _, y in stateful_dataset(prepared.train_path, prepared.num_train, prepared.vocab.id_dtype, 4, 50)
        ]
    )
    # every target comes from the training file, whose length is the training part only
    assert prepared.train_path.stat().st_size == prepared.num_train * prepared.vocab.id_dtype.itemsize
    assert len(seen) <= len(train_ids) - 1
    text = prepared.vocab.decode(train_ids)
    val_text = CORPUS.read_text()[prepared.num_train :]
    assert text + val_text == CORPUS.read_text()


def test_shuffled_layout_windows_are_all_there_and_reshuffled(tmp_path):
    rng = np.random.default_rng(0)  # random text: every window is unique, so windows identify positions
    (tmp_path / "r.txt").write_text("".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz .,"), 20_000)))
    prepared = prepare_corpus(FileSource((tmp_path / "r.txt",)), tmp_path / "data", 0.1)
    batch, seq, stride = 8, 20, 7
    ids = np.asarray(prepared.read_ids("train")).astype(np.int32)
    dataset = shuffled_dataset(
        prepared.train_path, prepared.num_train, prepared.vocab.id_dtype, batch, seq, stride, seed=1
    )
    starts = {tuple(ids[s : s + seq + 1]): s for s in range(0, prepared.num_train - seq, stride)}
    orders = []
    for _ in range(2):
        batches = [(x.numpy(), y.numpy()) for x, y in dataset]
        assert all(np.array_equal(x[:, 1:], y[:, :-1]) for x, y in batches)  # targets = inputs shifted by one
        windows = [tuple(np.concatenate([x[r], y[r, -1:]])) for x, y in batches for r in range(batch)]
        orders.append([starts[w] for w in windows])  # KeyError if a window is not a real one
    per_epoch = num_shuffled_batches(prepared.num_train, batch, seq, stride) * batch
    assert len(orders[0]) == per_epoch and len(set(orders[0])) == per_epoch  # each window at most once
    assert per_epoch > len(starts) - batch  # ... and all but the last partial batch are there
    assert orders[0] != orders[1] and orders[0] != sorted(orders[0])  # shuffled, and anew each epoch


def test_too_short_text_is_a_clear_error(prepared):
    with pytest.raises(ChargenError, match="fewer than one batch"):
        stateful_dataset(prepared.val_path, prepared.num_val, prepared.vocab.id_dtype, 64, 200, "validation")
    with pytest.raises(ChargenError, match="fewer windows"):
        shuffled_dataset(prepared.val_path, 50, prepared.vocab.id_dtype, 64, 40, 40)

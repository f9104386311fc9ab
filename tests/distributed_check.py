"""Run in a subprocess by test_distribute.py: two logical CPUs, MirroredStrategy vs one device, same global batches.

Prints one JSON line with what the test asserts on. Logical devices must be configured before
TensorFlow initialises its devices, which the rest of the suite has already done in-process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def stream_check(model_dir: Path, config) -> dict:
    """Replica r's batches, rows and steps, compared with the id file: each row continues itself."""
    import tensorflow as tf

    from keras_chargen.corpus import FileSource, prepare_corpus
    from keras_chargen.distribute import distribute_rows, make_strategy
    from keras_chargen.training import datasets

    strategy = make_strategy("mirrored")
    corpus = prepare_corpus(FileSource((Path(sys.argv[2]),)), model_dir / "data", config.val_fraction)
    train_ds, _, steps = datasets(config, corpus)
    ids = np.fromfile(corpus.train_path, dtype=corpus.vocab.id_dtype).astype(np.int64)
    per_replica = config.batch_size // strategy.num_replicas_in_sync
    rows: dict[tuple[int, int], list[np.ndarray]] = {}
    iterator = iter(distribute_rows(strategy, lambda: train_ds, config.batch_size))
    for _ in range(steps):
        x, y = next(iterator)
        for replica, (xr, yr) in enumerate(
            zip(strategy.experimental_local_results(x), strategy.experimental_local_results(y))
        ):
            assert xr.shape == (per_replica, config.seq_len) and tf.reduce_all(xr[:, 1:] == yr[:, :-1])
            for i in range(per_replica):
                rows.setdefault((replica, i), []).append(xr.numpy()[i])
    length = steps * config.seq_len
    contiguous = []
    for (replica, i), chunks in sorted(rows.items()):
        stream = np.concatenate(chunks)  # this replica's row i over the whole epoch
        start = (replica * per_replica + i) * length
        contiguous.append(bool(np.array_equal(stream, ids[start : start + length])))
    return {
        "replicas": strategy.num_replicas_in_sync,
        "steps": steps,
        "contiguous": contiguous,
        "rows_per_replica": per_replica,
    }


def main() -> None:
    out, corpus_path = Path(sys.argv[1]), Path(sys.argv[2])
    from keras_chargen.distribute import configure_logical_cpus

    configure_logical_cpus(2)
    from keras_chargen import ChargenConfig, FileSource, train
    from keras_chargen.saving import load_model

    base = dict(
        units=32,
        num_layers=1,
        embedding_dim=8,
        seq_len=24,
        batch_size=8,
        epochs=1,
        patience=0,
        save_every=1000,
        learning_rate=5e-3,
        dropout=0.0,
        clipnorm=0.05,
        val_fraction=0.1,
    )
    result = {}
    for layout in ("shuffled", "stateful"):
        runs = {}
        for strategy in ("default", "mirrored"):
            config = ChargenConfig(**base, layout=layout, strategy=strategy, logical_cpus=2)
            model_dir = out / f"{layout}-{strategy}"
            history = train(config, FileSource((corpus_path,)), model_dir, verbose=0, sample_every_epoch=False).history
            weights = load_model(model_dir)[2].get_weights()
            states = np.load(model_dir / "backup" / "rnn_states.npz") if layout == "stateful" else None
            runs[strategy] = (history, weights, states)
        (h1, w1, s1), (h2, w2, s2) = runs["default"], runs["mirrored"]
        result[layout] = {
            "loss": [h1["loss"][0], h2["loss"][0]],
            "val_loss": [h1["val_loss"][0], h2["val_loss"][0]],
            "max_weight_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(w1, w2)),
            "max_weight": max(float(np.max(np.abs(a))) for a in w1),
        }
        if s1 is not None:
            result[layout]["max_state_diff"] = max(float(np.max(np.abs(s1[k] - s2[k]))) for k in s1.files)
            result[layout]["state_shape"] = list(s2["arr_0"].shape)
    result["streams"] = stream_check(out / "streams", ChargenConfig(**base, layout="stateful"))
    from keras_chargen import ChargenError

    try:  # 7 streams do not split over 2 replicas
        train(
            ChargenConfig(**{**base, "batch_size": 7}, strategy="mirrored"),
            FileSource((corpus_path,)),
            out / "odd",
            verbose=0,
        )
    except ChargenError as err:
        result["odd_batch_error"] = str(err)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

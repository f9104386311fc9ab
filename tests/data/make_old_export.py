"""Writes tests/data/export_4edd89f.tar.gz: a tiny SavedModel exported by main at commit 4edd89f (before issue 19).

The serving tests check that the current server still serves such a version (`:predict`) and that
its `:stream` answers a 400 naming the re-export. Run with that commit's package on the path:

    git archive 4edd89f keras_chargen | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old python tests/data/make_old_export.py
"""

import tarfile
import tempfile
from pathlib import Path

import numpy as np

from keras_chargen import CharGenerator, ChargenConfig, Vocabulary, build_model
from keras_chargen.export import export_savedmodel

OUT = Path(__file__).with_name("export_4edd89f.tar.gz")

vocab = Vocabulary(list("\nab c.:ANB"))
model = build_model(ChargenConfig(units=8, num_layers=1, embedding_dim=4), vocab.size)
rng = np.random.default_rng(0)
model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
with tempfile.TemporaryDirectory() as tmp:
    vocab_file = Path(tmp) / "vocab.json"
    vocab.save(vocab_file)
    export_savedmodel(CharGenerator(model, vocab.tokens), Path(tmp) / "1", vocab_file)
    with tarfile.open(OUT, "w:gz", compresslevel=9) as archive:
        archive.add(Path(tmp) / "1", arcname="1")
print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")

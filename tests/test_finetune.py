import json

import numpy as np
import pytest
from conftest import CORPUS, tiny_config
from test_cli import assert_one_line_error, run_cli

from keras_chargen import ChargenConfig, ChargenError, FileSource, Vocabulary, load_model, train
from keras_chargen.finetune import grow_weights, inherit_config
from keras_chargen.model import build_model


def new_text(tmp_path):
    """The test corpus in another spelling: 'e' → 'ë' and '?' → '‽' (two characters the source model lacks)."""
    text = CORPUS.read_text(encoding="utf-8")[:30_000].replace("e", "ë").replace("?", "‽")
    path = tmp_path / "new.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_fine_tuning_keeps_every_old_id_appends_the_new_ones_and_beats_scratch(trained_dir, tmp_path):
    _, old_vocab, old_model = load_model(trained_dir)
    text = new_text(tmp_path)
    config = tiny_config(epochs=1, init_from=str(trained_dir))
    tuned = train(config, FileSource((text,)), tmp_path / "tuned", verbose=0, sample_every_epoch=False)
    saved_config, vocab, model = load_model(tmp_path / "tuned")
    assert saved_config.init_from == str(trained_dir)  # the directory records where it came from
    assert vocab.tokens[: len(old_vocab.tokens)] == old_vocab.tokens  # every old id unchanged
    assert vocab.tokens[len(old_vocab.tokens) :] == ["ë", "‽"]  # new ones appended, in code-point order
    assert vocab.encode("ë‽").tolist() == [old_vocab.size, old_vocab.size + 1]
    assert model.get_layer("embedding").input_dim == old_vocab.size + 2
    scratch = train(
        tiny_config(epochs=1), FileSource((text,)), tmp_path / "scratch", verbose=0, sample_every_epoch=False
    )
    # the same number of steps on the new text: the fine-tuned model is far ahead
    assert tuned.history["val_loss"][0] < scratch.history["val_loss"][0] - 0.3, (tuned.history, scratch.history)


def test_grown_rows_are_the_mean_and_the_old_predictions_are_kept():
    config = tiny_config(units=8, embedding_dim=4)
    source, target = build_model(config, 5), build_model(config, 7)
    source.set_weights(
        [np.random.default_rng(i).normal(size=w.shape).astype("float32") for i, w in enumerate(source.weights)]
    )
    assert grow_weights(source, target) == 2
    table = target.get_layer("embedding").get_weights()[0]
    np.testing.assert_array_equal(table[:5], source.get_layer("embedding").get_weights()[0])
    np.testing.assert_allclose(table[5], table[:5].mean(0), rtol=1e-6)
    kernel, bias = target.get_layer("logits").get_weights()
    old_kernel, old_bias = source.get_layer("logits").get_weights()
    np.testing.assert_array_equal(kernel[:, :5], old_kernel)
    np.testing.assert_allclose(kernel[:, 6], old_kernel.mean(1), rtol=1e-6)
    assert bias[5] == bias[6] == old_bias[1:].min()
    ids = np.array([[1, 2, 3, 4]], np.int32)  # old ids: the old logits are unchanged
    np.testing.assert_allclose(target(ids).numpy()[..., :5], source(ids).numpy(), rtol=1e-5, atol=1e-6)


def test_word_level_fine_tuning_appends_new_words(tmp_path):
    config = tiny_config(level="word", epochs=1, seq_len=8)
    train(config, FileSource((CORPUS,)), tmp_path / "words", verbose=0, sample_every_epoch=False)
    old = Vocabulary.load(tmp_path / "words" / "vocab.json")
    text = tmp_path / "new.txt"
    text.write_text(CORPUS.read_text(encoding="utf-8").replace("river", "lantern") * 2, encoding="utf-8")
    tuned = inherit_config(tmp_path / "words", {"epochs": 1, "seq_len": 8, "batch_size": 8, "patience": 0})
    assert tuned.level == "word" and tuned.units == 48
    train(tuned, FileSource((text,)), tmp_path / "tuned", verbose=0, sample_every_epoch=False)
    vocab = Vocabulary.load(tmp_path / "tuned" / "vocab.json")
    assert vocab.tokens[: len(old.tokens)] == old.tokens and vocab.tokens[len(old.tokens) :] == ["lantern"]


def test_conflicting_architecture_is_one_line_error(trained_dir, tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "train", "--text", CORPUS, "--out", tmp_path / "t", "--init-from", trained_dir, "--units", "64"
    )
    assert_one_line_error(code, err, "--units 64 (it has 48)")
    assert "--init-from" in err and not (tmp_path / "t").exists()
    with pytest.raises(ChargenError, match=r"--layers 2 \(it has 1\)"):
        train(tiny_config(num_layers=2, init_from=str(trained_dir)), FileSource((CORPUS,)), tmp_path / "u", verbose=0)
    with pytest.raises(ChargenError, match="model directory not found"):
        inherit_config(tmp_path / "missing", {})


def test_cli_fine_tuning_inherits_the_architecture(trained_dir, tmp_path, capsys):
    text = new_text(tmp_path)
    out = tmp_path / "cli"
    code, stdout, err = run_cli(
        capsys, "train", "--text", text, "--out", out, "--init-from", trained_dir, "--epochs", "1",
        "--seq-len", "32", "--batch-size", "8", "--verbose", "2", "--no-samples", "--sample-length", "0",
    )  # fmt: skip
    assert code == 0, err
    saved = json.loads((out / "config.json").read_text())
    assert (saved["units"], saved["num_layers"], saved["embedding_dim"]) == (48, 1, 16)  # from the source
    assert saved["init_from"] == str(trained_dir) and saved["epochs"] == 1
    assert "2 new tokens appended" in stdout
    assert ChargenConfig.load(out / "config.json").init_from == str(trained_dir)

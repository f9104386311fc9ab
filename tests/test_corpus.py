import numpy as np
import pytest
from conftest import CORPUS, SHAKESPEARE, needs_shakespeare

from keras_chargen import ChargenError, EmbeddedSource, FileSource, TfdsSource, make_source, prepare_corpus
from keras_chargen import corpus as corpus_module
from keras_chargen.corpus import resolve_text_paths


def test_split_is_contiguous_and_vocab_from_training_part_only(tmp_path):
    text = "abcabcabc" * 10 + "XYZ" * 4  # 102 chars; last 10 % (10 chars) hold X/Y/Z only ... plus "c" at 92
    (tmp_path / "t.txt").write_text(text)
    prepared = prepare_corpus(FileSource((tmp_path / "t.txt",)), tmp_path / "data", 0.1)
    assert (prepared.num_train, prepared.num_val) == (92, 10)
    vocab = prepared.vocab
    assert vocab.decode(prepared.read_ids("train")) == text[:92]
    assert "Z" not in vocab.tokens  # validation-only characters are not in the vocabulary
    val = np.asarray(prepared.read_ids("val"))
    assert (val == 0).sum() == sum(1 for c in text[92:] if c not in vocab.tokens)


def test_streaming_handles_multibyte_chars_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_module, "CHUNK_BYTES", 7)  # split UTF-8 sequences between reads
    text = "日本語のテキスト—café naïve\n" * 20
    (tmp_path / "u.txt").write_text(text, encoding="utf-8")
    prepared = prepare_corpus(FileSource((tmp_path / "u.txt",)), tmp_path / "d", 0.1)
    assert prepared.vocab.decode(prepared.read_ids("train")) == text[: prepared.num_train]
    assert prepared.num_train + prepared.num_val == len(text)


def test_several_files_and_directories_are_concatenated_in_order(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.txt").write_text("bbb")
    (tmp_path / "d" / "a.txt").write_text("aaa")
    (tmp_path / "d" / "skip.md").write_text("not text")
    (tmp_path / "c.txt").write_text("ccc")
    paths = resolve_text_paths([tmp_path / "c.txt", tmp_path / "d"])
    assert [p.name for p in paths] == ["c.txt", "a.txt", "b.txt"]
    assert "".join(FileSource(tuple(paths)).chunks()) == "cccaaabbb"


def test_bad_inputs_have_clear_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ChargenError, match="corpus is empty"):
        prepare_corpus(FileSource((tmp_path / "empty.txt",)), tmp_path / "x", 0.1)
    with pytest.raises(ChargenError, match="no such file or directory"):
        resolve_text_paths([tmp_path / "missing.txt"])
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ChargenError, match="no \\*.txt files"):
        resolve_text_paths([tmp_path / "empty_dir"])
    (tmp_path / "latin1.txt").write_bytes("ok ok caf\xe9 ok".encode("latin-1"))
    with pytest.raises(ChargenError, match=r"latin1.txt: invalid UTF-8 at byte 9 .*--encoding-errors replace"):
        list(FileSource((tmp_path / "latin1.txt",)).chunks())
    assert "".join(FileSource((tmp_path / "latin1.txt",), "replace").chunks()) == "ok ok caf\ufffd ok"
    with pytest.raises(ChargenError, match=r"one corpus at most: --text PATH \[PATH...\] or --tfds NAME"):
        make_source([CORPUS], "tiny_shakespeare")


def test_no_source_is_the_embedded_tiny_shakespeare():
    source = make_source(None, None)
    assert source == EmbeddedSource() and source.describe() == "embedded:tiny-shakespeare"
    assert "".join(source.chunks()) == SHAKESPEARE.read_text(encoding="utf-8")


def test_tfds_mock_data_generic_text_dataset(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    # mock_data fakes TFDS' download, not our reachability probe of the download host (this machine is offline)
    monkeypatch.setattr(corpus_module, "check_download_hosts", lambda name, urls: None)
    with tfds.testing.mock_data(num_examples=3):
        source = TfdsSource("tiny_shakespeare", split="train")
        chunks = list(source.chunks())
        assert len(chunks) == 3 and all(isinstance(c, str) and c for c in chunks)
        assert chunks[1].startswith("\n")  # examples are joined by newlines
        with pytest.raises(ChargenError, match="no feature 'body'"):
            list(TfdsSource("tiny_shakespeare", split="train", feature="body").chunks())


@needs_shakespeare
def test_tfds_tiny_shakespeare_prepared_offline_from_manual_dir(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "input.txt").write_bytes(SHAKESPEARE.read_bytes())
    source = TfdsSource("tiny_shakespeare", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
    text = "".join(source.chunks())
    # train + validation + test in order, joined by newlines: the original text plus two separators
    assert len(text) == len(SHAKESPEARE.read_text()) + 2
    assert text.startswith("First Citizen:")
    train_only = "".join(TfdsSource("tiny_shakespeare", split="train", data_dir=str(tmp_path / "tfds")).chunks())
    assert len(train_only) == 1_003_854


def test_corpus_file_in_tests_is_present():
    assert CORPUS.stat().st_size > 50_000

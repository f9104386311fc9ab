import numpy as np
import pytest

from keras_chargen import ChargenError, Vocabulary


def test_code_points_not_bytes_and_round_trip():
    vocab = Vocabulary(list("aé日\n"))
    assert vocab.size == 5  # 4 characters + OOV
    ids = vocab.encode("é日a\n")
    assert ids.tolist() == [3, 4, 2, 1]  # sorted by code point, ids from 1
    assert vocab.decode(ids) == "é日a\n"


def test_unknown_characters_map_to_oov_and_are_reported():
    vocab = Vocabulary(list("ab"))
    assert vocab.encode("axb").tolist() == [1, 0, 2]
    assert vocab.unknown_tokens("axbyx") == ["x", "y"]
    assert vocab.decode([0]) == "\ufffd"


def test_save_load_and_corrupt_file(tmp_path):
    vocab = Vocabulary(list("helö") + ["\n", " ", '"', "\\"])
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == vocab
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ChargenError, match="corrupt vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(ChargenError, match="missing vocabulary"):
        Vocabulary.load(tmp_path / "none.json")


def test_from_counts_and_id_dtype():
    counts = np.zeros(0x110000, dtype=np.int64)
    counts[[ord("z"), ord("a")]] = [3, 1]
    vocab = Vocabulary.from_counts(counts)
    assert vocab.tokens == ["a", "z"]
    assert vocab.id_dtype == np.uint16

"""`keras_chargen.client` against a real `keras-chargen serve` process on 127.0.0.1."""

from __future__ import annotations

import pytest
import tensorflow as tf
from serving_support import MODEL, free_port

from keras_chargen.client import ChargenClient, ServingError, generate
from keras_chargen.errors import ChargenError


@pytest.fixture(scope="module")
def client(server):
    return ChargenClient(MODEL, server.url)


def test_generate_matches_the_savedmodel_for_a_seed(client, base):
    function = tf.saved_model.load(str(base / "2")).signatures["serving_default"]
    expected = function(
        prompt=tf.constant(["ROMEO:"]),
        temperature=tf.constant([0.6]),
        max_new_chars=tf.constant([80]),
        seed=tf.constant([4]),
        top_k=tf.constant([0]),
        top_p=tf.constant([1.0]),
        repetition_penalty=tf.constant([1.0]),
        stop=tf.constant([""]),
    )["generated"]
    assert client.generate("ROMEO:", 0.6, 80, seed=4) == expected.numpy()[0].decode("utf-8")


def test_generate_with_sampling_settings_and_several_temperatures(client, base):
    function = tf.saved_model.load(str(base / "2")).signatures["serving_default"]
    expected = function(
        prompt=tf.constant(["ROMEO:"] * 3),
        temperature=tf.constant([0.0, 0.8, 1.2]),
        max_new_chars=tf.constant([80]),
        seed=tf.constant([4]),
        top_k=tf.constant([5]),
        top_p=tf.constant([0.9]),
        repetition_penalty=tf.constant([1.3]),
        stop=tf.constant(["e"]),
    )["generated"]
    texts = client.generate("ROMEO:", [0.0, 0.8, 1.2], 80, seed=4, top_k=5, top_p=0.9, repetition_penalty=1.3, stop="e")
    assert texts == [t.decode("utf-8") for t in expected.numpy()]
    assert all(t.endswith("e") or len(t) == 80 for t in texts)


def test_generate_takes_lists_and_the_one_call_form_works(client, server):
    texts = client.generate(["ROMEO:", "ANNA:"], temperature=0.0, length=30)
    assert isinstance(texts, list) and [len(t) for t in texts] == [30, 30]
    assert generate("ROMEO:", 0.0, 30, model=MODEL, url=server.url) == texts[0]
    assert ChargenClient(MODEL, server.url, version=1).generate("ROMEO:", 0.0, 30) == texts[0]


def test_stream_pieces_join_to_the_greedy_text(client):
    pieces = list(client.stream("ANNA:", temperature=0.0, length=40))
    assert len(pieces) > 1 and "".join(pieces) == client.generate("ANNA:", 0.0, 40)


def test_stream_takes_every_setting_and_joins_to_the_generate_text(client):
    settings = dict(top_k=5, top_p=0.9, repetition_penalty=1.2, stop=".")
    streamed = "".join(client.stream("ANNA:", 0.9, 80, seed=3, **settings))
    assert streamed == client.generate("ANNA:", 0.9, 80, seed=3, **settings)


def test_status_metadata_and_raw_predict(client):
    assert [s["version"] for s in client.status()["model_version_status"]] == ["2", "1"]
    assert client.metadata()["model_spec"]["version"] == "2"
    assert client.predict({"prompt": ["ab"]}, signature_name="encode")["lengths"] == [2]


def test_server_errors_become_serving_errors(client, server):
    with pytest.raises(ServingError, match="above this server's cap of 20000") as info:
        client.generate("A", 0.5, 20001)
    assert info.value.status == 400
    with pytest.raises(ServingError, match=r"Servable not found for request: Latest\(nope\)") as info:
        ChargenClient("nope", server.url).generate("A", 0.5, 5)
    assert info.value.status == 404
    with pytest.raises(ServingError, match="cap is 500") as info:
        list(client.stream("x" * 501, 0.5, 5))
    assert info.value.status == 400


def test_unreachable_server_and_bad_arguments_fail_before_any_output():
    with pytest.raises(ServingError, match="cannot reach") as info:
        ChargenClient(MODEL, f"http://127.0.0.1:{free_port()}", timeout=5).generate("A", 0.5, 5)
    assert info.value.status is None
    client = ChargenClient(MODEL, "http://127.0.0.1:1")
    for args, fragment in [
        (("A", -1.0, 5), "temperature"),
        (("A", float("nan"), 5), "temperature"),
        (("A", 0.5, 2.5), "length"),
        (([], 0.5, 5), "prompt"),
        ((5, 0.5, 5), "prompt"),
    ]:
        with pytest.raises(ChargenError, match=fragment):
            client.generate(*args)
    with pytest.raises(ChargenError, match="seed"):
        client.generate("A", 0.5, 5, seed=-3)
    for kwargs, fragment in [
        (dict(top_k=0), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.2), "top_p"),
        (dict(repetition_penalty=float("nan")), "repetition_penalty"),
        (dict(stop=""), "stop"),
        (dict(temperature=[0.5, 0.5, 0.5], prompt=["A", "B"]), "3 temperatures for 2 prompts"),
    ]:
        with pytest.raises(ChargenError, match=fragment):
            client.generate(**({"prompt": "A", "temperature": 0.5, "length": 5} | kwargs))
    with pytest.raises(ChargenError, match="model must be a name"):
        ChargenClient("a/b")

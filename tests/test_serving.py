"""The TF-Serving-compatible server: protocol pieces in-process, then real HTTP against `keras-chargen serve`."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import shutil
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf
from serving_support import MODEL, SERVER_FLAGS, ServerProcess, generate_body, request, sse_events

from keras_chargen.cli import main
from keras_chargen.client import ChargenClient
from keras_chargen.errors import ChargenError
from keras_chargen.serving import ModelRepository, RequestError, ServingConfig
from keras_chargen.serving.batching import Dispatcher, merge_key
from keras_chargen.serving.errors import from_tf_error
from keras_chargen.serving.protocol import (
    COLUMNAR,
    ROW,
    check_caps,
    decode_inputs,
    defaults_for,
    encode_outputs,
    parse_body,
)

GENERATE_SPECS = {
    "max_new_chars": tf.TensorSpec([None], tf.int32),
    "prompt": tf.TensorSpec([None], tf.string),
    "seed": tf.TensorSpec([None], tf.int32),
    "temperature": tf.TensorSpec([None], tf.float32),
}


@pytest.fixture(scope="module")
def reference(base):
    """serving_default of version 2, loaded in this process: what the server must return."""
    function = tf.saved_model.load(str(base / "2")).signatures["serving_default"]

    def generate(prompts, temperature, length, seed, top_k=0, top_p=1.0, repetition_penalty=1.0, stop=""):
        rows = len(prompts)
        out = function(
            prompt=tf.constant(prompts),
            temperature=tf.fill([rows], float(temperature)),
            max_new_chars=tf.fill([rows], length),
            seed=tf.constant(seed if isinstance(seed, list) else [seed] * rows, tf.int32),
            top_k=tf.fill([rows], top_k),
            top_p=tf.fill([rows], float(top_p)),
            repetition_penalty=tf.fill([rows], float(repetition_penalty)),
            stop=tf.fill([rows], stop),
        )
        return [s.decode("utf-8") for s in out["generated"].numpy()]

    return generate


# --- protocol, in-process ---------------------------------------------------------------------------


def test_row_and_columnar_requests_decode_to_the_same_tensors():
    rows = {
        "instances": [
            {"prompt": "ab", "temperature": 0.5, "max_new_chars": 3, "seed": 1},
            {"prompt": {"b64": "w6k="}, "temperature": 1, "max_new_chars": 4, "seed": 1},
        ]
    }
    columns = {"inputs": {"prompt": ["ab", "é"], "temperature": [0.5, 1.0], "max_new_chars": [3, 4], "seed": [1, 1]}}
    fmt_r, from_rows = decode_inputs(rows, GENERATE_SPECS)
    fmt_c, from_columns = decode_inputs(columns, GENERATE_SPECS)
    assert (fmt_r, fmt_c) == (ROW, COLUMNAR)
    for name in GENERATE_SPECS:
        np.testing.assert_array_equal(from_rows[name], from_columns[name])
    assert from_rows["prompt"].tolist() == [b"ab", "é".encode()]
    assert from_rows["temperature"].dtype == np.float32 and from_rows["max_new_chars"].dtype == np.int32


def test_single_input_signatures_take_plain_lists():
    specs = {"ids": tf.TensorSpec([None, None], tf.int32)}
    assert decode_inputs({"instances": [[1, 2], [3, 4]]}, specs)[1]["ids"].tolist() == [[1, 2], [3, 4]]
    assert decode_inputs({"inputs": [[1, 2, 3]]}, specs)[1]["ids"].tolist() == [[1, 2, 3]]
    with pytest.raises(RequestError, match="same shape"):
        decode_inputs({"instances": [[1, 2], [3]]}, specs)


@pytest.mark.parametrize(
    "value, fragment",
    [
        (True, "not of expected type: int32"),
        (1.5, "not of expected type: int32"),
        ("3", "Type: String"),
        (2**31, "out of range for int32"),
        ([3], "must have shape []; got [1]"),
        (None, "Type: Null"),
    ],
)
def test_integer_inputs_are_strict(value, fragment):
    body = {"instances": [{"prompt": "a", "temperature": 1.0, "max_new_chars": value, "seed": 1}]}
    with pytest.raises(RequestError, match=fragment) as info:
        decode_inputs(body, GENERATE_SPECS)
    assert info.value.status == 400 and "key: max_new_chars" in info.value.message


def test_outputs_are_shaped_as_tf_serving_shapes_them():
    outputs = {"text": np.array([b"ab", b"\xff"], dtype=object), "score": np.array([0.1, np.nan], np.float32)}
    rows = encode_outputs(outputs, ROW)
    assert rows == {
        "predictions": [
            {"score": 0.1, "text": "ab"},
            {"score": rows["predictions"][1]["score"], "text": {"b64": "/w=="}},
        ]
    }
    assert math.isnan(rows["predictions"][1]["score"])
    assert encode_outputs(outputs, COLUMNAR)["outputs"]["text"] == ["ab", {"b64": "/w=="}]
    assert encode_outputs({"only": np.array([[1, 2]], np.int32)}, COLUMNAR) == {"outputs": [[1, 2]]}
    assert encode_outputs({"only": np.array([[1, 2]], np.int32)}, ROW) == {"predictions": [[1, 2]]}
    assert encode_outputs({"raw_bytes": np.array([b"ab"], dtype=object)}, ROW) == {"predictions": [{"b64": "YWI="}]}


def test_sampling_inputs_may_be_left_out_and_get_their_off_values():
    specs = {
        **GENERATE_SPECS,
        "top_k": tf.TensorSpec([None], tf.int32),
        "top_p": tf.TensorSpec([None], tf.float32),
        "repetition_penalty": tf.TensorSpec([None], tf.float32),
        "stop": tf.TensorSpec([None], tf.string),
    }
    defaults = defaults_for("serving_default", specs)
    assert defaults == {"top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0, "stop": ""}
    assert defaults_for("serving_default", GENERATE_SPECS) == {}  # a version exported before these inputs
    assert defaults_for("encode", specs) == {}
    rows = {
        "instances": [
            {"prompt": "a", "temperature": 1.0, "max_new_chars": 3, "seed": 1, "top_k": 5},
            {"prompt": "b", "temperature": 1.0, "max_new_chars": 3, "seed": 1, "stop": "\n"},
        ]
    }
    _, arrays = decode_inputs(rows, specs, defaults)
    assert arrays["top_k"].tolist() == [5, 0] and arrays["stop"].tolist() == [b"", b"\n"]
    assert arrays["top_p"].tolist() == [1.0, 1.0] and arrays["repetition_penalty"].dtype == np.float32
    columns = {
        "inputs": {"prompt": ["a", "b"], "temperature": [1.0], "max_new_chars": [3], "seed": [1], "top_p": [0.9, 0.5]}
    }
    _, arrays = decode_inputs(columns, specs, defaults)
    assert arrays["top_p"].tolist() == [np.float32(0.9), 0.5] and arrays["top_k"].tolist() == [0]  # broadcast
    with pytest.raises(RequestError, match="missing input seed .*optional: top_k, top_p, repetition_penalty, stop"):
        decode_inputs({"inputs": {"prompt": ["a"], "temperature": [1.0], "max_new_chars": [3]}}, specs, defaults)


def test_caps_are_checked_before_the_model_runs():
    config = ServingConfig(max_prompt_chars=3, max_new_chars=10, max_batch=2)
    ok = decode_inputs(
        {"inputs": {"prompt": ["éé"], "temperature": [0.0], "max_new_chars": [10], "seed": [1]}}, GENERATE_SPECS
    )[1]
    check_caps(ok, config)  # 2 characters (4 bytes) is within a 3-character cap
    for change, fragment in [
        ({"prompt": np.array([b"abcd"], object)}, "4 characters"),
        ({"max_new_chars": np.array([11], np.int32)}, "cap of 10"),
        ({"temperature": np.array([np.inf], np.float32)}, "finite"),
        ({"top_k": np.array([3, -2], np.int32)}, r"top_k must be an integer >= 0 \(0 = off\); got -2"),
        ({"top_p": np.array([np.nan], np.float32)}, r"top_p must be a number in \(0, 1\]"),
        ({"repetition_penalty": np.array([-1], np.float32)}, "repetition_penalty must be"),
        ({"prompt": np.array([b"a"] * 3, object)}, "3 rows"),
    ]:
        with pytest.raises(RequestError, match=fragment):
            check_caps({**ok, **change}, config)


def test_parse_body_errors():
    for body, fragment in [
        (b"", "empty"),
        (b"{", "JSON Parse error"),
        (b"[1]", "Is not object"),
        (b"\xff", "not UTF-8"),
        (b"[" * 100_000, "JSON Parse error"),
    ]:
        with pytest.raises(RequestError, match=fragment):
            parse_body(body)


def test_tf_errors_keep_their_message_without_the_graph_trace():
    err = tf.errors.InvalidArgumentError(
        None,
        None,
        "Graph execution error:\n\nDetected at node x\nassertion "
        "failed: [temperature must be >= 0] [Condition x >= y]\n\t [[{{node a}}]]",
    )
    assert (from_tf_error(err).status, from_tf_error(err).message) == (400, "temperature must be >= 0")
    err = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating\n\t [[{{node b}}]] [Op:Foo]")
    assert (from_tf_error(err).status, from_tf_error(err).message) == (429, "OOM when allocating")


def test_config_validation():
    with pytest.raises(ChargenError, match="workers must be a positive integer"):
        ServingConfig(workers=0)
    with pytest.raises(ChargenError, match="the exported model's own cap"):
        ServingConfig(max_new_chars=100_001)


# --- batching, in-process ---------------------------------------------------------------------------


class FakeServable:
    """Upper-cases prompts; blocks on `gate` (or until cancelled) so that requests pile up behind the first call."""

    version = 1

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls: list[list[str]] = []
        self.cancelled: list[list[str]] = []

    def run(self, signature, inputs, canceller=None):
        prompts = [p.decode() for p in inputs["prompt"]]
        deadline = time.monotonic() + 10
        while not self.gate.wait(0.01) and time.monotonic() < deadline:
            if canceller is not None and canceller.cancelled:
                self.cancelled.append(prompts)
                raise RequestError(499, "the request was cancelled")
        self.calls.append(prompts)
        if "bad" in prompts:
            raise RequestError(400, "bad prompt")
        return {"generated": np.array([p.upper().encode() for p in prompts], dtype=object)}


def generate_inputs(prompt, seed=-1, length=20):
    return {
        "prompt": np.array([prompt.encode()], object),
        "temperature": np.array([1.0], np.float32),
        "max_new_chars": np.array([length], np.int32),
        "seed": np.array([seed], np.int64),
    }


def test_concurrent_random_seed_requests_are_merged_and_seeded_ones_are_not():
    async def scenario(fake):
        dispatcher = Dispatcher(ServingConfig(workers=1))
        dispatcher.start()
        first = asyncio.ensure_future(dispatcher.run(fake, "serving_default", generate_inputs("first")))
        await asyncio.sleep(0.05)  # `first` holds the only worker
        waiting = [dispatcher.run(fake, "serving_default", generate_inputs(f"p{i}")) for i in range(5)]
        waiting += [
            dispatcher.run(fake, "serving_default", generate_inputs("seeded", seed=7)),
            dispatcher.run(fake, "serving_default", generate_inputs("long", length=1000)),
        ]
        tasks = [asyncio.ensure_future(w) for w in waiting]
        await asyncio.sleep(0.05)
        fake.gate.set()
        results = await asyncio.gather(first, *tasks)
        await dispatcher.close()
        return [r["generated"][0].decode() for r in results], dispatcher

    fake = FakeServable()
    results, dispatcher = asyncio.run(scenario(fake))
    assert results == ["FIRST", "P0", "P1", "P2", "P3", "P4", "SEEDED", "LONG"]
    assert fake.calls == [["first"], ["p0", "p1", "p2", "p3", "p4"], ["seeded"], ["long"]]
    assert (dispatcher.calls, dispatcher.requests) == (4, 8)


def test_a_bad_row_in_a_merged_call_fails_only_its_own_request():
    async def scenario(fake):
        dispatcher = Dispatcher(ServingConfig(workers=1))
        dispatcher.start()
        blocker = asyncio.ensure_future(dispatcher.run(fake, "serving_default", generate_inputs("x")))
        await asyncio.sleep(0.05)
        tasks = [
            asyncio.ensure_future(dispatcher.run(fake, "serving_default", generate_inputs(p)))
            for p in ("ok1", "bad", "ok2")
        ]
        await asyncio.sleep(0.05)
        fake.gate.set()
        results = await asyncio.gather(blocker, *tasks, return_exceptions=True)
        await dispatcher.close()
        return results

    results = asyncio.run(scenario(FakeServable()))
    assert results[1]["generated"][0] == b"OK1" and results[3]["generated"][0] == b"OK2"
    assert isinstance(results[2], RequestError) and results[2].status == 400


def test_queue_cap_answers_503():
    async def scenario(fake):
        dispatcher = Dispatcher(ServingConfig(workers=1, max_queued_rows=3))
        dispatcher.start()
        running = asyncio.ensure_future(dispatcher.run(fake, "serving_default", generate_inputs("a", seed=1)))
        await asyncio.sleep(0.05)
        queued = [
            asyncio.ensure_future(dispatcher.run(fake, "serving_default", generate_inputs("b", seed=1)))
            for _ in range(3)
        ]
        await asyncio.sleep(0.01)
        with pytest.raises(RequestError, match="server busy") as info:
            await dispatcher.run(fake, "serving_default", generate_inputs("c", seed=1))
        fake.gate.set()
        await asyncio.gather(running, *queued)
        await dispatcher.close()
        return info.value.status

    assert asyncio.run(scenario(FakeServable())) == 503


def test_merge_key_buckets_lengths_and_skips_other_signatures():
    fake = FakeServable()
    names = ("max_new_chars", "prompt", "seed", "temperature")
    assert merge_key(fake, "serving_default", generate_inputs("a", length=100)) == (1, 128, names)
    assert merge_key(fake, "serving_default", generate_inputs("a", length=128)) == (1, 128, names)
    sampling = {
        "top_k": np.array([0], np.int32),
        "top_p": np.array([0.9, 1.0], np.float32),
        "repetition_penalty": np.array([1.0], np.float32),
        "stop": np.array([b"\n"], object),
    }
    two = {**generate_inputs("a"), "prompt": np.array([b"a", b"b"], object), **sampling}
    assert merge_key(fake, "serving_default", two) == (1, 32, tuple(sorted(two)))  # per-row settings merge
    assert merge_key(fake, "serving_default", {**two, "top_p": np.array([1.0] * 3, np.float32)}) is None
    assert merge_key(fake, "serving_default", {**two, "extra": np.array([1])}) is None
    assert merge_key(fake, "serving_default", generate_inputs("a", seed=0)) is None
    assert merge_key(fake, "step", generate_inputs("a")) is None


# --- the model base path ----------------------------------------------------------------------------


def test_repository_loads_numeric_versions_only_and_names_bad_paths(base, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(base / "1", other / "3")
    (other / "onnx" / "1").mkdir(parents=True)  # other formats live beside the versions
    (other / ".4.abc.tmp").mkdir()  # an interrupted export
    repo = ModelRepository.load(other)
    assert (repo.name, list(repo.versions), repo.latest) == ("other", [3], 3)
    assert repo.get("other", None).version == 3
    with pytest.raises(RequestError, match=r"Specific\(other, 1\)"):
        repo.get("other", 1)
    (tmp_path / "empty").mkdir()
    for path, fragment in [
        (tmp_path / "missing", "not found"),
        (tmp_path / "empty", "no version folders"),
        (other / "onnx", "1 has no saved_model.pb"),
        (other / "3", "is a SavedModel, not a base path"),
    ]:
        with pytest.raises(ChargenError, match=fragment):
            ModelRepository.load(path)


def test_cli_errors_are_one_line(base, tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"error: model base path not found: {tmp_path / 'missing'}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", str(base), "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot listen on 127.0.0.1:")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        grpc_port = str(taken.getsockname()[1])
        assert main(["serve", str(base), "--port", "0", "--grpc-port", grpc_port, "--log-level", "warning"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: cannot listen for gRPC on 127.0.0.1:{grpc_port}: the port is taken or the address is not local"
    )
    for flags, message in [
        (["--version-policy", "newest"], "error: unknown version policy 'newest'; use latest, latest:N, all or"),
        (["--allow-origin", "evil.example"], "error: --allow-origin takes origins such as http://localhost:3000"),
        (["--grpc-port", "70000"], "error: grpc port must be between 0 and 65535 (0: off); got 70000"),
        (["--poll-seconds", "-1"], "error: poll_seconds must be a number of seconds >= 0; got -1.0"),
        (["--header-timeout", "0"], "error: header_timeout must be a number of seconds > 0; got 0.0"),
    ]:
        assert main(["serve", str(base), *flags]) == 2
        assert capsys.readouterr().err.strip().startswith(message)


# --- REST API over HTTP -----------------------------------------------------------------------------


def test_status_lists_every_version(server):
    status, body, _ = request("GET", f"{server.url}/v1/models/{MODEL}")
    assert status == 200
    assert body == {
        "model_version_status": [
            {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            for v in ("2", "1")
        ]
    }
    status, body, _ = request("GET", f"{server.url}/v1/models/{MODEL}/versions/1")
    assert status == 200 and [s["version"] for s in body["model_version_status"]] == ["1"]


@pytest.mark.parametrize("path, version", [("", "2"), ("/versions/1", "1")])
def test_metadata_has_the_signature_defs(server, path, version):
    status, body, _ = request("GET", f"{server.url}/v1/models/{MODEL}{path}/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": MODEL, "signature_name": "", "version": version}
    defs = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "step", "encode", "decode"} <= set(defs)
    prompt = defs["serving_default"]["inputs"]["prompt"]
    assert prompt["dtype"] == "DT_STRING" and prompt["tensor_shape"]["dim"][0]["size"] == "-1"
    assert set(defs["serving_default"]["outputs"]) == {"text", "generated", "seed"}
    assert defs["serving_default"]["method_name"] == "tensorflow/serving/predict"


def test_predict_row_format_matches_the_savedmodel(server, reference):
    status, body, headers = request(
        "POST", f"{server.url}/v1/models/{MODEL}:predict", generate_body("ROMEO:", 0.7, 60, seed=5, rows=2)
    )
    assert status == 200 and headers["content-type"] == "application/json"
    expected = reference(["ROMEO:", "ROMEO:"], 0.7, 60, 5)
    assert body == {"predictions": [{"generated": g, "seed": 5, "text": "ROMEO:" + g} for g in expected]}
    assert all(len(g) == 60 for g in expected)


def test_predict_with_each_sampling_strategy_matches_the_savedmodel(server, reference):
    url = f"{server.url}/v1/models/{MODEL}:predict"
    for sampling in [
        dict(top_k=3),
        dict(top_p=0.7),
        dict(repetition_penalty=1.6),
        dict(stop="\n"),
        dict(top_k=8, top_p=0.9, repetition_penalty=1.2, stop="e"),
    ]:
        body = generate_body("ROMEO:", 1.1, 60, seed=7, rows=2)
        for row in body["instances"]:
            row.update(sampling)
        status, answer, _ = request("POST", url, body)
        assert status == 200, answer
        assert [p["generated"] for p in answer["predictions"]] == reference(["ROMEO:"] * 2, 1.1, 60, 7, **sampling)
    columnar = {
        "inputs": {
            "prompt": ["ROMEO:", "ANNA:"],
            "temperature": [0.0],
            "max_new_chars": [60],
            "seed": [0],
            "stop": ["\n", ""],
        }
    }  # per-row stop, the other inputs left out
    status, answer, _ = request("POST", url, columnar)
    assert status == 200
    greedy = reference(["ROMEO:", "ANNA:"], 0.0, 60, 0)
    assert answer["outputs"]["generated"] == [greedy[0][: greedy[0].index("\n") + 1], greedy[1]]


def test_predict_columnar_format_gives_the_same_tensors(server):
    url = f"{server.url}/v1/models/{MODEL}:predict"
    rows = request("POST", url, generate_body("ANNA:", 0.9, 30, seed=11, rows=3))[1]["predictions"]
    status, body, _ = request(
        "POST",
        url,
        {"inputs": {"prompt": ["ANNA:"] * 3, "temperature": [0.9] * 3, "max_new_chars": [30] * 3, "seed": [11] * 3}},
    )
    assert status == 200
    assert body["outputs"] == {
        "generated": [r["generated"] for r in rows],
        "seed": [11] * 3,
        "text": [r["text"] for r in rows],
    }


def test_columnar_values_broadcast_over_the_prompts(server, reference):
    status, body, _ = request(
        "POST",
        server.url + PREDICT,
        {"inputs": {"prompt": ["A", "B", "C"], "temperature": [0.9], "max_new_chars": [12], "seed": [4]}},
    )
    assert status == 200
    # the same values given once per row; one seed for several rows seeds row i with seed + i
    expected = reference(["A", "B", "C"], 0.9, 12, [4, 5, 6])
    assert body["outputs"] == {
        "generated": expected,
        "seed": [4, 5, 6],
        "text": [p + g for p, g in zip("ABC", expected)],
    }


def test_predict_by_version_and_by_signature(server, reference):
    status, body, _ = request(
        "POST",
        f"{server.url}/v1/models/{MODEL}/versions/1:predict",
        {"signature_name": "serving_default", **generate_body("A", 0.0, 25, seed=1)},
    )
    assert status == 200 and body["predictions"][0]["generated"] == reference(["A"], 0.0, 25, 1)[0]
    status, body, _ = request(
        "POST", f"{server.url}/v1/models/{MODEL}:predict", {"signature_name": "encode", "instances": ["ab", ""]}
    )
    assert status == 200 and [p["lengths"] for p in body["predictions"]] == [2, 1]  # "" primes on a newline
    ids = [p["ids"][: p["lengths"]] for p in body["predictions"]]
    status, body, _ = request(
        "POST", f"{server.url}/v1/models/{MODEL}:predict", {"signature_name": "decode", "inputs": [ids[0]]}
    )
    assert status == 200 and body == {"outputs": ["ab"]}


def _row(**change):
    return {"instances": [{"prompt": "ab", "temperature": 0.5, "max_new_chars": 5, "seed": 1, **change}]}


PREDICT = f"/v1/models/{MODEL}:predict"
STREAM = f"/v1/models/{MODEL}:stream"
BAD_REQUESTS = [
    # (id, method, path, body (JSON value or raw bytes), status, fragment of the error)
    ("malformed-json", "POST", PREDICT, b'{"instances": [', 400, "JSON Parse error"),
    ("empty-body", "POST", PREDICT, b"", 400, "The document is empty"),
    ("not-an-object", "POST", PREDICT, [1, 2], 400, "Is not object"),
    (
        "missing-instances-and-inputs",
        "POST",
        PREDICT,
        {"signature_name": "serving_default"},
        400,
        "Missing 'inputs' or 'instances' key",
    ),
    ("both-formats", "POST", PREDICT, {**_row(), "inputs": {}}, 400, "only one of 'inputs' or 'instances'"),
    ("instances-not-a-list", "POST", PREDICT, {"instances": {"prompt": "a"}}, 400, "to be a list"),
    ("empty-instances", "POST", PREDICT, {"instances": []}, 400, "No values in 'instances'"),
    ("temperature-string", "POST", PREDICT, _row(temperature="hot"), 400, "key: temperature"),
    ("length-float", "POST", PREDICT, _row(max_new_chars=2.5), 400, "key: max_new_chars"),
    ("prompt-number", "POST", PREDICT, _row(prompt=5), 400, "key: prompt"),
    ("seed-out-of-range", "POST", PREDICT, _row(seed=2**70), 400, "out of range for int32"),
    ("bad-base64", "POST", PREDICT, _row(prompt={"b64": "!!"}), 400, "not valid base64"),
    (
        "missing-input",
        "POST",
        PREDICT,
        {"instances": [{"prompt": "a", "temperature": 1.0, "seed": 1}]},
        400,
        "missing input max_new_chars",
    ),
    ("unknown-input", "POST", PREDICT, _row(top_q=5), 400, "unknown input 'top_q'"),
    ("negative-top-k", "POST", PREDICT, _row(top_k=-1), 400, "top_k must be an integer >= 0 (0 = off); got -1"),
    ("float-top-k", "POST", PREDICT, _row(top_k=2.5), 400, "key: top_k"),
    ("zero-top-p", "POST", PREDICT, _row(top_p=0), 400, "top_p must be a number in (0, 1] (1 = off); got 0"),
    ("top-p-above-1", "POST", PREDICT, _row(top_p=1.5), 400, "top_p must be a number in (0, 1]"),
    (
        "zero-penalty",
        "POST",
        PREDICT,
        _row(repetition_penalty=0),
        400,
        "repetition_penalty must be a finite number > 0 (1 = off); got 0",
    ),
    (
        "nan-penalty",
        "POST",
        PREDICT,
        b'{"inputs": {"prompt": ["a"], "temperature": [1.0], "max_new_chars": [3], '
        b'"seed": [1], "repetition_penalty": [NaN]}}',
        400,
        "repetition_penalty must be a finite number > 0",
    ),
    ("stop-number", "POST", PREDICT, _row(stop=3), 400, "key: stop"),
    ("stop-above-cap", "POST", PREDICT, _row(stop="\n" * 501), 400, "stop has 501 characters"),
    (
        "scalar-in-columnar",
        "POST",
        PREDICT,
        {"inputs": {"prompt": "a", "temperature": [1.0], "max_new_chars": [2], "seed": [1]}},
        400,
        "wrap it in a list",
    ),
    (
        "ragged-columnar",
        "POST",
        PREDICT,
        {"inputs": {"prompt": ["a", ["b"]], "temperature": [1.0], "max_new_chars": [2], "seed": [1]}},
        400,
        "same shape",
    ),
    ("negative-temperature", "POST", PREDICT, _row(temperature=-0.5), 400, "temperature must be a finite number"),
    (
        "nan-temperature",
        "POST",
        PREDICT,
        b'{"instances": [{"prompt": "a", "temperature": NaN, "max_new_chars": 3, "seed": 1}]}',
        400,
        "temperature must be a finite number >= 0; got nan",
    ),
    (
        "infinite-temperature",
        "POST",
        PREDICT,
        b'{"inputs": {"prompt": ["a"], "temperature": [Infinity], "max_new_chars": [3], "seed": [1]}}',
        400,
        "temperature must be a finite number >= 0; got inf",
    ),
    ("length-above-cap", "POST", PREDICT, _row(max_new_chars=20001), 400, "above this server's cap of 20000"),
    (
        "negative-length",
        "POST",
        PREDICT,
        _row(max_new_chars=-1),
        400,
        "max_new_chars must be an integer in 0..100000; got -1",
    ),
    ("prompt-above-cap", "POST", PREDICT, _row(prompt="a" * 501), 400, "501 characters; this server's cap is 500"),
    ("too-many-rows", "POST", PREDICT, generate_body(rows=17), 400, "this server's cap is 16 rows"),
    (
        "empty-seed-caught-in-graph",
        "POST",
        PREDICT,
        {"inputs": {"prompt": ["a"], "temperature": [1.0], "max_new_chars": [3], "seed": []}},
        400,
        "seed must have one value, or one per prompt",
    ),
    (
        "signature-name-not-string",
        "POST",
        PREDICT,
        {**_row(), "signature_name": 3},
        400,
        "'signature_name' key must be a string",
    ),
    (
        "unknown-signature",
        "POST",
        PREDICT,
        {**_row(), "signature_name": "nope"},
        400,
        'Serving signature name: "nope" not found in signature def',
    ),
    ("unknown-model", "POST", "/v1/models/nope:predict", _row(), 404, "Servable not found for request: Latest(nope)"),
    (
        "unknown-version",
        "POST",
        f"/v1/models/{MODEL}/versions/9:predict",
        _row(),
        404,
        f"Servable not found for request: Specific({MODEL}, 9)",
    ),
    (
        "non-numeric-version",
        "POST",
        f"/v1/models/{MODEL}/versions/x:predict",
        _row(),
        400,
        "Failed to convert version: x to numeric",
    ),
    (
        "version-superscript-two",
        "POST",
        f"/v1/models/{MODEL}/versions/%C2%B2:predict",
        _row(),
        400,
        "Failed to convert version: \u00b2 to numeric.",
    ),
    (
        "version-arabic-indic-one",
        "POST",
        f"/v1/models/{MODEL}/versions/%D9%A1:predict",
        _row(),
        400,
        "Failed to convert version: \u0661 to numeric.",
    ),
    ("version-above-int64", "GET", f"/v1/models/{MODEL}/versions/{'9' * 30}", None, 400, "Failed to convert version"),
    (
        "5000-digit-integer",
        "POST",
        PREDICT,
        b'{"instances": [{"prompt": "a", "temperature": 1.0, "max_new_chars": ' + b"9" * 5000 + b', "seed": 1}]}',
        400,
        "JSON Parse error: an integer of 5000 digits is out of range",
    ),
    ("unknown-method", "POST", f"/v1/models/{MODEL}:frobnicate", _row(), 400, "Malformed request"),
    ("classify", "POST", f"/v1/models/{MODEL}:classify", _row(), 501, "classify is not supported"),
    ("get-on-predict", "GET", PREDICT, None, 405, "GET is not allowed"),
    ("post-on-status", "POST", f"/v1/models/{MODEL}", _row(), 405, "POST is not allowed"),
    ("put-anywhere", "PUT", PREDICT, _row(), 405, "PUT is not allowed"),
    ("status-unknown-model", "GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    (
        "status-unknown-version",
        "GET",
        f"/v1/models/{MODEL}/versions/7",
        None,
        404,
        f"Could not find version 7 of model {MODEL}",
    ),
    ("metadata-unknown-version", "GET", f"/v1/models/{MODEL}/versions/5/metadata", None, 404, "Specific"),
    ("missing-model-name", "GET", "/v1/models", None, 400, "Missing model name"),
    ("unknown-path", "GET", "/v2/anything", None, 404, "Not Found"),
    ("oversize-body", "POST", PREDICT, b"x" * 70_000, 413, "70000 bytes is above this server's cap of 65536"),
    ("stream-malformed-json", "POST", STREAM, b"{", 400, "JSON Parse error"),
    ("stream-missing-prompt", "POST", STREAM, {"temperature": 1.0}, 400, "missing key 'prompt'"),
    ("stream-unknown-key", "POST", STREAM, {"prompt": "a", "length": 5}, 400, "unknown key 'length'"),
    ("stream-negative-temperature", "POST", STREAM, {"prompt": "a", "temperature": -1}, 400, "temperature must be"),
    ("stream-length-above-cap", "POST", STREAM, {"prompt": "a", "max_new_chars": 20001}, 400, "cap of 20000"),
    ("stream-prompt-above-cap", "POST", STREAM, {"prompt": "a" * 501}, 400, "cap is 500"),
    ("stream-unknown-version", "POST", f"/v1/models/{MODEL}/versions/3:stream", {"prompt": "a"}, 404, "Specific"),
]


@pytest.mark.parametrize("name, method, path, body, status, fragment", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_the_right_4xx_with_a_clear_message(server, name, method, path, body, status, fragment):
    raw = body if isinstance(body, bytes) else None
    got, payload, headers = request(method, server.url + path, body=None if raw is not None else body, raw=raw)
    assert got == status, payload
    assert headers["content-type"] == "application/json" and set(payload) == {"error"}
    assert fragment in payload["error"], payload
    assert "Traceback" not in payload["error"] and "[[{{node" not in payload["error"]


def test_oversize_chunked_body_is_cut_off_with_413(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    chunks = (b'{"instances": ["' + b"a" * 8192 for _ in range(10))  # no Content-Length: chunked
    connection.request("POST", PREDICT, body=chunks, encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413 and "cap of 65536 bytes" in json.loads(response.read())["error"]
    connection.close()


def test_server_keeps_serving_after_the_bad_requests(server):
    assert server.alive()
    status, body, _ = request("POST", server.url + PREDICT, generate_body("ROMEO:", 0.5, 20))
    assert status == 200 and body["predictions"][0]["text"].startswith("ROMEO:")
    assert request("GET", f"{server.url}/v1/models/{MODEL}")[0] == 200


def test_a_long_request_does_not_hold_up_short_ones(server):
    url = server.url + PREDICT
    with ThreadPoolExecutor(1) as pool:
        long = pool.submit(request, "POST", url, generate_body("A", 1.0, 20000, seed=3))
        time.sleep(0.5)  # the long call is now running on one of the two workers
        started = time.monotonic()
        for i in range(5):
            status, body, _ = request("POST", url, generate_body("B", 1.0, 5, seed=i))
            assert status == 200 and len(body["predictions"][0]["generated"]) == 5
        short_seconds = time.monotonic() - started
        assert not long.done(), "the long request finished before the short ones: no overlap was tested"
        status, body, _ = long.result(timeout=120)
    assert status == 200 and len(body["predictions"][0]["generated"]) == 20000
    assert short_seconds < 5


def test_load_200_requests_from_16_clients(server):
    client = ChargenClient(MODEL, server.url, timeout=60)

    def one(i: int) -> tuple[float, str]:
        started = time.perf_counter()
        text = client.generate(f"ROMEO {i}:", temperature=0.8, length=100)
        return time.perf_counter() - started, text

    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(200), timeout=110))
    wall = time.perf_counter() - started
    latencies = np.array([r[0] for r in results]) * 1000
    assert len(results) == 200 and all(len(text) == 100 for _, text in results)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    print(
        f"\n200 requests / 16 clients: {200 / wall:.0f} req/s, latency p50 {p50:.0f} ms, p95 {p95:.0f} ms, "
        f"p99 {p99:.0f} ms, max {latencies.max():.0f} ms"
    )
    assert server.alive()


# --- the :stream extension --------------------------------------------------------------------------


def _open_stream(server, body) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.request("POST", STREAM, body=json.dumps(body), headers={"Content-Type": "application/json"})
    return connection, connection.getresponse()


def test_stream_sends_text_as_it_is_generated_and_greedy_matches_predict(server):
    connection, response = _open_stream(server, {"prompt": "ROMEO:", "temperature": 0, "max_new_chars": 60})
    assert response.status == 200 and response.getheader("content-type").startswith("text/event-stream")
    events = sse_events(response)
    connection.close()
    kinds = [e for e, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and set(kinds[1:-1]) == {"text"} and len(kinds) > 3
    assert events[0][1] == {"model": MODEL, "version": 2, "prompt": "ROMEO:"}
    done = events[-1][1]
    assert "".join(d["text"] for e, d in events if e == "text") == done["generated"]
    assert done["text"] == "ROMEO:" + done["generated"] and done["chars"] == 60
    predicted = request("POST", server.url + PREDICT, generate_body("ROMEO:", 0.0, 60))[1]["predictions"][0]
    assert done["generated"] == predicted["generated"]  # same model, same greedy choices


def test_stream_takes_every_setting_and_gives_the_predict_text(server, reference):
    settings = dict(temperature=0.9, top_k=6, top_p=0.9, repetition_penalty=1.2, stop="e")
    connection, response = _open_stream(server, {"prompt": "ROMEO:", "max_new_chars": 120, "seed": 21, **settings})
    streamed = sse_events(response)[-1][1]["generated"]
    connection.close()
    temperature = settings.pop("temperature")
    assert streamed == reference(["ROMEO:"], temperature, 120, 21, **settings)[0]
    assert streamed.endswith("e") and streamed.count("e") == 1


def test_stream_is_reproducible_with_a_seed(server):
    texts = []
    for _ in range(2):
        connection, response = _open_stream(server, {"prompt": "", "temperature": 1.0, "max_new_chars": 50, "seed": 9})
        texts.append(sse_events(response)[-1][1]["generated"])
        connection.close()
    assert texts[0] == texts[1] and len(texts[0]) == 50


def test_stream_cap_answers_503_and_closed_streams_free_their_slot(server):
    opened = [_open_stream(server, {"prompt": "A", "max_new_chars": 20000}) for _ in range(4)]  # --max-streams 4
    try:
        for _, response in opened:
            assert response.status == 200 and response.readline().startswith(b"event: start")
        status, body, _ = request("POST", server.url + STREAM, {"prompt": "B", "max_new_chars": 5})
        assert status == 503 and "too many streams" in body["error"]
    finally:
        for connection, _ in opened:
            connection.close()  # the server notices and stops generating for them
    deadline = time.monotonic() + 20
    while True:
        status, body, _ = request("POST", server.url + STREAM, {"prompt": "B", "max_new_chars": 5})
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200 and '"chars": 5' in body


# --- graceful shutdown ------------------------------------------------------------------------------


def test_sigterm_finishes_requests_in_flight_then_exits_0(base, tmp_path):
    server = ServerProcess(base, SERVER_FLAGS, tmp_path / "server.log")
    try:
        connection, response = _open_stream(server, {"prompt": "A", "temperature": 1.0, "max_new_chars": 3000})
        assert response.readline().startswith(b"event: start")  # the stream is in flight

        def long_predict():
            result = request("POST", server.url + PREDICT, generate_body("B", 1.0, 20000, seed=2))
            return result, time.monotonic()

        with ThreadPoolExecutor(1) as pool:
            predict = pool.submit(long_predict)
            time.sleep(1.0)  # the predict is in flight too (20000 characters take seconds)
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            time.sleep(0.5)
            with pytest.raises(OSError):  # no new connections while it drains
                request("GET", f"{server.url}/v1/models/{MODEL}", timeout=5)
            events = sse_events(response)
            stream_done = time.monotonic()
            (status, body, _), predict_done = predict.result(timeout=120)
        connection.close()
        assert events[-1][0] == "done" and events[-1][1]["chars"] == 3000
        assert status == 200 and len(body["predictions"][0]["generated"]) == 20000
        assert stream_done > signalled and predict_done > signalled, "a request finished before SIGTERM"
        assert server.process.wait(60) == 0, server.log()
    finally:
        server.stop()

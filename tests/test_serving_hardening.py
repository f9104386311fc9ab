"""The server under attack and under change, over real sockets on 127.0.0.1: stalled connections, the
connection cap, cross-site requests, disconnects, versions added/removed/corrupted while serving, and
a shutdown past its timeout. In-process: the version policy, cancellation in the dispatcher and in TF.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from serving_support import MODEL, ServerProcess, generate_body, request, sse_events
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from test_serving import FakeServable, generate_inputs, queued

from keras_chargen.errors import ChargenError
from keras_chargen.serving import RequestError, ServingConfig
from keras_chargen.serving.batching import Dispatcher
from keras_chargen.serving.cancellation import Canceller
from keras_chargen.serving.repository import ServableVersion, VersionPolicy

PREDICT = f"/v1/models/{MODEL}:predict"
STREAM = f"/v1/models/{MODEL}:stream"
TIMEOUT = 5.0  # the header, body and idle timeouts of the `limited` server
APP_ORIGIN = "http://app.example:3000"
LIMITED_FLAGS = (
    "--all-versions",
    "--header-timeout",
    str(TIMEOUT),
    "--body-timeout",
    str(TIMEOUT),
    "--idle-timeout",
    str(TIMEOUT),
    "--max-connections",
    "300",
    "--max-new-chars",
    "20000",
    "--allow-origin",
    APP_ORIGIN,
    "--log-level",
    "info",
)


@pytest.fixture(scope="module")
def limited(base, tmp_path_factory):
    server = ServerProcess(base, LIMITED_FLAGS, tmp_path_factory.mktemp("limited") / "server.log")
    yield server
    server.stop()


def _stall(port: int, payload: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(payload)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


HALF_HEADERS = b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le"
HALF_BODY = b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{}"


# --- version policy, in-process --------------------------------------------------------------------


def test_version_policies_follow_tf_serving_names():
    assert VersionPolicy.parse("latest").choose([1, 2, 3], failed=set()) == [3]
    assert VersionPolicy.parse("latest").choose([1, 2, 3], failed={3}) == [2]  # a broken newest falls back
    assert VersionPolicy.parse("latest:2").choose([1, 2, 3], failed=set()) == [2, 3]
    assert VersionPolicy.parse("all").choose([1, 2, 3], failed={2}) == [1, 3]
    assert VersionPolicy.parse("specific:3,1").choose([1, 2, 3], failed=set()) == [1, 3]
    for bad in ("newest", "latest:0", "specific", "specific:x", "all:2", "latest:%C2%B2", "latest:²"):
        with pytest.raises(ChargenError, match="version policy"):
            VersionPolicy.parse(bad)


# --- cancellation, in-process ----------------------------------------------------------------------


def test_a_request_whose_client_left_is_cancelled_but_its_batch_mates_go_on():
    async def scenario(fake):
        dispatcher = Dispatcher(ServingConfig(workers=1))
        dispatcher.start()
        alone = asyncio.ensure_future(dispatcher.run(fake, "serving_default", generate_inputs("alone")))
        await fake.wait_until(lambda f: f.running == 1)  # running, alone, on the only worker
        mates = [asyncio.ensure_future(dispatcher.run(fake, "serving_default", generate_inputs(p))) for p in "ab"]
        gone_while_queued = asyncio.ensure_future(dispatcher.run(fake, "serving_default", generate_inputs("q", 7)))
        await queued(dispatcher, 3)
        alone.cancel()  # its client went away: the running call is cancelled
        gone_while_queued.cancel()  # dropped before it runs
        await fake.wait_until(lambda f: f.cancelled == [["alone"]] and f.running == 1)  # the merged call of a and b
        mates[0].cancel()  # one of two batch-mates leaves: the call goes on for the other
        await asyncio.sleep(0)  # one turn of the event loop: the dispatcher sees it
        fake.release()
        result = await mates[1]
        await dispatcher.close()
        return result, dispatcher

    fake = FakeServable()
    result, dispatcher = asyncio.run(scenario(fake))
    assert fake.cancelled == [["alone"]] and fake.calls == [["a", "b"]]
    assert result["generated"].tolist() == [b"B"] and dispatcher.cancelled_calls == 1


def test_abort_fails_queued_and_running_requests_with_503():
    async def scenario(fake):
        dispatcher = Dispatcher(ServingConfig(workers=1))
        dispatcher.start()
        jobs = [asyncio.ensure_future(dispatcher.run(fake, "serving_default", generate_inputs(p, 1))) for p in "xy"]
        await fake.wait_until(lambda f: f.running == 1)
        await queued(dispatcher, 1)
        dispatcher.abort(RequestError(503, "server is shutting down"))
        results = await asyncio.gather(*jobs, return_exceptions=True)
        with pytest.raises(RequestError, match="shutting down"):
            await dispatcher.run(fake, "serving_default", generate_inputs("z", 1))
        await dispatcher.close()
        return results

    fake = FakeServable()
    results = asyncio.run(scenario(fake))
    assert [(r.status, r.message) for r in results] == [(503, "server is shutting down")] * 2
    assert fake.cancelled == [["x"]] and fake.calls == []


def test_tensorflow_stops_a_cancelled_generation(base):
    servable = ServableVersion.load(MODEL, 2, base / "2")
    inputs = {
        "prompt": np.array([b"A"], object),
        "temperature": np.array([1.0], np.float32),
        "max_new_chars": np.array([100_000], np.int32),
        "seed": np.array([1], np.int64),
        "top_k": np.array([0], np.int32),
        "top_p": np.array([1.0], np.float32),
        "repetition_penalty": np.array([1.0], np.float32),
        "stop": np.array([b""], object),
    }
    inputs = {name: inputs[name] for name in servable.input_specs("serving_default")}
    canceller = Canceller()
    threading.Timer(0.3, canceller.cancel).start()
    with pytest.raises(RequestError) as info:  # 100000 characters would take about 15 s
        servable.run("serving_default", inputs, canceller)
    assert (info.value.status, info.value.message) == (499, "the request was cancelled")


# --- connection limits over real sockets -----------------------------------------------------------


def test_200_stalled_connections_do_not_lock_out_16_clients(limited):
    stalled = [_stall(limited.port, HALF_HEADERS if i % 2 else HALF_BODY) for i in range(200)]
    stalled_at = time.monotonic()
    try:

        def client(i: int) -> list[int]:
            statuses = []
            for j in range(4):
                status, body, _ = request(
                    "POST", limited.url + PREDICT, generate_body("AB", 0.0, 10, seed=j), timeout=30
                )
                statuses.append(status)
            return statuses

        with ThreadPoolExecutor(16) as pool:
            results = [s for statuses in pool.map(client, range(16)) for s in statuses]
        answered_in = time.monotonic() - stalled_at
        assert results == [200] * 64
        assert answered_in < TIMEOUT, "the clients were answered only after the stalled connections were closed"
        # every stalled connection is closed by the server within its timeout (plus scheduling slack)
        answers = [_read_until_closed(sock) for sock in stalled]
        closed_in = time.monotonic() - stalled_at
    finally:
        for sock in stalled:
            sock.close()
    assert closed_in < TIMEOUT + 5
    assert all(b"408 Request Timeout" in a and b"did not arrive within 5 s" in a for a in answers)
    time.sleep(0.5)
    log = limited.log(200_000)
    assert log.count("no complete request headers within 5 s") == 1  # once per condition
    assert log.count("body does not arrive within 5 s") == 1
    assert "Traceback" not in log


def test_a_stalled_connection_is_closed_within_its_timeout(limited):
    silent = _stall(limited.port, b"")  # opened, nothing sent: closed without an answer
    grpc_stalled = _stall(limited.grpc_port, b"PRI * HTTP/2.0\r\n")  # part of the HTTP/2 preface: gRPC's handshake
    half = _stall(limited.port, HALF_HEADERS)  # part of the headers: 408, then closed
    keep_alive = http.client.HTTPConnection("127.0.0.1", limited.port, timeout=30)  # one request, then idle
    keep_alive.request("GET", f"/v1/models/{MODEL}")
    assert keep_alive.getresponse().read()
    started = time.monotonic()

    def closed_after(sock: socket.socket) -> tuple[bytes, float]:
        answer = _read_until_closed(sock)
        return answer, time.monotonic() - started

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(closed_after, [silent, half, keep_alive.sock, grpc_stalled]))
    for sock in (silent, half, grpc_stalled):
        sock.close()
    keep_alive.close()
    assert [answer for answer, _ in results[:3]] == [b"", results[1][0], b""]
    assert b"408 Request Timeout" in results[1][0] and b"request headers did not arrive within 5 s" in results[1][0]
    assert all(TIMEOUT - 0.5 < elapsed < TIMEOUT + 3 for _, elapsed in results), results


def test_connections_above_the_cap_get_503_and_the_server_recovers(limited):
    held = []
    try:
        for _ in range(300):
            held.append(_stall(limited.port, b""))
        time.sleep(0.3)
        status, body, _ = request("GET", f"{limited.url}/v1/models/{MODEL}", timeout=10)
        assert status == 503 and body == {"error": "too many open connections (cap 300); retry later"}
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while request("GET", f"{limited.url}/v1/models/{MODEL}", timeout=10)[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert "above the cap of 300 open connections" in limited.log(200_000)


# --- cross-site requests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, status, fragment",
    [
        ({"Host": "evil.example"}, 403, "Host 'evil.example' refused"),
        ({"Host": "evil.example:8501"}, 403, "protection against DNS rebinding"),
        ({"Host": "127.0.0.1.evil.example"}, 403, "refused"),
        ({"Origin": "http://evil.example", "Content-Type": "text/plain"}, 403, "cross-origin request"),
        ({"Origin": "null", "Content-Type": "text/plain"}, 403, "cross-origin request"),
        ({"Content-Type": "text/plain"}, 200, None),  # no Origin: curl, scripts
        ({"Content-Type": "application/x-www-form-urlencoded"}, 200, None),  # `curl -d` as is
        ({"Host": "localhost"}, 200, None),
        ({"Host": "[::1]:8501"}, 200, None),
    ],
)
def test_cross_site_requests_are_refused(server, headers, status, fragment):
    got, body, _ = request("POST", server.url + PREDICT, generate_body("A", 0.0, 3, seed=1), headers=headers)
    assert got == status, body
    if fragment:
        assert fragment in body["error"]
    else:
        assert body["predictions"][0]["text"].startswith("A")


def test_the_servers_own_pages_may_call_it(server):
    own = {"Origin": server.url, "Host": f"127.0.0.1:{server.port}"}
    assert request("GET", server.url + "/", headers=own)[0] == 200
    status, body, _ = request("POST", server.url + PREDICT, generate_body("A", 0.0, 3, seed=1), headers=own)
    assert status == 200


def test_allowed_origins_get_cors_headers(limited):
    preflight = {
        "Origin": APP_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    status, _, headers = request("OPTIONS", limited.url + PREDICT, headers=preflight)
    assert status == 200 and headers["access-control-allow-origin"] == APP_ORIGIN
    assert "POST" in headers["access-control-allow-methods"]
    status, body, headers = request(
        "POST", limited.url + PREDICT, generate_body("A", 0.0, 3, seed=1), headers={"Origin": APP_ORIGIN}
    )
    assert status == 200 and headers["access-control-allow-origin"] == APP_ORIGIN
    status, body, _ = request(
        "POST", limited.url + PREDICT, generate_body(), headers={"Origin": "http://other.example"}
    )
    assert status == 403


# --- bad inputs that used to be 500s ---------------------------------------------------------------


def test_zero_new_characters_return_the_prompt(server):
    status, body, _ = request("POST", server.url + PREDICT, generate_body("ROMEO:", 0.8, 0, rows=2))
    assert (
        status == 200
        and [{k: v for k, v in p.items() if k != "seed"} for p in body["predictions"]]
        == [{"generated": "", "text": "ROMEO:"}] * 2
    )
    assert all(0 <= p["seed"] <= 2**31 - 1 for p in body["predictions"])  # seed -1: drawn, and said
    columnar = {"inputs": {"prompt": ["a", "é"], "temperature": [1.0], "max_new_chars": [0], "seed": [3]}}
    assert request("POST", server.url + PREDICT, columnar)[1] == {
        "outputs": {"generated": ["", ""], "seed": [3, 4], "text": ["a", "é"]}
    }


# --- clients that go away --------------------------------------------------------------------------


def _grpc_request(rows: int, length: int) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = MODEL
    for key, tensor in {
        "prompt": tf.make_tensor_proto(["A"] * rows),
        "temperature": tf.make_tensor_proto([1.0] * rows, tf.float32),
        "max_new_chars": tf.make_tensor_proto([length] * rows, tf.int32),
        "seed": tf.make_tensor_proto([3] * rows, tf.int32),
    }.items():
        req.inputs[key].CopyFrom(tensor)
    return req


def _log_lines(server, fragment: str, count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in server.log(200_000).splitlines() if fragment in line]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_a_client_that_goes_away_costs_one_log_line(limited):
    body = json.dumps(generate_body("A", 1.0, 20000, seed=5)).encode()
    sock = _stall(limited.port, f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\n{{".encode())
    time.sleep(0.3)
    sock.close()  # mid-body
    head = f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    sock = _stall(limited.port, head + body)
    time.sleep(0.5)  # the generation of 20000 characters is running
    sock.close()
    stream = http.client.HTTPConnection("127.0.0.1", limited.port, timeout=30)
    stream.request("POST", STREAM, body=json.dumps({"prompt": "A", "max_new_chars": 20000}))
    assert stream.getresponse().readline().startswith(b"event: start")
    stream.close()  # mid-stream
    mid_body = _log_lines(limited, "went away before sending the whole request body", 1)
    cancelled = _log_lines(limited, "went away before its answer was ready; its generation was cancelled", 1)
    mid_stream = _log_lines(limited, "went away during a stream after", 1)
    assert len(mid_body) == 1 and len(cancelled) == 1 and len(mid_stream) == 1
    with grpc.insecure_channel(f"127.0.0.1:{limited.grpc_port}") as channel:  # a gRPC client that cancels
        call = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict.future(
            _grpc_request(rows=16, length=20000), timeout=60
        )
        time.sleep(0.5)
        call.cancel()
        assert len(_log_lines(limited, "gRPC client", 1)) == 1
        assert "its generation was cancelled" in _log_lines(limited, "gRPC client", 1)[0]
    assert "Traceback" not in limited.log(200_000) and "internal error" not in limited.log(200_000)


# --- versions added, removed and corrupted while serving -------------------------------------------


def _install(source: Path, base: Path, version: int) -> None:
    """Copy a version folder in atomically, as `keras-chargen export` writes one."""
    staging = base / f".{version}.tmp"
    shutil.copytree(source, staging)
    staging.rename(base / str(version))


def _states(server) -> dict[str, tuple[str, str]]:
    body = request("GET", f"{server.url}/v1/models/{MODEL}")[1]
    return {s["version"]: (s["state"], s["status"]["error_code"]) for s in body["model_version_status"]}


def _wait(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the server did not pick up the change"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def live(base, tmp_path_factory):
    """A server over a base path the tests change: a good version 1 and a version 3 with a corrupt vocab.json."""
    root = tmp_path_factory.mktemp("live") / MODEL
    root.mkdir()
    _install(base / "1", root, 1)
    _install(base / "1", root, 3)
    (root / "3" / "assets" / "vocab.json").write_text('{"tokens": ["a", ', "utf-8")
    flags = ("--poll-seconds", "0.2", "--shutdown-timeout", "1", "--max-new-chars", "20000", "--log-level", "debug")
    server = ServerProcess(root, flags, tmp_path_factory.mktemp("live-log") / "server.log")
    server.root = root
    yield server
    server.stop()


def test_start_up_with_one_good_version_serves_it_and_reports_the_broken_one(live):
    body = request("GET", f"{live.url}/v1/models/{MODEL}")[1]
    assert body["model_version_status"][0]["version"] == "3"
    assert body["model_version_status"][0]["state"] == "END"
    error = body["model_version_status"][0]["status"]
    assert error["error_code"] == "DATA_LOSS" and "vocab.json is not valid JSON" in error["error_message"]
    assert body["model_version_status"][1:] == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
    assert request("GET", f"{live.url}/v1/models/{MODEL}/metadata")[1]["model_spec"]["version"] == "1"
    status, body, _ = request("POST", f"{live.url}/v1/models/{MODEL}/versions/3:predict", generate_body())
    assert status == 404 and "version 3 is END" in body["error"]


def test_versions_added_corrupted_and_removed_while_serving(live, base):
    root = live.root
    staging = root / ".4.tmp"  # an empty saved_model.pb, as in the issue
    staging.mkdir()
    (staging / "saved_model.pb").write_bytes(b"")
    staging.rename(root / "4")
    _wait(lambda: _states(live).get("4", (None,))[0] == "END")
    assert _states(live)["4"] == ("END", "DATA_LOSS")
    time.sleep(1.0)  # five more polls: the failure is not retried or logged again
    assert len(_log_lines(live, "version 4 of model tiny failed to load", 1)) == 1
    assert request("POST", live.url + PREDICT, generate_body("A", 0.0, 5, seed=1))[0] == 200  # v1 still serves

    shutil.rmtree(root / "4")
    _install(base / "2", root, 5)  # a good new version: loaded, and the newest becomes the default
    _wait(lambda: _states(live).get("5") == ("AVAILABLE", "OK"))
    assert request("GET", f"{live.url}/v1/models/{MODEL}/metadata")[1]["model_spec"]["version"] == "5"
    assert _states(live)["1"] == ("END", "OK")  # unloaded: the latest policy serves one version

    shutil.rmtree(root / "5")  # removed: unloaded, version 1 comes back
    _wait(lambda: _states(live).get("5") == ("END", "OK") and _states(live).get("1") == ("AVAILABLE", "OK"))
    status, body, _ = request("POST", f"{live.url}/v1/models/{MODEL}/versions/5:predict", generate_body())
    assert status == 404 and "Specific(tiny, 5)" in body["error"]

    shutil.rmtree(root / "3")  # the broken version is repaired: loaded on the next poll
    _install(base / "2", root, 3)
    _wait(lambda: _states(live).get("3") == ("AVAILABLE", "OK"))
    assert "Traceback" not in live.log(200_000)


QUEUED = "request queued: serving_default"  # the server's debug line when a request reaches its queue


def test_shutdown_past_its_timeout_answers_503_and_ends_streams_with_an_error_event(live):
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=60)
    connection.request("POST", STREAM, body=json.dumps({"prompt": "A", "max_new_chars": 20000}))
    response = connection.getresponse()
    assert response.readline().startswith(b"event: start")
    channel = grpc.insecure_channel(f"127.0.0.1:{live.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    queued = live.log_count(QUEUED)
    with ThreadPoolExecutor(1) as pool:
        predict = pool.submit(request, "POST", live.url + PREDICT, generate_body("B", 1.0, 20000, seed=2, rows=16))
        grpc_predict = stub.Predict.future(_grpc_request(rows=16, length=20000), timeout=60)
        # both are in the server (16 rows of 20000 characters: far longer than the 1 s shutdown timeout)
        live.wait_for_log(QUEUED, queued + 2)
        live.process.send_signal(signal.SIGTERM)
        events = sse_events(response)
        status, body, headers = predict.result(timeout=60)
        grpc_error = grpc_predict.exception(timeout=60)
    connection.close()
    channel.close()
    assert status == 503 and headers["content-type"] == "application/json"
    assert body["error"].startswith("server is shutting down: the request did not finish within the shutdown timeout")
    assert (grpc_error.code(), grpc_error.details()) == (grpc.StatusCode.UNAVAILABLE, body["error"])
    assert events[-1][0] == "error" and events[-1][1]["status"] == 503, events[-3:]
    assert "shutting down" in events[-1][1]["error"]
    assert live.process.wait(30) == 0
    assert "Traceback" not in live.log(200_000)


def test_out_of_file_descriptors_is_logged_once(caplog):
    from keras_chargen.serving.connections import ConnectionGuard

    guard = ConnectionGuard(ServingConfig())
    loop = asyncio.new_event_loop()
    try:
        guard.install(loop)
        with caplog.at_level("WARNING", logger="keras_chargen.serving"):
            for _ in range(1000):  # what asyncio reports on every failed accept()
                loop.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(24, "Too many open files"),
                    }
                )
    finally:
        loop.close()
    assert [r.getMessage() for r in caplog.records] == [
        "accept() failed: [Errno 24] Too many open files; the server is out of file descriptors and retries in a "
        "second; further ones are counted, not logged"
    ]
    assert guard.summary() == "connection limits applied: accept 1000"

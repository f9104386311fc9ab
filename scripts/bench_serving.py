#!/usr/bin/env python
"""Load test of `keras-chargen serve`: latency percentiles and throughput, server-side batching on vs off.

Starts the server in a child process on 127.0.0.1, sends N predict requests from C concurrent
clients (`keras_chargen.client`, the same code that talks to TF Serving), and measures each
request's latency; then repeats with `--no-batching`; then opens C concurrent `:stream`s and
measures the time to the first character and the characters per second each client sees; then
runs a mixed load: 32 REST clients, 16 gRPC clients (the `tensorflow-serving-api` stubs) and 8
clients sending bad requests (malformed JSON, huge integers, bad versions, foreign Host/Origin,
stalled connections, wrong gRPC dtypes, ...) at the same time, and counts every answer.
Writes docs/serving_load.md.

The model: `--model-dir` (a trained model directory), else a freshly initialised model of the
default architecture (2x512 LSTM, embedding 64) over the tiny-shakespeare characters. Latency
depends on the architecture, not on the weight values, so no training is needed to measure it.

Usage: python scripts/bench_serving.py [--model-dir models/shakespeare] [--requests 200] [--clients 16]
       [--mixed-requests 6]
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from keras_chargen.bench.report import cpu_name

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
FALLBACK_CORPUS = REPO / "tests" / "data" / "corpus.txt"
NAME = "bench"
BAD_PAUSE = 0.1  # seconds between two requests of a bad client (with stalls of 10-30 s: a few hundred open)


def fresh_model_dir(out: Path) -> tuple[Path, str]:
    """A model directory of the default architecture with initial weights; returns it and a description."""
    from keras_chargen import ChargenConfig, Vocabulary, build_model
    from keras_chargen.saving import CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE

    corpus = SHAKESPEARE if SHAKESPEARE.exists() else FALLBACK_CORPUS
    vocab = Vocabulary(sorted(set(corpus.read_text("utf-8"))))
    config = ChargenConfig()
    out.mkdir(parents=True)
    config.save(out / CONFIG_FILE)
    vocab.save(out / VOCAB_FILE)
    build_model(config, vocab.size).save(out / WEIGHTS_FILE)
    return out, (
        f"{config.num_layers}x{config.units} {config.cell.upper()}, embedding {config.embedding_dim}, "
        f"{vocab.size} ids (initial weights; the default `keras-chargen train` architecture)"
    )


def describe_model_dir(model_dir: Path) -> str:
    from keras_chargen import ChargenConfig, Vocabulary

    config = ChargenConfig.load(model_dir / "config.json")
    vocab = Vocabulary.load(model_dir / "vocab.json")
    return (
        f"{config.num_layers}x{config.units} {config.cell.upper()}, embedding {config.embedding_dim}, "
        f"{vocab.size} ids (trained model `{model_dir}`)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`keras-chargen serve BASE` in a child process, for the duration of a `with` block."""

    def __init__(self, base: Path, flags: list[str]) -> None:
        self.port = free_port()
        self.grpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable,
            "-m",
            "keras_chargen",
            "serve",
            str(base),
            "--port",
            str(self.port),
            "--model-name",
            NAME,
            "--log-level",
            "warning",
            "--grpc-port",
            str(self.grpc_port),
            *flags,
        ]

    def __enter__(self) -> Server:
        self.process = subprocess.Popen(
            self.command,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"server failed:\n{self.process.stderr.read().decode()[-3000:]}")
            try:
                urllib.request.urlopen(f"{self.url}/v1/models/{NAME}", timeout=2)
                return self
            except OSError:
                time.sleep(0.3)
        self.process.kill()
        sys.exit("server did not start within 180 s")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(60)


def predict_load(url: str, requests: int, clients: int, length: int) -> dict[str, float]:
    """`requests` generate calls from `clients` threads; latency percentiles (ms) and throughput."""
    from keras_chargen.client import ChargenClient

    client = ChargenClient(NAME, url, timeout=300)
    client.generate("Warm up:", 0.8, length)  # first call traces nothing (SavedModel) but warms the caches

    def one(i: int) -> float:
        started = time.perf_counter()
        text = client.generate(f"ROMEO {i}:", 0.8, length)
        if len(text) != length:
            raise RuntimeError(f"request {i}: got {len(text)} characters, expected {length}")
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = np.array(list(pool.map(one, range(requests)))) * 1000
    wall = time.perf_counter() - started
    p50, p90, p95, p99 = np.percentile(latencies, [50, 90, 95, 99])
    return {
        "p50": p50,
        "p90": p90,
        "p95": p95,
        "p99": p99,
        "max": latencies.max(),
        "mean": latencies.mean(),
        "rps": requests / wall,
        "chars_per_s": requests * length / wall,
        "wall": wall,
    }


def stream_load(port: int, clients: int, length: int) -> dict[str, float]:
    """`clients` concurrent `:stream`s: time to the first character and per-stream characters per second."""

    def one(i: int) -> tuple[float, float]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        started = time.perf_counter()
        connection.request(
            "POST",
            f"/v1/models/{NAME}:stream",
            body=json.dumps({"prompt": f"ROMEO {i}:", "temperature": 0.8, "max_new_chars": length}),
        )
        response = connection.getresponse()
        first = None
        for line in response:
            if line.startswith(b"event: text") and first is None:
                first = time.perf_counter() - started
            if line.startswith(b"event: done"):
                break
        total = time.perf_counter() - started
        connection.close()
        return first * 1000, length / total

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(clients)))
    first = np.array([r[0] for r in results])
    rate = np.array([r[1] for r in results])
    return {
        "first_p50": np.percentile(first, 50),
        "first_max": first.max(),
        "rate_p50": np.percentile(rate, 50),
        "rate_min": rate.min(),
        "total_chars_per_s": rate.sum(),
    }


def _percentiles(latencies: list[float]) -> dict[str, float]:
    values = np.array(latencies) * 1000
    p50, p95, p99 = np.percentile(values, [50, 95, 99]) if len(values) else (np.nan,) * 3
    return {"requests": len(values), "p50": p50, "p95": p95, "p99": p99, "max": values.max() if len(values) else np.nan}


def _stall(port: int, payload: bytes) -> socket.socket:
    """Open a connection, send part of a request and leave it hanging (the server must close it)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.sendall(payload)
    return sock


def _answer_of_stalled(sock: socket.socket) -> str:
    """The status the server answered a stalled connection with, once it closed it."""
    answer = b""
    with sock:
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1 ") else "closed"


def _gone(port: int, payload: bytes) -> str:
    """Send part of a request and go away."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(payload)
    return "client closed"


def bad_requests(url: str, port: int, grpc_port: int, length: int) -> list:
    """(name, send) pairs: each `send()` returns the HTTP status or gRPC code name it got."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    predict = f"/v1/models/{NAME}:predict"
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))

    def rest(body: bytes, path: str = predict, headers: dict | None = None):
        def send() -> int:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            connection.request("POST", path, body=body, headers=headers or {})
            status = connection.getresponse().status
            connection.close()
            return status

        return send

    def grpc_bad(**tensors):
        def send() -> str:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = NAME
            for key, tensor in tensors.items():
                request.inputs[key].CopyFrom(tensor)
            try:
                stub.Predict(request, timeout=120)
            except grpc.RpcError as err:
                return err.code().name
            return "OK"

        return send

    good = json.dumps({"instances": [{"prompt": "A", "temperature": 0.8, "max_new_chars": length, "seed": -1}]})
    head = f"POST {predict} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
    return [
        ("malformed JSON", rest(b'{"instances": [')),
        ("5000-digit integer", rest(b'{"instances": [{"prompt": "A", "seed": ' + b"9" * 5000 + b"}]}")),
        ("version %C2%B2", rest(good.encode(), f"/v1/models/{NAME}/versions/%C2%B2:predict")),
        ("version %D9%A1", rest(good.encode(), f"/v1/models/{NAME}/versions/%D9%A1:predict")),
        ("max_new_chars above the cap", rest(good.replace(f": {length},", ": 100000,").encode())),
        ("foreign Origin (text/plain)", rest(good.encode(), headers={"Origin": "http://evil.example"})),
        ("DNS-rebinding Host", rest(good.encode(), headers={"Host": "evil.example"})),
        ("oversize body", rest(b"x" * (2 << 20))),
        ("stalled headers", lambda: _stall(port, head + b"Content-Le")),
        ("stalled body", lambda: _stall(port, head + b"Content-Length: 100\r\n\r\n{")),
        ("gone mid-body", lambda: _gone(port, head + b"Content-Length: 100\r\n\r\n{")),
        ("gRPC int32 seed", grpc_bad(prompt=tf.make_tensor_proto(["A"]), seed=tf.make_tensor_proto([1]))),
        ("gRPC unknown input", grpc_bad(prompt=tf.make_tensor_proto(["A"]), top_q=tf.make_tensor_proto([1]))),
    ]


def mixed_load(server: Server, rest_clients: int, grpc_clients: int, bad_clients: int, per_client: int, length: int):
    """Good REST and gRPC clients and bad clients at once: latency per protocol, every answer counted."""
    import threading

    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from keras_chargen.client import ChargenClient

    rest_latencies: list[float] = []
    grpc_latencies: list[float] = []
    good_errors: list[str] = []
    bad_answers: dict[str, dict] = {}
    done = threading.Event()

    def rest_client(i: int) -> None:
        client = ChargenClient(NAME, server.url, timeout=300)
        for j in range(per_client):
            started = time.perf_counter()
            try:
                text = client.generate(f"ROMEO {i}.{j}:", 0.8, length)
                assert len(text) == length, f"{len(text)} characters"
                rest_latencies.append(time.perf_counter() - started)
            except Exception as err:  # counted: the run must show zero of them
                good_errors.append(f"REST: {err}")

    def grpc_client(i: int) -> None:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        for j in range(per_client):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = NAME
            inputs = {
                "prompt": tf.make_tensor_proto([f"JULIET {i}.{j}:"]),
                "temperature": tf.make_tensor_proto([0.8], tf.float32),
                "max_new_chars": tf.make_tensor_proto([length], tf.int32),
                "seed": tf.make_tensor_proto([-1], tf.int64),
                "top_k": tf.make_tensor_proto([0], tf.int32),
                "top_p": tf.make_tensor_proto([1.0], tf.float32),
                "repetition_penalty": tf.make_tensor_proto([1.0], tf.float32),
                "stop": tf.make_tensor_proto([""]),
            }
            for key, tensor in inputs.items():
                request.inputs[key].CopyFrom(tensor)
            started = time.perf_counter()
            try:
                answer = stub.Predict(request, timeout=300)
                generated = tf.make_ndarray(answer.outputs["generated"])[0].decode("utf-8")
                assert len(generated) == length, f"{len(generated)} characters"
                grpc_latencies.append(time.perf_counter() - started)
            except Exception as err:
                good_errors.append(f"gRPC: {err}")

    cases = bad_requests(server.url, server.port, server.grpc_port, length)

    stalled: list[tuple[str, socket.socket]] = []

    def count(name: str, answer: str) -> None:
        counts = bad_answers.setdefault(name, {})
        counts[answer] = counts.get(answer, 0) + 1

    def bad_client(i: int) -> None:
        k = i
        while not done.is_set():
            name, send = cases[k % len(cases)]
            k += 1
            try:
                answer = send()
            except Exception as err:
                answer = type(err).__name__
            if isinstance(answer, socket.socket):  # left hanging; its answer is collected at the end
                stalled.append((name, answer))
            else:
                count(name, str(answer))
            done.wait(BAD_PAUSE)

    started = time.perf_counter()
    with ThreadPoolExecutor(rest_clients + grpc_clients + bad_clients) as pool:
        bad = [pool.submit(bad_client, i) for i in range(bad_clients)]
        good = [pool.submit(rest_client, i) for i in range(rest_clients)]
        good += [pool.submit(grpc_client, i) for i in range(grpc_clients)]
        for future in good:
            future.result()
        wall = time.perf_counter() - started
        done.set()
        for future in bad:
            future.result()
        for name, answer in pool.map(lambda item: (item[0], _answer_of_stalled(item[1])), stalled):
            count(name, answer)
        drained = time.perf_counter() - started
    return {
        "rest": _percentiles(rest_latencies),
        "grpc": _percentiles(grpc_latencies),
        "good_errors": good_errors,
        "bad": bad_answers,
        "wall": wall,
        "drained": drained,
        "stalled": len(stalled),
        "clients": (rest_clients, grpc_clients, bad_clients),
        "per_client": per_client,
    }


def write_report(
    path: Path,
    model: str,
    args: argparse.Namespace,
    rows: list[tuple[str, dict]],
    streams: dict[str, float],
    mixed: dict,
    load_before: float,
) -> None:
    import tensorflow as tf

    lines = [
        "# Serving load test",
        "",
        f"Written by `scripts/bench_serving.py` on {datetime.date.today().isoformat()}. "
        f"{os.cpu_count()} CPU cores ({cpu_name()}), TensorFlow {tf.__version__}, Python {platform.python_version()}; "
        f"load average {load_before:.1f} before the run (other work on the machine inflates the numbers).",
        *([f"{args.note}"] if args.note else []),
        "",
        f"Model: {model}. Server: `keras-chargen serve` with its default settings (2 worker threads), on "
        "127.0.0.1; clients: `keras_chargen.client.ChargenClient.generate` (columnar predict, random seed) "
        f"from {args.clients} threads, {args.requests} requests of {args.length} characters each, prompts "
        "`ROMEO <i>:`. Latency is per request, measured by the client (connect, generate, response).",
        "",
        "| server | p50 ms | p90 ms | p95 ms | p99 ms | max ms | requests/s | generated chars/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in rows:
        lines.append(
            f"| {label} | {r['p50']:.0f} | {r['p90']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} | "
            f"{r['max']:.0f} | {r['rps']:.1f} | {r['chars_per_s']:.0f} |"
        )
    on, off = rows[0][1], rows[1][1]
    lines += [
        "",
        "Batching merges concurrent requests that draw random seeds into one model call (see "
        "`keras_chargen/serving/batching.py`): a recurrent generator runs a batch of rows for much less than the "
        f"price of running them one by one. Here it gave {on['rps'] / off['rps']:.1f}x the throughput and a median "
        f"latency of {on['p50'] / 1000:.2f} s instead of {off['p50'] / 1000:.2f} s.",
        "",
        f"Streaming (`:stream`, {args.clients} concurrent streams of {args.length} characters, continuous batching "
        f"over the `step` signature): first character after {streams['first_p50']:.0f} ms (median; worst "
        f"{streams['first_max']:.0f} ms), {streams['rate_p50']:.0f} characters/s per stream (median; slowest "
        f"{streams['rate_min']:.0f}), {streams['total_chars_per_s']:.0f} characters/s in all.",
        "",
        *mixed_report(mixed, args.length),
        "",
        f"Reproduce: `python scripts/bench_serving.py --requests {args.requests} --clients {args.clients} "
        f"--length {args.length} --mixed-requests {args.mixed_requests}"
        + (f" --model-dir {args.model_dir}" if args.model_dir else "")
        + "`.",
        "",
    ]
    path.write_text("\n".join(lines))


def mixed_report(mixed: dict, length: int) -> list[str]:
    rest_clients, grpc_clients, bad_clients = mixed["clients"]
    lines = [
        "## Mixed load: REST, gRPC and bad requests at once",
        "",
        f"{rest_clients} REST clients (`ChargenClient.generate`) and {grpc_clients} gRPC clients "
        "(`PredictionServiceStub.Predict` of `tensorflow-serving-api`, all eight inputs as `tf.make_tensor_proto`) "
        f"each sent {mixed['per_client']} requests of {length} characters (random seeds, so REST and gRPC requests "
        f"are merged into the same batches), while {bad_clients} clients sent bad requests in a loop (one every "
        f"{BAD_PAUSE:g} s each) until the good ones had finished ({mixed['wall']:.1f} s for the good requests). "
        "Default server settings "
        f"(header/body timeouts 10/30 s): the {mixed['stalled']} connections the bad clients left stalled "
        f"were all closed by the server {mixed['drained']:.0f} s after the start.",
        "",
        "| protocol | good requests | errors | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, key in (("REST", "rest"), ("gRPC", "grpc")):
        r = mixed[key]
        errors = sum(1 for e in mixed["good_errors"] if e.startswith(label))
        cells = [r["requests"], errors] + [f"{r[k]:.0f}" for k in ("p50", "p95", "p99", "max")]
        lines.append(f"| {label} | " + " | ".join(map(str, cells)) + " |")
    lines += ["", "Answers to the bad requests (HTTP status or gRPC code: count):", ""]
    lines += ["| bad request | answers |", "|---|---|"]
    for name, counts in sorted(mixed["bad"].items()):
        lines.append(f"| {name} | {', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))} |")
    if mixed["good_errors"]:
        lines += ["", "Errors on good requests:", ""] + [f"- {e}" for e in mixed["good_errors"][:20]]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", help="a trained model directory (default: fresh default architecture)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--length", type=int, default=100, help="characters generated per request")
    parser.add_argument("--mixed-requests", type=int, default=6, help="requests per good client in the mixed load")
    parser.add_argument("--note", help="a sentence about the run's conditions, written under the header")
    parser.add_argument("--out", default=str(REPO / "docs" / "serving_load.md"))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_chargen.export import export_model

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        if args.model_dir:
            model_dir, model = Path(args.model_dir), describe_model_dir(Path(args.model_dir))
        else:
            model_dir, model = fresh_model_dir(Path(tmp) / "model")
        base = Path(tmp) / "exported" / NAME
        export_model(model_dir, base, version=1)
        rows = []
        for label, flags in [("batching on (default)", []), ("batching off (`--no-batching`)", ["--no-batching"])]:
            with Server(base, flags) as server:
                result = predict_load(server.url, args.requests, args.clients, args.length)
                rows.append((label, result))
                print(f"{label}: {json.dumps({k: round(v, 1) for k, v in result.items()})}", flush=True)
                if not flags:
                    streams = stream_load(server.port, args.clients, args.length)
                    print(f"streams: {json.dumps({k: round(v, 1) for k, v in streams.items()})}", flush=True)
                    mixed = mixed_load(server, 32, 16, 8, args.mixed_requests, args.length)
                    print(json.dumps(mixed, default=float), flush=True)
    write_report(Path(args.out), model, args, rows, streams, mixed, load_before)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

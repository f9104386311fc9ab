"""Helpers for the serving, client and playground tests: an exported base path and a real server process.

The server runs as `python -m keras_chargen serve ...` in a subprocess on free 127.0.0.1 ports (REST
and gRPC: never the default 8500/8501, so parallel test runs do not collide), exactly as users start
it. One export and one server (per set of flags) are shared by every test module of the session;
they are stopped when pytest finishes (`config.add_cleanup`).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import REPO

MODEL = "tiny"
# Small caps so that the cap tests are cheap, and a high length cap for the long-request tests.
SERVER_FLAGS = (
    "--all-versions",
    "--max-new-chars",
    "20000",
    "--max-prompt-chars",
    "500",
    "--max-body-bytes",
    "65536",
    "--max-batch",
    "16",
    "--max-streams",
    "4",
    "--log-level",
    "debug",  # the tests wait for log lines (a model call started, a shutdown began) instead of sleeping
)
STARTUP_TIMEOUT = 120.0

_EXPORTS: dict[str, Path] = {}
_SERVERS: dict[tuple, ServerProcess] = {}


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def exported_base(trained_dir: Path, tmp_path_factory) -> Path:
    """`.../tiny/1` and `.../tiny/2` exported from the tiny trained model, once per session."""
    from keras_chargen.export import export_model

    key = str(trained_dir)
    if key not in _EXPORTS:
        base = tmp_path_factory.mktemp("exported") / MODEL
        for version in (1, 2):
            export_model(trained_dir, base, version=version)
        _EXPORTS[key] = base
    return _EXPORTS[key]


class ServerProcess:
    """`keras-chargen serve` in a subprocess; `url` once it answers, `stop()` sends SIGTERM."""

    def __init__(self, base: Path, flags: tuple[str, ...], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = 0
        if "--grpc-port" not in flags:
            self.grpc_port = free_port()
            flags = (*flags, "--grpc-port", str(self.grpc_port))
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed by stop())
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "keras_chargen", "serve", str(base), "--port", str(self.port), *flags],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if request("GET", f"{self.url}/v1/models/{MODEL}", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready after {STARTUP_TIMEOUT} s:\n{self.log()}")

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text("utf-8", "replace")[-tail:]

    def log_count(self, text: str) -> int:
        """How many lines of the server's log so far contain `text`."""
        return sum(text in line for line in self.log_path.read_text("utf-8", "replace").splitlines())

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 60.0) -> None:
        """Until `count` lines of the log contain `text` (an event the server reports), or fail after `timeout`."""
        deadline = time.monotonic() + timeout
        while self.log_count(text) < count:
            if time.monotonic() > deadline or not self.alive():
                raise AssertionError(f"no {count} log lines with {text!r} after {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the exit status (SIGKILL if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def shared_server(request, tmp_path_factory, base: Path, flags: tuple[str, ...] = SERVER_FLAGS) -> ServerProcess:
    """One server per (base, flags) for the whole session, stopped when pytest finishes."""
    key = (str(base), flags)
    if key not in _SERVERS or not _SERVERS[key].alive():
        log_dir = tmp_path_factory.mktemp("server-log")
        _SERVERS[key] = ServerProcess(base, flags, log_dir / "server.log")
        request.config.add_cleanup(_SERVERS[key].stop)
    return _SERVERS[key]


def request(
    method: str,
    url: str,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict | None = None,
    timeout: float = 60.0,
) -> tuple[int, Any, dict[str, str]]:
    """One HTTP request on its own connection: (status, parsed JSON body or text, headers)."""
    parsed = http.client.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode("utf-8"))
        connection.request(method, parsed.path, body=data, headers=headers or {})
        response = connection.getresponse()
        payload = response.read()
        kind = response.getheader("content-type", "")
        parsed_body = json.loads(payload) if kind.startswith("application/json") else payload.decode("utf-8")
        return response.status, parsed_body, {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


def sse_events(response) -> list[tuple[str, dict]]:
    """All (event, data) pairs of a finished server-sent-events response body (http.client response)."""
    events, event, data = [], "message", []
    for raw in response:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                events.append((event, json.loads("\n".join(data))))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    return events


def generate_body(
    prompt: str = "ROMEO:", temperature: float = 0.8, length: int = 40, seed: int = -1, rows: int = 1
) -> dict:
    """A row-format predict body for `serving_default`."""
    return {
        "instances": [
            {"prompt": prompt, "temperature": temperature, "max_new_chars": length, "seed": seed} for _ in range(rows)
        ]
    }

"""The web export in headless Chromium: a static file server in a thread and a batch of requests through chargen.js.

Nothing is downloaded at run time: the runtime files come from `web/node_modules` (`npm ci --prefix web`);
without them the tests marked `needs_web_runtime` skip and say why.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keras_chargen.export.web import NPM_HINT, runtime_dir

try:
    runtime_dir()
    _missing = ""
except Exception as err:  # noqa: BLE001  (any reason: the tests say it)
    _missing = str(err)
needs_web_runtime = pytest.mark.skipif(bool(_missing), reason=f"onnxruntime-web is not installed: {NPM_HINT}")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript"}

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """Serve `folder` on a free local port (http.server in a thread); yields its URL, ending in `/`."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# Runs in the page: every request of `requests` in turn through window.chargen (the page loads it),
# streamed (the pieces joined) and in one call; the results (or an error) come back as JSON.
_BATCH = """
const [requests, chunks, done] = arguments;
(async () => {
  for (let i = 0; i < 600 && !window.chargen; i++) await new Promise((r) => setTimeout(r, 50));
  if (!window.chargen) return done(JSON.stringify({error: document.getElementById("status").textContent}));
  if (chunks) window.chargen.chunks = chunks;
  const out = [];
  for (const request of requests) {
    try {
      const pieces = [];
      for await (const piece of window.chargen.stream(request)) pieces.push(piece);
      const {generated, seed} = await window.chargen.generateWithSeed(request);
      out.push({pieces, generated, seed});
    } catch (error) { out.push({error: String(error.message)}); }
  }
  done(JSON.stringify(out));
})();
"""


def run_in_page(
    driver, url: str, requests: list[dict[str, Any]], chunks: list[int] | None = None, timeout: float = 120.0
) -> list[dict[str, Any]]:
    """Open the exported page at `url` and run `requests` (chargen.js options) through its generator, with
    `chunks` tokens per decode call if given (default: the generator's own)."""
    driver.get(url)
    driver.set_script_timeout(timeout)
    result = json.loads(driver.execute_async_script(_BATCH, requests, chunks))
    if isinstance(result, dict):
        raise AssertionError(f"the page did not load its generator: {result['error']}")
    return result

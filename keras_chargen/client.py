"""A small client for a model served over TensorFlow Serving's REST API: this project's server or TF Serving.

It only uses what TF Serving documents (`/v1/models/{name}[/versions/{v}]:predict` with the
columnar `inputs` format, `GET /v1/models/{name}[...]/metadata`), so the same code works against
`keras-chargen serve` and against the `tensorflow/serving` container. `stream()` uses this
project's `:stream` extension and works only against `keras-chargen serve`. Standard library only.

Example:
>>> from keras_chargen.client import generate
>>> generate("ROMEO:", 0.8, 100, model="shakespeare")  # doctest: +SKIP
'\\nWhat say you, sir? ...'
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

from keras_chargen.errors import ChargenError
from keras_chargen.settings import check_api, offs

DEFAULT_URL = "http://127.0.0.1:8501"
FILTERS = tuple(offs())  # the settings a request may leave out (`generate` and `stream` take them by name)


class ServingError(ChargenError):
    """The server answered with an error, or could not be reached (`status` is None then).

    Args:
        status: int | None, the HTTP status.
        message: str, the server's `error` message (or the connection error).
    """

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})" if status is not None else message)
        self.status = status
        self.message = message


class ChargenClient:
    """Generate text with a served keras-chargen model.

    Args:
        model: str, the model name in the URL (the base path's folder name, e.g. "shakespeare").
        url: str, the server's base URL. Default "http://127.0.0.1:8501" (TF Serving's REST port).
        version: int | None, a specific version; None uses the newest the server has loaded.
        timeout: float, seconds to wait for a response. Default 60.

    Example:
    >>> client = ChargenClient("shakespeare", "http://127.0.0.1:8501")  # doctest: +SKIP
    >>> client.generate("ROMEO:", temperature=0.5, length=80, seed=1)  # doctest: +SKIP
    """

    def __init__(self, model: str, url: str = DEFAULT_URL, version: int | None = None, timeout: float = 60.0) -> None:
        if not isinstance(model, str) or not model or any(c in model for c in "/:"):
            raise ChargenError(f"model must be a name without '/' or ':'; got {model!r}")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
            raise ChargenError(f"version must be a positive integer or None; got {version!r}")
        self.model = model
        self.url = url.rstrip("/")
        self.version = version
        self.timeout = timeout

    @property
    def model_url(self) -> str:
        """`{url}/v1/models/{model}[/versions/{version}]`."""
        path = f"{self.url}/v1/models/{urllib.parse.quote(self.model, safe='')}"
        return path if self.version is None else f"{path}/versions/{self.version}"

    def generate(
        self,
        prompt: str | Sequence[str],
        temperature: float | Sequence[float] = 0.8,
        length: int = 200,
        seed: int | None = None,
        *,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        stop: str | None = None,
        **settings: Any,
    ) -> str | list[str]:
        """The continuation of `prompt` (a list of them for a list of prompts), without the prompt.

        Every input of `serving_default` is sent (TF Serving requires them all), so versions exported
        before top_k/top_p/repetition_penalty/stop existed answer 400 `unknown input`: re-export them.

        Args:
            prompt: str or list[str].
            temperature: float >= 0, 0 is greedy; or one per prompt, or several for one prompt (one
                continuation each, a list is returned). Default 0.8.
            length: int >= 0, characters to generate per prompt. Default 200.
            seed: int in 0..2**31-1 for a reproducible draw (row i draws with seed + i), None for random.
            top_k: int >= 1, or None (off). top_p: float in (0, 1], or None (off).
            repetition_penalty: float > 0, or None (off). stop: non-empty str, or None (off); each
                continuation ends with it when it stopped there.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
        temps = list(temperature) if isinstance(temperature, (list, tuple)) else None
        if prompts and temps is not None and len(prompts) == 1 and len(temps) > 1:
            prompts = prompts * len(temps)
        temps = temps if temps is not None else [temperature] * len(prompts or [])
        if prompts is not None and len(temps) != len(prompts):
            raise ChargenError(f"got {len(temps)} temperatures for {len(prompts)} prompts")
        for value in temps or [temperature]:
            _check_args(prompts, value, length, seed)
        sampling = _check_sampling({**{k: v for k, v in locals().items() if k in FILTERS}, **settings})
        rows = len(prompts or [])
        inputs = {
            "prompt": prompts,
            "temperature": [float(t) for t in temps],
            "max_new_chars": [length] * rows,
            "seed": [-1 if seed is None else seed],  # one seed: row i draws with seed + i
            **{k: [v] * rows for k, v in sampling.items()},
        }
        generated: list[str] = self.predict(inputs)["generated"]
        return generated[0] if isinstance(prompt, str) and rows == 1 else generated

    def predict(self, inputs: dict[str, Any], signature_name: str | None = None) -> Any:
        """Raw columnar predict: `inputs` (name → list, batch first) → the response's `outputs`.

        `outputs` is an object keyed by output name, or the bare value for a one-output signature.
        """
        body: dict[str, Any] = {"inputs": inputs}
        if signature_name:
            body["signature_name"] = signature_name
        return self._request("POST", f"{self.model_url}:predict", body)["outputs"]

    def status(self) -> dict[str, Any]:
        """`GET /v1/models/{model}`: the versions and their state."""
        return self._request("GET", self.model_url)

    def metadata(self) -> dict[str, Any]:
        """`GET .../metadata`: the signature defs of the (newest or chosen) version."""
        return self._request("GET", f"{self.model_url}/metadata")

    def stream(
        self,
        prompt: str,
        temperature: float = 0.8,
        length: int = 200,
        seed: int | None = None,
        *,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        stop: str | None = None,
        **settings: Any,
    ) -> Iterator[str]:
        """Extension of `keras-chargen serve` only: pieces of the continuation as they are generated.

        Takes every setting `generate` takes; the joined pieces are the text `generate` returns for
        the same prompt, seed and settings (one prompt: the row's seed is `seed`).
        """
        _check_args([prompt], temperature, length, seed)
        body = {
            "prompt": prompt,
            "temperature": float(temperature),
            "max_new_chars": length,
            "seed": -1 if seed is None else seed,
            **_check_sampling({**{k: v for k, v in locals().items() if k in FILTERS}, **settings}),
        }
        with self._open("POST", f"{self.model_url}:stream", body) as response:
            for event, data in _sse_events(response):
                if event == "text":
                    yield data["text"]
                elif event == "error":
                    raise ServingError(data.get("status"), data["error"])
                elif event == "done":
                    return
        raise ServingError(None, "the stream ended before its 'done' event")

    def _request(self, method: str, url: str, body: Any = None) -> dict[str, Any]:
        with self._open(method, url, body) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def _open(self, method: str, url: str, body: Any) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"} if data else {}
        )
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as err:
            raise ServingError(err.code, _error_message(err)) from None
        except urllib.error.URLError as err:
            raise ServingError(None, f"cannot reach {self.url}: {err.reason}") from None


def generate(
    prompt: str | Sequence[str],
    temperature: float | Sequence[float] = 0.8,
    length: int = 200,
    *,
    model: str,
    url: str = DEFAULT_URL,
    version: int | None = None,
    seed: int | None = None,
    timeout: float = 60.0,
    **sampling: Any,
) -> str | list[str]:
    """One-call form of `ChargenClient(model, url, version, timeout).generate(prompt, temperature, length, seed,
    **sampling)` (`top_k`, `top_p`, `repetition_penalty`, `stop`)."""
    return ChargenClient(model, url, version, timeout).generate(prompt, temperature, length, seed, **sampling)


def _check_args(prompts: list[Any] | None, temperature: float, length: int, seed: int | None) -> None:
    """Fail before the round trip on arguments no server would accept (rules: `keras_chargen.settings`)."""
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ChargenError("prompt must be a string or a non-empty list of strings")
    check_api("temperature", temperature)
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ChargenError(f"length must be an integer >= 0; got {length!r}")
    check_api("seed", seed)


def _check_sampling(values: dict[str, Any]) -> dict[str, Any]:
    """The optional settings (`FILTERS`) with None turned into their off values; `ChargenError` on invalid values."""
    unknown = sorted(set(values) - set(FILTERS))
    if unknown:
        raise ChargenError(f"unknown settings {', '.join(unknown)}; the optional settings are {', '.join(FILTERS)}")
    return {name: check_api(name, values.get(name)) for name in FILTERS}


def _error_message(err: urllib.error.HTTPError) -> str:
    body = err.read()
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace").strip() or err.reason


def _sse_events(response: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs from a `text/event-stream` response, read line by line."""
    event, data = "message", list[str]()
    for raw in response:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", list[str]()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())

"""Refusing cross-site use: DNS rebinding (the `Host` check) and requests from other web pages (the `Origin` check).

A web page the user visits may POST to `http://127.0.0.1:8501` with a "simple" content type
(`text/plain`, a form) and no preflight, or rebind its own name to 127.0.0.1. Browsers mark both:
the first with an `Origin` header naming the page, the second with the page's name in `Host`. So:

- bound to a loopback address, a request whose `Host` is not a loopback name gets 403;
- a request with an `Origin` other than the server's own (`http://` + its `Host`) gets 403, unless
  the origin was allowed (`--allow-origin`), in which case Starlette's `CORSMiddleware` adds the
  CORS headers and answers preflights.

curl and programmatic clients send no `Origin`, so `curl -d ...` keeps working (as on TF Serving),
and the playground, served by this server, sends its own origin.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Sequence

from starlette.middleware.cors import CORSMiddleware

from keras_chargen.errors import ChargenError


def host_name(host_header: str) -> str:
    """The name part of a `Host` header (`[::1]:8501` → `::1`, `Localhost.:80` → `localhost`)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def is_loopback(name: str) -> bool:
    """`localhost`, `*.localhost` or a loopback IP address (127.0.0.0/8, ::1)."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def normalize_origin(origin: str) -> str:
    """An origin as browsers write it: lower case, no trailing slash; `ChargenError` if it is not one."""
    value = origin.strip().rstrip("/").lower()
    if value != "*" and not (value.startswith(("http://", "https://")) and "/" not in value.split("://", 1)[1]):
        raise ChargenError(f"--allow-origin takes origins such as http://localhost:3000 (or *); got {origin!r}")
    return value


class CrossSiteGuard:
    """ASGI middleware: 403 for a foreign `Host` (when bound to loopback) or a foreign `Origin`.

    Args:
        app: the ASGI app to protect.
        bound_host: str | None, the address the server listens on; None: no `Host` check.
        allow_origins: origins (or `*`) allowed to call the API from a browser, with CORS headers.

    Example:
    >>> guard = CrossSiteGuard(app=None, bound_host="127.0.0.1", allow_origins=["http://localhost:3000"])
    >>> guard.refusal("127.0.0.1:8501", None) is None  # curl: no Origin
    True
    >>> guard.refusal("evil.example", None)[:30]
    "Host 'evil.example' refused: t"
    >>> guard.refusal("127.0.0.1:8501", "http://localhost:3000") is None  # an allowed web app
    True
    """

    def __init__(self, app: Callable, bound_host: str | None, allow_origins: Sequence[str] = ()) -> None:
        self.allowed = {normalize_origin(o) for o in allow_origins}
        self.check_host = bound_host is not None and is_loopback(host_name(bound_host))
        self.bound_host = bound_host
        inner = app
        if self.allowed:
            inner = CORSMiddleware(
                app,
                allow_origins=sorted(self.allowed),
                allow_methods=["GET", "POST"],
                allow_headers=["*"],
                max_age=600,
            )
        self.app = inner

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            refusal = self.refusal(headers.get("host"), headers.get("origin"))
            if refusal is not None:
                body = json.dumps({"error": refusal}).encode("utf-8")
                await send(
                    {
                        "type": "http.response.start",
                        "status": 403,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def refusal(self, host: str | None, origin: str | None) -> str | None:
        """Why a request with these headers is refused, or None if it may go on."""
        if self.check_host and host is not None and not is_loopback(host_name(host)):
            return (
                f"Host {host!r} refused: this server listens on {self.bound_host} and answers only requests "
                "addressed to localhost or a loopback address (protection against DNS rebinding)"
            )
        if origin is None:
            return None
        value = origin.strip().rstrip("/").lower()
        own = f"http://{(host or '').strip().lower()}"
        if value == own or value in self.allowed or "*" in self.allowed:
            return None
        return (
            f"cross-origin request from {origin!r} refused: this server answers only its own pages and "
            "clients that send no Origin; start it with --allow-origin ORIGIN to allow a web app"
        )

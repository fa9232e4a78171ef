"""ASGI types, and the HTTP scope of one request, built from the request alone."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

from runserver_plus.server.request import RequestHead
from runserver_plus.server.wsgi import split_target

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}

#: The scope key a layer in front of the application sets to keep a request
#: out of the access log (live reload's own requests).
QUIET = "runserver_plus.quiet"


class ClientDisconnected(OSError):
    """``send()`` on a connection the client has closed (ASGI: an ``OSError``)."""


def address(value: Any) -> tuple[str, int] | None:
    """``(host, port)`` of a socket address; None when it is not an IP one."""
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return None


def decode_path(raw_path: bytes) -> str:
    """The path as ASGI gives it: percent-decoded once, read as UTF-8."""
    decoded = unquote_to_bytes(raw_path) if b"%" in raw_path else raw_path
    return decoded.decode("utf-8", "replace")


def request_headers(
    headers: list[tuple[bytes, bytes]], content_length: int | None
) -> list[tuple[bytes, bytes]]:
    """The headers the application sees, as raw byte pairs.

    Names with an underscore are dropped, as Django's server drops them (they
    would collide with the dashed name in ``request.META``). A decoded chunked
    body is announced by its length, without the Transfer-Encoding.
    """
    if content_length is None:
        return [(n, v) for n, v in headers if b"_" not in n]
    kept = [
        (n, v)
        for n, v in headers
        if b"_" not in n and n not in (b"transfer-encoding", b"content-length")
    ]
    kept.append((b"content-length", str(content_length).encode("ascii")))
    return kept


def http_scope(
    request: RequestHead,
    *,
    server: tuple[str, int] | None,
    client: tuple[str, int] | None,
    content_length: int | None = None,
    scheme: str = "http",
    state: dict[str, Any] | None = None,
) -> Scope:
    """The ``http`` scope of one request; nothing comes from ``os.environ``.

    ``content_length`` is the length of a chunked body the server decoded;
    ``state`` what the application's lifespan startup stored (copied).
    """
    raw_path, query = split_target(request.target)
    return {
        "type": "http",
        "asgi": ASGI_VERSION,
        "http_version": request.http_version.decode("ascii"),
        "method": request.method.decode("ascii"),
        "scheme": scheme,
        "path": decode_path(raw_path),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": request_headers(request.headers, content_length),
        "client": client,
        "server": server,
        "state": dict(state or {}),
    }

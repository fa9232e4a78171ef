"""Serve static files in front of an ASGI application, by the WSGI layer's rules."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

from runserver_plus.server.asgi_scope import ASGIApp, Receive, Scope, Send
from runserver_plus.server.request import RequestHead
from runserver_plus.server.wsgi import WSGIEnviron, base_environ, build_environ
from runserver_plus.static import StaticFilesApp


def _not_static(environ: WSGIEnviron, start_response: Any) -> Iterable[bytes]:
    raise AssertionError("AsgiStaticFiles only hands StaticFilesApp static paths")


def _no_write(data: bytes) -> None:
    raise AssertionError("StaticFilesApp never calls write()")


def wsgi_environ(scope: Scope) -> WSGIEnviron:
    """The WSGI environ of an ``http`` scope, built as the WSGI server builds it."""
    server = scope.get("server") or ("localhost", 0)
    client = scope.get("client") or ("", 0)
    target = scope["raw_path"]
    if scope["query_string"]:
        target += b"?" + scope["query_string"]
    request = RequestHead(
        scope["method"].encode("ascii"),
        target,
        scope["http_version"].encode("ascii"),
        list(scope["headers"]),
    )
    base = base_environ(str(server[0]), int(server[1]), str(client[0]), True)
    return build_environ(base, request, io.BytesIO(), None)


class AsgiStaticFiles:
    """ASGI middleware serving the staticfiles finders' files under ``base_path``.

    The files, their validators, ranges and 404 pages are ``StaticFilesApp``'s,
    run in a worker thread (it stats and opens files, and renders Django's 404),
    so both modes answer a client the same way. Other paths and other scopes
    (WebSockets, lifespan) go to ``app`` unchanged.
    """

    def __init__(self, app: ASGIApp, base_path: str) -> None:
        self.app = app
        self.files = StaticFilesApp(_not_static, base_path)
        # The percent-decoded path's bytes read as latin-1, as PATH_INFO.
        self._prefix = base_path.encode("utf-8")

    def _is_static(self, scope: Scope) -> bool:
        if scope["type"] != "http":
            return False
        return bool(wsgi_environ_path(scope).startswith(self._prefix))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._is_static(scope):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        environ = wsgi_environ(scope)
        started: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            started[:] = [status, headers]
            return _no_write

        def serve() -> Iterable[bytes]:
            return self.files(environ, start_response)

        result = await loop.run_in_executor(None, serve)
        chunks: Iterator[bytes] = iter(result)
        try:
            first = await loop.run_in_executor(None, next, chunks, b"")
            status, headers = started
            await send(
                {
                    "type": "http.response.start",
                    "status": int(status[:3]),
                    "headers": [
                        (name.lower().encode("latin-1"), value.encode("latin-1"))
                        for name, value in headers
                    ],
                }
            )
            chunk = first
            while chunk:
                following = await loop.run_in_executor(None, next, chunks, b"")
                more = bool(following)
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": more}
                )
                chunk = following
            if not first:
                await send({"type": "http.response.body"})
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                await loop.run_in_executor(None, close)


def wsgi_environ_path(scope: Scope) -> bytes:
    """The request's path, percent-decoded once, as bytes (PATH_INFO's bytes)."""
    raw: bytes = scope["raw_path"]
    return unquote_to_bytes(raw) if b"%" in raw else raw

"""Live reload in front of an ASGI application: reserved paths, script injection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from runserver_plus.livereload.middleware import (
    EVENTS_PATH,
    PREFIX,
    SCRIPT_PATH,
    TRIGGER_PATH,
    WORKER_PATH,
    Hub,
    _asset,
    _is_html,
    _is_loopback,
    inject_script,
)
from runserver_plus.server.asgi_scope import (
    QUIET,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
)


class AsgiLiveReload:
    """ASGI middleware: answers live reload's reserved paths and injects the
    client script into complete HTML responses (those with a Content-Length;
    a stream goes through untouched), as ``LiveReloadApp`` does for WSGI."""

    def __init__(self, app: ASGIApp, hub: Hub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(PREFIX) and await self._reserved(path, scope, send):
            return
        await self.app(scope, receive, _Injector(send).send)

    async def _reserved(self, path: str, scope: Scope, send: Send) -> bool:
        if path in (SCRIPT_PATH, WORKER_PATH):
            scope[QUIET] = True
            name = "client.js" if path == SCRIPT_PATH else "worker.js"
            await _respond(
                send, 200, "text/javascript; charset=utf-8", _asset(name), "no-cache"
            )
        elif path == EVENTS_PATH:
            scope[QUIET] = True
            await self._events(send)
        elif path == TRIGGER_PATH:
            await self._trigger(scope, send)
        else:
            return False
        return True

    async def _events(self, send: Send) -> None:
        """The hub's event stream. Its iterator blocks on a queue, so each step
        runs in a worker thread; the hub ends it when the worker stops."""
        headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"no"),
            # The browser reconnects on a connection of its own when the
            # stream ends; keeping this one would hold up a drain.
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        loop = asyncio.get_running_loop()
        stream: Iterator[bytes] = self.hub.stream()
        try:
            while chunk := await loop.run_in_executor(None, next, stream, b""):
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": True}
                )
            await send({"type": "http.response.body"})
        finally:
            # The client left: the thread's next() ends at the next heartbeat
            # or message, and the generator is closed after it.
            with contextlib.suppress(ValueError):  # still running in its thread
                close = getattr(stream, "close", None)
                if close is not None:
                    close()

    async def _trigger(self, scope: Scope, send: Send) -> None:
        """``POST /__runserver_plus__/reload`` from this machine: reload browsers
        (``?css`` swaps stylesheets only)."""
        text = "text/plain; charset=utf-8"
        if scope["method"] != "POST":
            await _respond(send, 405, text, b"Use POST.\n")
            return
        client = scope.get("client") or ("", 0)
        if not _is_loopback(str(client[0])):
            await _respond(send, 403, text, b"Only from this machine.\n")
            return
        css = "css" in scope["query_string"].decode("latin-1").split("&")
        count = self.hub.broadcast({"type": "css" if css else "reload"})
        await _respond(send, 200, text, f"Reloading {count} stream(s).\n".encode())


class _Injector:
    """Wraps ``send``: holds a complete HTML response until its end, then
    sends it with the script tag injected and its length corrected."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._start: Message | None = None
        self._body: list[bytes] = []

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start" and _injectable(message):
            self._start = message
            return
        if self._start is None or kind != "http.response.body":
            await self._send(message)
            return
        self._body.append(bytes(message.get("body", b"")))
        if message.get("more_body", False):
            return
        body = b"".join(self._body)
        start, self._start, self._body = self._start, None, []
        injected = inject_script(body)
        headers = list(start.get("headers", ()))
        if injected is not None:
            body = injected
            headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode("ascii")))
        await self._send({**start, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})


def _injectable(start: Message) -> bool:
    """A complete (Content-Length) HTML response without a content coding."""
    headers = [
        (bytes(k).decode("latin-1"), bytes(v).decode("latin-1"))
        for k, v in start.get("headers", ())
    ]
    complete = any(k.lower() == "content-length" for k, _ in headers)
    return complete and _is_html(headers)


async def _respond(
    send: Send,
    status: int,
    content_type: str,
    body: bytes,
    cache_control: str = "no-store",
) -> None:
    headers = [
        (b"content-type", content_type.encode("ascii")),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"cache-control", cache_control.encode("ascii")),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

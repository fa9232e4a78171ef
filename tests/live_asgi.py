"""The asyncio driver in-process on 127.0.0.1:0, and small ASGI test applications."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import Any

from runserver_plus.config import ServerConfig
from runserver_plus.server.asgi import AsgiServer
from runserver_plus.server.asgi_scope import ASGIApp, Receive, Scope, Send
from runserver_plus.server.sockets import bind_socket
from tests.live import TIMEOUT, Live, serving

LiveAsgiServer = Live[AsgiServer]


@contextlib.contextmanager
def serve_asgi(
    app: ASGIApp,
    *,
    drain_timeout: float | None = None,
    **config: Any,
) -> Iterator[LiveAsgiServer]:
    """Run ``app`` with the asyncio driver on a real socket; stop and drain on
    exit. ``drain_timeout`` is the config's, as ``serve_app``'s."""
    if drain_timeout is not None:
        config["drain_timeout"] = drain_timeout
    settings = ServerConfig(addr="127.0.0.1", port=0, asgi=True, **config)
    sock = bind_socket("127.0.0.1", 0, ipv6=False, backlog=settings.backlog)
    with serving(AsgiServer(sock, app, settings)) as live:
        yield live


class ScopeRecorder:
    """An ASGI app that keeps each scope and the body it read (``scope["test.body"]``)
    and answers with the path; lifespan scopes are refused, as Django does."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"cannot handle {scope['type']}")
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        scope["test.body"] = body
        self.scopes.append(scope)
        answer = body or scope["path"].encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": answer})


class Events:
    """What an application running on the server's loop tells the test thread."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()

    def put(self, item: Any) -> None:
        self.queue.put(item)

    def get(self, timeout: float = TIMEOUT) -> Any:
        return self.queue.get(timeout=timeout)


async def wait_thread_event(event: threading.Event) -> None:
    """Wait, from the server's loop, for an event the test thread sets."""
    await asyncio.get_running_loop().run_in_executor(None, event.wait, TIMEOUT)

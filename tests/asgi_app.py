"""A raw ASGI application for ``ASGI_APPLICATION`` in the command tests."""

from __future__ import annotations

from runserver_plus.server.asgi_scope import Receive, Scope, Send


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body"})

"""Live reload in front of an ASGI application (placeholder, see below)."""

from __future__ import annotations

from runserver_plus.livereload.middleware import Hub
from runserver_plus.server.asgi_scope import ASGIApp, Receive, Scope, Send


class AsgiLiveReload:
    """ASGI middleware: answers live reload's reserved paths, injects the script."""

    def __init__(self, app: ASGIApp, hub: Hub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

"""The ASGI lifespan protocol: startup before serving, shutdown after the drain."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from runserver_plus.server import log
from runserver_plus.server.asgi_scope import ASGI_VERSION, ASGIApp, Message

#: How long the application may take to answer ``lifespan.shutdown``.
SHUTDOWN_TIMEOUT = 3.0  # s


class Lifespan:
    """Runs the application's ``lifespan`` scope, as uvicorn's ``auto`` mode does.

    An application that raises before it answers ``lifespan.startup``
    (Django's handler: "Django can only handle ASGI/HTTP connections, not
    lifespan"; a Channels router without a lifespan route) does not support
    the protocol: the server goes on without it, silently.
    """

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.supported = True
        self.error = ""  # why startup failed, if it did
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._answered = asyncio.Event()
        self._answer = ""
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> bool:
        """Send ``lifespan.startup``; False when the application says it failed."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._inbox.put({"type": "lifespan.startup"})
        await self._wait_answer(None)
        return self._answer != "lifespan.startup.failed"

    async def shutdown(self) -> None:
        """Send ``lifespan.shutdown`` and wait a bounded time for the answer."""
        if self._task is None:
            return
        if self.supported and not self._task.done():
            self._answered.clear()
            await self._inbox.put({"type": "lifespan.shutdown"})
            await self._wait_answer(SHUTDOWN_TIMEOUT)
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _wait_answer(self, timeout: float | None) -> None:
        assert self._task is not None
        answered = asyncio.ensure_future(self._answered.wait())
        try:
            await asyncio.wait(
                {answered, self._task},
                timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            answered.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answered

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except Exception:  # noqa: BLE001 - an app without lifespan raises anything
            if not self._answer:
                self.supported = False  # raised before answering: unsupported
            else:
                log.server_logger.exception("Exception in the lifespan protocol")

    async def _receive(self) -> Message:
        return await self._inbox.get()

    async def _send(self, message: Message) -> None:
        kind = str(message.get("type", ""))
        self._answer = kind
        if kind == "lifespan.startup.failed":
            self.error = str(message.get("message", ""))
        elif kind == "lifespan.shutdown.failed":
            log.server_logger.error(
                "The application failed to shut down: %s", message.get("message", "")
            )
        self._answered.set()

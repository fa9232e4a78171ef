"""The asyncio driver: serve an ASGI application on a listening socket, then drain."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import threading
import time
import traceback
from typing import Any

from runserver_plus.config import ServerConfig
from runserver_plus.server.asgi_http import HttpConnection, HttpSettings
from runserver_plus.server.asgi_scope import ASGIApp
from runserver_plus.server.lifespan import Lifespan
from runserver_plus.server.sockets import bound_port
from runserver_plus.server.websocket import WebSocketHandler

#: How long the loop may take to end once drained (lifespan shutdown included).
LOOP_END_TIMEOUT = 5.0  # s


class AsgiServer:
    """Serve an ASGI application from an asyncio loop in a thread of its own.

    The runner drives it as it drives the threaded ``Server``:
    ``serve_forever()`` returns once ``shutdown()`` stopped the accepting;
    ``drain(timeout)`` then closes idle connections, waits for busy ones and
    breaks off the rest, and the application's lifespan shutdown runs.
    """

    def __init__(
        self,
        sock: socket.socket,
        app: ASGIApp,
        config: ServerConfig,
    ) -> None:
        self.sock = sock
        self.app = app
        self.config = config
        self.port = bound_port(sock)
        self.state: dict[str, Any] = {}
        self.settings = HttpSettings(
            app=app,
            idle_timeout=config.idle_timeout,
            read_timeout=config.read_timeout,
            state=self.state,
            websocket=WebSocketHandler(app, config.websocket_max_message, self.state),
        )
        self.loop = asyncio.new_event_loop()
        self._connections: set[HttpConnection] = set()
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._drained = asyncio.Event()
        self._not_accepting = threading.Event()
        self._thread = threading.Thread(
            target=self._run_loop, name="runserver_plus-asgi", daemon=True
        )

    # --- control, from the runner's threads --------------------------------------

    def serve_forever(self) -> None:
        """Start the loop's thread; return once it no longer accepts."""
        self._thread.start()
        self._not_accepting.wait()

    def shutdown(self) -> None:
        """Stop accepting; safe to call from any thread, more than once."""
        with contextlib.suppress(RuntimeError):  # the loop has ended already
            self.loop.call_soon_threadsafe(self._stopping.set)

    def drain(self, timeout: float) -> bool:
        """Let busy connections finish for up to ``timeout``; True if all did."""
        if not self._thread.is_alive():
            return True
        try:
            future = asyncio.run_coroutine_threadsafe(self._drain(timeout), self.loop)
        except RuntimeError:
            return True  # the loop ended meanwhile
        try:
            finished = future.result(timeout + LOOP_END_TIMEOUT)
        finally:
            self._thread.join(LOOP_END_TIMEOUT)
        return finished

    # --- the loop's thread ------------------------------------------------------------

    def _run_loop(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        finally:
            self._not_accepting.set()
            try:
                _cancel_leftovers(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                # Not shutdown_default_executor(): a blocked sync view must not
                # hold the exit; its thread is a daemon.
                loop.close()

    async def _main(self) -> None:
        lifespan = Lifespan(self.app, self.state)
        try:
            if not await lifespan.startup():
                sys.stderr.write(
                    f"The application's lifespan startup failed: {lifespan.error}\n"
                )
                return
            server = await asyncio.start_server(
                self._connected, sock=self.sock, backlog=self.config.backlog
            )
            try:
                await self._stopping.wait()
            finally:
                server.close()  # stop accepting; the listening socket closes
                self._not_accepting.set()
            await self._drained.wait()
        finally:
            await lifespan.shutdown()

    async def _connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connection = HttpConnection(reader, writer, self.settings)
        self._connections.add(connection)
        if self._stopping.is_set():
            connection.close_if_idle()
        try:
            await connection.serve()
        except Exception:  # noqa: BLE001 - a bug: this connection ends, others go on
            sys.stderr.write(f"Exception while serving {connection.client}:\n")
            traceback.print_exc(file=sys.stderr)
            connection.transport.abort()
        finally:
            self._connections.discard(connection)
            self._changed.set()

    async def _drain(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for connection in list(self._connections):
            connection.close_if_idle()
        while self._connections:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        late = list(self._connections)
        for connection in late:
            connection.abort()
        self._drained.set()
        return not late


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what still runs (connections broken off by the drain) and let
    each task see its cancellation."""
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))

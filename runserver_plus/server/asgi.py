"""The asyncio driver: serve an ASGI application on a listening socket, then drain."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import socket
import sys
import threading
import time
import traceback
from typing import Any

from runserver_plus.config import ServerConfig
from runserver_plus.server import asgi_tls, log
from runserver_plus.server.asgi_http import HttpConnection, HttpSettings
from runserver_plus.server.asgi_scope import ASGIApp
from runserver_plus.server.lifespan import Lifespan
from runserver_plus.server.linger import LINGER_AT_EXIT, Lingerer
from runserver_plus.server.sockets import bound_port
from runserver_plus.server.state import ABORT_AFTER, StopClock
from runserver_plus.server.websocket import WebSocketHandler
from runserver_plus.server.wsgi import server_name
from runserver_plus.tls.context import server_context

#: How long the loop may take to end once drained (lifespan shutdown included).
LOOP_END_TIMEOUT = 2.0  # s
#: How long accepting pauses when the process is out of file descriptors.
ACCEPT_PAUSE = 0.1  # s
#: Connections taken per wake-up of the listening socket, as asyncio does.
ACCEPT_BATCH = 100
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class AsgiServer:
    """Serve an ASGI application from an asyncio loop in a thread of its own.

    The runner drives it as it drives the threaded ``Server``:
    ``serve_forever()`` returns once ``shutdown()`` stopped the accepting;
    ``drain(timeout)`` then waits for the connections and breaks off the
    rest, and the application's lifespan shutdown runs.

    The drain is the threaded server's: from ``shutdown()`` on nothing more
    is accepted (a new worker takes new connections from the shared
    backlog) and every response says ``Connection: close``. Open connections
    are kept until the deadline: a request that arrives on one is answered,
    then the connection closes; one that stays idle until the deadline is
    closed then. Closes linger (``Lingerer``). WebSockets are closed with
    1012 at once.
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
        self.clock = StopClock()
        self._lingerer = Lingerer()
        #: Made here, in the process that serves, from the files the command chose.
        self._tls = (
            server_context(config.tls_cert, config.tls_key) if config.https else None
        )
        self.settings = HttpSettings(
            app=app,
            idle_timeout=config.idle_timeout,
            read_timeout=config.read_timeout,
            state=self.state,
            websocket=WebSocketHandler(app, config.websocket_max_message, self.state),
            stop=self.clock,
            lingerer=self._lingerer,
            https_authority=(
                f"{server_name(config.addr)}:{self.port}" if config.https else None
            ),
        )
        self.loop = asyncio.new_event_loop()
        self._connections: set[HttpConnection] = set()
        #: One per accepted socket, from its accept to its close.
        self._tasks: set[asyncio.Task[None]] = set()
        self._full = False  # at max_connections: not listening
        self._paused = False  # out of descriptors: not listening for a moment
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

    def shutdown(self, drain_timeout: float | None = None) -> None:
        """Stop accepting; open connections get ``drain_timeout`` (default: the
        config's) to end. Safe to call from any thread, more than once."""
        self.clock.stop(
            self.config.drain_timeout if drain_timeout is None else drain_timeout
        )
        with contextlib.suppress(RuntimeError):  # the loop has ended already
            self.loop.call_soon_threadsafe(self._stopping.set)

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the open connections to end (see the
        class docstring), then break off the rest; let lingering closes end.

        Returns True when every connection finished in time.
        """
        try:
            return self._drain_loop(timeout)
        finally:
            self._lingerer.finish(LINGER_AT_EXIT)

    def _drain_loop(self, timeout: float) -> bool:
        if not self._thread.is_alive():
            return True
        try:
            future = asyncio.run_coroutine_threadsafe(self._drain(timeout), self.loop)
        except RuntimeError:
            return True  # the loop ended meanwhile
        try:
            finished = future.result(timeout + LOOP_END_TIMEOUT)
        except concurrent.futures.TimeoutError:
            # The loop did not answer: its thread is a daemon, so the
            # process still exits; the stop must not end in a traceback.
            finished = False
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
            loop = asyncio.get_running_loop()
            self.sock.setblocking(False)
            self._listen(loop)
            try:
                await self._stopping.wait()
            finally:
                with contextlib.suppress(ValueError, OSError):  # never listened
                    loop.remove_reader(self.sock)
                self.sock.close()  # the supervisor's copy keeps the backlog
                self._not_accepting.set()
            for connection in list(self._connections):
                connection.stop()
            await self._drained.wait()
        finally:
            await lifespan.shutdown()

    # Accepting: a reader callback, not asyncio's server, so that every
    # accepted socket has its task (which the drain waits for) at once.
    # asyncio's server sets each connection up in a task of its own, and a
    # stop that cancels an accept which already happened loses its socket.

    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._stopping.is_set():
            loop.add_reader(self.sock, self._accept, loop)

    def _accept(self, loop: asyncio.AbstractEventLoop) -> None:
        for _ in range(ACCEPT_BATCH):
            if len(self._tasks) >= self.config.max_connections:
                loop.remove_reader(self.sock)  # the rest wait in the backlog
                self._full = True
                return
            try:
                client, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as error:
                if error.errno not in OUT_OF_RESOURCES:
                    raise
                if not self._paused:
                    log.log_accept_paused(error)
                self._paused = True
                loop.remove_reader(self.sock)
                loop.call_later(ACCEPT_PAUSE, self._listen, loop)
                return
            self._paused = False
            task = loop.create_task(self._serve_socket(client))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._changed.set()
        if self._full and len(self._tasks) < self.config.max_connections:
            self._full = False
            self._listen(task.get_loop())

    async def _serve_socket(self, client: socket.socket) -> None:
        try:
            client.setblocking(False)
            # asyncio sets this only on sockets whose proto says TCP, and an
            # accepted one says 0: without it, TLS's close_notify (a small
            # write after the response) waits for a delayed ACK, 40 ms.
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is None:
                reader, writer = await asyncio.open_connection(sock=client)
            else:
                streams = await asgi_tls.open_streams(
                    client, self._tls, self.config.read_timeout
                )
                if streams is None:
                    client.close()  # nothing came before the read timeout
                    return
                reader, writer = streams
        except OSError:
            client.close()  # reset before it could be set up, or its TLS failed
            return
        except asyncio.CancelledError:
            client.close()
            raise
        await self._connected(reader, writer)

    async def _connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connection = HttpConnection(reader, writer, self.settings)
        self._connections.add(connection)
        try:
            await connection.serve()
        except Exception:  # noqa: BLE001 - a bug: this connection ends, others go on
            sys.stderr.write(f"Exception while serving {connection.client}:\n")
            traceback.print_exc(file=sys.stderr)
            connection.transport.abort()
        finally:
            self._connections.discard(connection)

    async def _drain(self, timeout: float) -> bool:
        # Idle connections end by themselves at the stop's deadline
        # (``HttpConnection.stop``), gracefully; busy ones are broken off a
        # moment later.
        deadline = time.monotonic() + timeout + ABORT_AFTER
        while self._tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        late = bool(self._tasks)
        for connection in list(self._connections):
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

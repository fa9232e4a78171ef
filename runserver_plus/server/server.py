"""Serve on a listening socket: both modes, the bounds, and the drain."""

from __future__ import annotations

import contextlib
import math
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import cast

from runserver_plus.config import ServerConfig
from runserver_plus.server.accept import AcceptGate
from runserver_plus.server.connection import Connection, ConnectionSettings
from runserver_plus.server.linger import LINGER_AT_EXIT, Lingerer
from runserver_plus.server.loop import EventLoop
from runserver_plus.server.sockets import bound_port
from runserver_plus.server.state import ABORT_AFTER, ServerState
from runserver_plus.server.wsgi import WSGIApp, base_environ, server_name
from runserver_plus.tls.context import server_context


class Server:
    """Serve a WSGI app on an already listening socket.

    ``serve_forever()`` serves until ``shutdown()``: with threading, the
    calling thread watches an event loop (loop.py) that runs in others;
    without, it serves one request at a time itself. ``drain()`` then lets
    the open connections finish.

    The drain: from ``shutdown()`` on, nothing more is accepted (a new worker
    takes new connections from the shared backlog), and every response says
    ``Connection: close``. Open connections are kept until the deadline: a
    request that arrives on one is answered, then the connection closes; one
    that stays idle until the deadline is closed then. Every close is a
    lingering one (``Lingerer``), so no client is reset with a request or a
    response in flight.
    """

    def __init__(
        self,
        sock: socket.socket,
        app: WSGIApp,
        config: ServerConfig,
        *,
        on_thread_exit: Callable[[], None] | None = None,
    ) -> None:
        self.sock = sock
        self.app = app
        self.config = config
        self.port = bound_port(sock)
        self.state = ServerState(config.max_threads, on_thread_exit)
        self._lingerer = Lingerer()
        self._name = server_name(config.addr)
        #: Made here, in the process that serves, from the files the command chose.
        self._tls = (
            server_context(config.tls_cert, config.tls_key) if config.https else None
        )

    # --- control, from any thread ------------------------------------------

    def shutdown(self, drain_timeout: float | None = None) -> None:
        """Stop accepting; open connections get ``drain_timeout`` (default: the
        config's) to end. Safe to call from a signal handler or another thread."""
        self.state.stop(
            self.config.drain_timeout if drain_timeout is None else drain_timeout
        )

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the open connections to end (see the
        class docstring), then break off the rest; let lingering closes end.

        Returns True when every connection finished in time.
        """
        done = self.state.wait_for_connections(timeout + ABORT_AFTER)
        self._lingerer.finish(LINGER_AT_EXIT)
        return done

    # --- the loop -------------------------------------------------------------

    def serve_forever(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            self.sock.setblocking(False)
            if self.config.use_threading:
                EventLoop(self, selector).run()
            else:
                selector.register(self.state.wake_socket, selectors.EVENT_READ)
                self._serial_loop(selector)
        finally:
            selector.close()
            self.sock.close()
            self.state.close()

    # --- for the event loop ---------------------------------------------------------

    def accept_connection(self) -> Connection | None:
        """A new connection, or None when there was none to take after all;
        ``OSError`` when the process is out of file descriptors."""
        accepted = self._accept()
        return None if accepted is None else self._connection(*accepted)

    def close(self, connection: Connection) -> None:
        """Close a connection that is done with, and stop tracking it."""
        connection.close()
        self.state.untrack(connection)

    def serve_alone(self, connection: Connection, *, threaded: bool = False) -> None:
        """Serve the connection with blocking reads until it ends, in this
        thread or in a new one: what the loop hands on when it stops."""
        if not threaded:
            try:
                connection.serve()
            finally:
                self.state.untrack(connection)
            return

        def run() -> None:
            try:
                self.serve_alone(connection)
            finally:
                self.state.thread_done(slot=False)

        threading.Thread(target=run, name=self.state.thread_name(), daemon=True).start()

    # --- connections ---------------------------------------------------------

    def _settings(self, peer: tuple[str, int]) -> ConnectionSettings:
        return ConnectionSettings(
            base_environ=base_environ(
                self._name,
                self.port,
                str(peer[0]),
                multithread=True,
                url_scheme=self.config.scheme,
            ),
            idle_timeout=self.config.idle_timeout,
            read_timeout=self.config.read_timeout,
            keep_alive=self.config.use_threading,
            stop=self.state.clock,
            lingerer=self._lingerer,
            tls=self._tls,
        )

    def _accept(self) -> tuple[socket.socket, tuple[str, int]] | None:
        try:
            client, peer = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return None
        try:
            client.setblocking(True)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # reset already (some systems say EINVAL then)
            client.close()
            return None
        return client, peer

    def _serial_loop(self, selector: selectors.BaseSelector) -> None:
        """One request at a time; a connection is served only once it has sent
        something, so an idle or preconnected socket never blocks the others.
        After ``shutdown()`` it drains: accepts nothing more, serves what the
        waiting connections send until the deadline, and then returns."""
        waiting: dict[socket.socket, float] = {}
        listener = AcceptGate(selector, self.sock, None)
        listener.start()
        idle_timeout = self.config.idle_timeout
        try:
            while True:
                now = time.monotonic()
                close_at = self.state.clock.deadline or math.inf
                for client, since in list(waiting.items()):
                    if now - since > idle_timeout or now >= close_at:
                        selector.unregister(client)
                        del waiting[client]
                        self._lingerer.close(client)
                if self.state.stopping.is_set():
                    listener.stop()
                    if not waiting:
                        break
                    wake_at = close_at
                else:
                    wake_at = listener.resume(
                        room=len(waiting) < self.config.max_connections
                    )
                if waiting:
                    wake_at = min(wake_at, min(waiting.values()) + idle_timeout)
                timeout = None if wake_at == math.inf else max(0.0, wake_at - now)
                for key, _ in selector.select(timeout):
                    if key.fileobj is self.sock:
                        if not self.state.stopping.is_set():
                            self._accept_waiting(selector, listener, waiting)
                    elif key.fileobj is self.state.wake_socket:
                        with contextlib.suppress(OSError):
                            self.state.wake_socket.recv(4096)
                    else:
                        client = cast(socket.socket, key.fileobj)
                        selector.unregister(client)
                        del waiting[client]
                        self._serve_inline(client, key.data)
        finally:
            for client in waiting:
                self._lingerer.close(client)

    def _accept_waiting(
        self,
        selector: selectors.BaseSelector,
        listener: AcceptGate,
        waiting: dict[socket.socket, float],
    ) -> None:
        """Take a connection into ``--nothreading``'s waiting room."""
        try:
            accepted = self._accept()
        except OSError as error:
            listener.failed(error)
            return
        listener.accepted()
        if accepted is None:
            return
        waiting[accepted[0]] = time.monotonic()
        selector.register(accepted[0], selectors.EVENT_READ, accepted[1])
        if len(waiting) >= self.config.max_connections:
            listener.stop()  # further connections wait in the backlog

    def _serve_inline(self, client: socket.socket, peer: tuple[str, int]) -> None:
        connection = self._connection(client, peer)
        if connection is None:
            return
        try:
            connection.serve()
        finally:
            self.state.untrack(connection)
            self.state.thread_resources_done()

    def _connection(
        self, client: socket.socket, peer: tuple[str, int]
    ) -> Connection | None:
        """A tracked connection for an accepted socket; None, with the socket
        closed, when it was reset before its options could be set."""
        try:
            connection = Connection(client, peer, self.app, self._settings(peer))
        except OSError:
            client.close()
            return None
        self.state.track(connection)
        return connection

"""The accept loop: connection threads (bounded), one-at-a-time mode, and the drain."""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import cast

from runserver_plus import output
from runserver_plus.config import ServerConfig
from runserver_plus.server.connection import Connection, ConnectionSettings
from runserver_plus.server.sockets import bound_port
from runserver_plus.server.wsgi import WSGIApp, base_environ

#: How often the accept loop looks again when all connection threads are busy.
_SLOT_POLL = 0.05  # s
#: How long the drain waits for the queued access lines to be written.
_ACCESS_LOG_FLUSH = 1.0  # s


def server_name(addr: str) -> str:
    """``SERVER_NAME`` without Django's reverse DNS lookup, which can take seconds."""
    try:
        if ipaddress.ip_address(addr).is_loopback:
            return "localhost"
    except ValueError:
        pass  # a host name: use it as given
    return addr or "localhost"


class Server:
    """Serve a WSGI app on an already listening socket.

    ``serve_forever()`` runs the accept loop in the calling thread until
    ``shutdown()``; ``drain()`` then lets in-flight requests finish.
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
        self._on_thread_exit = on_thread_exit
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._active: set[Connection] = set()
        self._active_changed = threading.Condition()
        self._slots = threading.BoundedSemaphore(config.max_threads)
        self._names = itertools.count(1)
        self._name = server_name(config.addr)
        #: Connection threads hand their access lines to one writer; one at a
        #: time (--nothreading) writes its own.
        self._access_log = output.AccessLog() if config.use_threading else None

    # --- control, from any thread ------------------------------------------

    def shutdown(self) -> None:
        """Stop accepting; safe to call from a signal handler or another thread."""
        self._stopping.set()
        with contextlib.suppress(OSError):  # already woken and closed
            self._wake_w.send(b"x")

    def drain(self, timeout: float) -> bool:
        """Close idle connections and wait up to ``timeout`` for busy ones.

        Returns True when every connection finished in time; the rest are
        broken off.
        """
        deadline = time.monotonic() + timeout
        with self._active_changed:
            for connection in self._active:
                connection.close_if_idle()
            while self._active:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._active_changed.wait(remaining)
            late = list(self._active)
        for connection in late:
            connection.abort()
        if self._access_log is not None:
            self._access_log.close(_ACCESS_LOG_FLUSH)
        return not late

    # --- the loop -------------------------------------------------------------

    def serve_forever(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            self.sock.setblocking(False)
            selector.register(self.sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            if self.config.use_threading:
                self._threaded_loop(selector)
            else:
                self._serial_loop(selector)
        finally:
            selector.close()
            self.sock.close()
            self._wake_r.close()
            self._wake_w.close()

    def _settings(self, peer: tuple[str, int]) -> ConnectionSettings:
        return ConnectionSettings(
            base_environ=base_environ(
                self._name, self.port, str(peer[0]), multithread=True
            ),
            idle_timeout=self.config.idle_timeout,
            read_timeout=self.config.read_timeout,
            keep_alive=self.config.use_threading,
            log_request=(
                output.log_request
                if self._access_log is None
                else self._access_log.log_request
            ),
        )

    def _accept(self) -> tuple[socket.socket, tuple[str, int]] | None:
        try:
            client, peer = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return None
        client.setblocking(True)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, peer

    def _threaded_loop(self, selector: selectors.BaseSelector) -> None:
        while not self._stopping.is_set():
            # Take a slot before accepting: when all are busy, new connections
            # wait in the backlog instead of piling up threads.
            if not self._slots.acquire(timeout=_SLOT_POLL):
                continue
            accepted = None
            while accepted is None and not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self.sock:
                        accepted = self._accept()
            if accepted is None:
                self._slots.release()
                return
            connection = Connection(
                accepted[0], accepted[1], self.app, self._settings(accepted[1])
            )
            self._track(connection)
            thread = threading.Thread(
                target=self._run_threaded,
                args=(connection,),
                name=f"runserver_plus-connection-{next(self._names)}",
                daemon=True,
            )
            thread.start()

    def _run_threaded(self, connection: Connection) -> None:
        try:
            connection.serve()
        finally:
            self._untrack(connection)
            self._slots.release()
            if self._on_thread_exit is not None:
                self._on_thread_exit()

    def _serial_loop(self, selector: selectors.BaseSelector) -> None:
        """One request at a time; a connection is served only once it has sent
        something, so an idle or preconnected socket never blocks the others."""
        waiting: dict[socket.socket, float] = {}
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                for client, since in list(waiting.items()):
                    if now - since > self.config.idle_timeout:
                        selector.unregister(client)
                        del waiting[client]
                        client.close()
                timeout = (
                    min(waiting.values()) + self.config.idle_timeout - now
                    if waiting
                    else None
                )
                for key, _ in selector.select(timeout):
                    if key.fileobj is self.sock:
                        accepted = self._accept()
                        if accepted is not None:
                            waiting[accepted[0]] = time.monotonic()
                            selector.register(
                                accepted[0], selectors.EVENT_READ, accepted[1]
                            )
                    elif key.fileobj is not self._wake_r:
                        client = cast(socket.socket, key.fileobj)
                        selector.unregister(client)
                        del waiting[client]
                        self._serve_inline(client, key.data)
                        if self._stopping.is_set():
                            break
        finally:
            for client in waiting:
                client.close()

    def _serve_inline(self, client: socket.socket, peer: tuple[str, int]) -> None:
        connection = Connection(client, peer, self.app, self._settings(peer))
        self._track(connection)
        try:
            connection.serve()
        finally:
            self._untrack(connection)
            if self._on_thread_exit is not None:
                self._on_thread_exit()

    def _track(self, connection: Connection) -> None:
        with self._active_changed:
            self._active.add(connection)
            if self._stopping.is_set():
                connection.close_if_idle()

    def _untrack(self, connection: Connection) -> None:
        with self._active_changed:
            self._active.discard(connection)
            self._active_changed.notify_all()

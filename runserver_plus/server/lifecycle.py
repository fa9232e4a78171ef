"""Serving until a stop, then draining: one life cycle for both servers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

from runserver_plus.config import ServerConfig
from runserver_plus.shutdown import SIGNAL_CHECK, StopRequested

if TYPE_CHECKING:
    from runserver_plus.server.asgi_scope import ASGIApp
    from runserver_plus.server.wsgi import WSGIApp


class Serving(Protocol):
    """What the life cycle needs of a server: the threaded one (server.py)
    or the asyncio one (asgi.py)."""

    config: ServerConfig

    def serve_forever(self) -> None:
        """Serve until ``shutdown()``."""

    def shutdown(self, drain_timeout: float | None = None) -> None:
        """Stop accepting; open connections get ``drain_timeout`` to end."""

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the open connections; break off the rest."""


def make_server(
    sock: socket.socket,
    app: WSGIApp | ASGIApp,
    config: ServerConfig,
    *,
    on_thread_exit: Callable[[], None] | None = None,
) -> Serving:
    """The threaded WSGI server, or the asyncio driver in ASGI mode."""
    # Imported here: the supervisor never serves the project, so its start
    # does not pay for the HTTP stack, and WSGI mode not for asyncio's.
    if config.asgi:
        from runserver_plus.server.asgi import AsgiServer  # noqa: PLC0415

        return AsgiServer(sock, cast("ASGIApp", app), config)
    from runserver_plus.server.server import Server  # noqa: PLC0415

    return Server(sock, cast("WSGIApp", app), config, on_thread_exit=on_thread_exit)


def run(
    server: Serving,
    stop: threading.Event,
    drain_timeout: Callable[[], float] | None = None,
) -> None:
    """Serve until ``stop`` is set or a stop signal arrives (see
    ``shutdown.stop_signals``), then drain and return.

    ``drain_timeout`` chooses the drain bound when the stop comes (default:
    the config's).
    """

    def accept_loop() -> None:
        try:
            server.serve_forever()
        finally:
            stop.set()

    thread = threading.Thread(
        target=accept_loop, name="runserver_plus-accept", daemon=True
    )
    thread.start()
    try:
        while not stop.wait(SIGNAL_CHECK):
            pass  # a stop signal's handler runs here, at the latest
    except StopRequested:
        stop.set()
    timeout = drain_timeout() if drain_timeout else server.config.drain_timeout
    server.shutdown(timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            thread.join(max(0.0, deadline - time.monotonic()))
            server.drain(max(0.0, deadline - time.monotonic()))
            return
        except StopRequested:
            # A stop signal that arrives when we are already stopping (a
            # worker told by its supervisor first, then reached by the
            # terminal's Ctrl-C): keep draining. A second one raises
            # KeyboardInterrupt and cuts the drain short.
            continue

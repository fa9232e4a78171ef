"""Picks the mode (single process, supervisor, worker) and runs the server in it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Protocol, cast

from django.utils import autoreload
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV

from runserver_plus import banner
from runserver_plus.config import ServerConfig
from runserver_plus.reloader.control import take_worker_marker
from runserver_plus.server.sockets import bind_error_message, bind_socket

if TYPE_CHECKING:
    from runserver_plus.server.asgi import AsgiServer
    from runserver_plus.server.asgi_scope import ASGIApp
    from runserver_plus.server.server import Server
    from runserver_plus.server.wsgi import WSGIApp

#: The supervisor passes the listening socket as an inherited descriptor.
SUPERVISOR_SUPPORTED = os.name == "posix"

#: Signals that stop the server gracefully.
STOP_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGBREAK")
    if hasattr(signal, name)
)


class Host(Protocol):
    """What the runner needs from the management command."""

    def load_application(self) -> WSGIApp | ASGIApp:
        """Run the checks and build the handler, the ASGI one when
        ``config.asgi`` (may raise)."""

    def announce(self, port: int) -> None:
        """Print the banner for a server listening on ``port``."""

    def write_out(self, text: str) -> None: ...

    def write_err(self, text: str) -> None: ...

    def close_thread_resources(self) -> None:
        """Release what a finished connection thread held (database connections)."""


class BindFailed(SystemExit):
    """Exit 1 after printing Django's ``Error: ...`` line for a failed bind."""


def run(config: ServerConfig, host: Host) -> None:
    """Serve until stopped, in the mode the config asks for."""
    if not config.use_reloader:
        run_single(config, host)
        return
    marker = take_worker_marker()
    if marker is not None:
        from runserver_plus.reloader.worker import run_worker  # noqa: PLC0415

        run_worker(config, host, *marker)
    elif os.environ.get(DJANGO_AUTORELOAD_ENV) == "true" or not SUPERVISOR_SUPPORTED:
        # Django's own reloader started us (after django.setup() failed at the
        # first start, Django ran its core runserver as the parent), or the
        # platform cannot hand a socket to a child: let Django's reloader
        # restart a single-process server.
        autoreload.run_with_reloader(_run_in_django_reloader, config=config, host=host)
    else:
        from runserver_plus.reloader.supervisor import Supervisor  # noqa: PLC0415

        banner.enable_windows_colours()
        sock = bind_or_exit(config, host)
        Supervisor(config, sock, host.write_err).run()


def run_single(config: ServerConfig, host: Host) -> None:
    """``--noreload``: checks, bind, banner and serve in this one process."""
    banner.enable_windows_colours()
    # Stop signals are handled from the start, so Ctrl-C right after the
    # banner (or during the checks) still ends quietly with exit code 0.
    with stop_signals():
        try:
            app = host.load_application()
            sock = bind_or_exit(config, host)
            host.announce(sock.getsockname()[1])
            serve(sock, app, config, host, stop=threading.Event())
        except StopRequested:
            pass  # stopped before serving began: nothing to drain
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: leave without waiting for requests


def _run_in_django_reloader(config: ServerConfig, host: Host) -> None:
    """``run_single`` on Django's reloader thread, where SystemExit would only
    end the thread: a failed bind ends the process, as Django's does."""
    try:
        run_single(config, host)
    except BindFailed:
        os._exit(1)


def bind_or_exit(config: ServerConfig, host: Host) -> socket.socket:
    """Bind the listening socket or exit 1 with Django's message."""
    try:
        return bind_socket(
            config.addr, config.port, ipv6=config.use_ipv6, backlog=config.backlog
        )
    except OSError as error:
        host.write_err(f"Error: {bind_error_message(error)}")
        raise BindFailed(1) from None


def serve(
    sock: socket.socket,
    app: WSGIApp | ASGIApp,
    config: ServerConfig,
    host: Host,
    *,
    stop: threading.Event,
    drain_timeout: Callable[[], float] | None = None,
) -> None:
    """Serve on ``sock`` until ``stop`` is set (or a stop signal arrives, see
    ``stop_signals``), then drain and return.

    ``drain_timeout`` chooses the drain bound when the stop comes (default:
    the config's).
    """
    server = _server(sock, app, config, host)

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
        try:
            stop.wait()
        except StopRequested:
            stop.set()
        timeout = drain_timeout() if drain_timeout else config.drain_timeout
        server.shutdown()
        deadline = time.monotonic() + timeout
        while True:
            try:
                thread.join(max(0.0, deadline - time.monotonic()))
                server.drain(max(0.0, deadline - time.monotonic()))
                break
            except StopRequested:
                # A stop signal that arrives when we are already stopping (a
                # worker told by its supervisor first, then reached by the
                # terminal's Ctrl-C): keep draining. A second one raises
                # KeyboardInterrupt and cuts the drain short.
                continue
    finally:
        if config.shutdown_message:
            host.write_out(config.shutdown_message)


def _server(
    sock: socket.socket, app: WSGIApp | ASGIApp, config: ServerConfig, host: Host
) -> Server | AsgiServer:
    """The threaded WSGI server, or the asyncio driver in ASGI mode."""
    # Imported here: the supervisor never serves the project, so its start
    # does not pay for the HTTP stack.
    if config.asgi:
        from runserver_plus.server.asgi import AsgiServer  # noqa: PLC0415

        return AsgiServer(sock, cast("ASGIApp", app), config)
    from runserver_plus.server.server import Server  # noqa: PLC0415

    wsgi_app = cast("WSGIApp", app)
    return Server(sock, wsgi_app, config, on_thread_exit=host.close_thread_resources)


class StopRequested(BaseException):
    """Raised in the main thread by the first stop signal.

    An exception rather than ``Event.set()`` in the handler: the handler runs
    on the main thread between bytecodes, possibly while that thread holds the
    very lock ``set()`` needs. A ``BaseException``, like ``KeyboardInterrupt``,
    so that ``except Exception`` does not swallow it.
    """


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """SIGINT/SIGTERM raise ``StopRequested``; a second one ``KeyboardInterrupt``
    (stop draining now)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals only reach the main thread; the caller stops us
        return
    received = 0

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal received
        received += 1
        if received > 1:
            raise KeyboardInterrupt
        raise StopRequested

    previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}
    for signum in STOP_SIGNALS:
        previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)

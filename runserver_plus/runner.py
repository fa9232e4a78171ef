"""Picks the mode (single process, supervisor, worker) and runs the server in it."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.utils import autoreload
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV

from runserver_plus import banner
from runserver_plus.config import Host, ServerConfig
from runserver_plus.reloader import procstate
from runserver_plus.reloader.control import take_worker_marker
from runserver_plus.server.sockets import bind_error_message, bind_socket
from runserver_plus.shutdown import StopRequested, stop_signals

if TYPE_CHECKING:
    from runserver_plus.server.asgi_scope import ASGIApp
    from runserver_plus.server.wsgi import WSGIApp

#: The supervisor passes the listening socket as an inherited descriptor.
SUPERVISOR_SUPPORTED = os.name == "posix"


class BindFailed(SystemExit):
    """Exit 1 after printing Django's ``Error: ...`` line for a failed bind."""


def run(config: ServerConfig, host: Host) -> None:
    """Serve until stopped, in the mode the config asks for."""
    procstate.freeze()  # thawed once serving (or watching)
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
            procstate.thaw()
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
    """Serve on ``sock`` until ``stop`` is set or a stop signal arrives, drain,
    and say so when the config has a message for it (``testserver``)."""
    # Imported here: the supervisor never serves the project, so its start
    # does not pay for the HTTP stack.
    from runserver_plus.server import lifecycle  # noqa: PLC0415

    server = lifecycle.make_server(
        sock, app, config, on_thread_exit=host.close_thread_resources
    )
    try:
        lifecycle.run(server, stop, drain_timeout)
    finally:
        if config.shutdown_message:
            host.write_out(config.shutdown_message)

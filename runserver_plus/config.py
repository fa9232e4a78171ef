"""The one frozen options object that crosses every layer below the command."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from runserver_plus.server.asgi_scope import ASGIApp
    from runserver_plus.server.wsgi import WSGIApp

# Ports are 16-bit; Django only finds out at bind() time, with a traceback.
MAX_PORT = 65535

#: A statement shape run this many times in one request is warned about.
DEFAULT_SQL_REPEAT_THRESHOLD = 10

#: The largest WebSocket message an application is sent; larger -> close 1009.
DEFAULT_WEBSOCKET_MAX_MESSAGE = 1024 * 1024  # bytes

#: Addresses that mean "every interface" in Django's addrport forms.
WILDCARD_ADDRESSES = frozenset({"0", "0.0.0.0", "::"})


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Everything the runner, the server and the reloader need to know.

    Built once by the command from its parsed options and the settings; the
    layers below never read ``settings`` or ``options`` themselves.
    """

    addr: str
    port: int
    use_ipv6: bool = False
    #: The address as the banner shows it (``[::1]``, ``0.0.0.0``, ...).
    display_addr: str = ""
    use_threading: bool = True
    #: Serve the project's ASGI application with the asyncio driver.
    asgi: bool = False
    #: ASGI mode: the largest WebSocket message taken from a client.
    websocket_max_message: int = DEFAULT_WEBSOCKET_MAX_MESSAGE  # bytes
    use_reloader: bool = True
    #: Whether the project runs with DEBUG on (error pages, exposure warning).
    debug: bool = True
    #: Printed on stdout when the server stops (``testserver`` sets it).
    shutdown_message: str = ""

    # Server limits and timeouts.
    #: How long a keep-alive connection may sit idle between requests.
    idle_timeout: float = 15.0  # s
    #: How long one read of a request's head or body may wait for bytes.
    read_timeout: float = 10.0  # s
    #: How long in-flight requests may run on after a stop was asked for.
    drain_timeout: float = 3.0  # s
    #: Upper bound on the threads serving requests at once; further requests
    #: wait for one to end.
    max_threads: int = 256
    #: Upper bound on open connections; further ones wait in the backlog.
    max_connections: int = 512
    #: Listen backlog: requests queue here while a worker restarts.
    backlog: int = 1024

    # Reloader options (used by the supervisor).
    #: The project's directory (where manage.py is), always watched.
    project_dir: str = ""
    #: Paths never watched: MEDIA_ROOT, STATIC_ROOT, database files.
    ignored_paths: tuple[str, ...] = ()
    extra_watch_dirs: tuple[str, ...] = ()
    watch_include: tuple[str, ...] = ()
    watch_exclude: tuple[str, ...] = ()
    force_polling: bool = False
    #: Keep a warm process ready to become the next worker (``--no-preload``).
    preload: bool = True
    #: Django's ``-v``: at 2, the supervisor says how each worker started.
    verbosity: int = 1
    #: Companion commands (``--run``), each split into its arguments; the
    #: supervisor starts them once the first worker serves.
    run_commands: tuple[tuple[str, ...], ...] = ()
    #: Whether console output is coloured (Django's decision for the command).
    colour: bool = False

    # HTTPS (``--https``): the files are chosen and checked by the command;
    # the process that serves loads them into its TLS context.
    https: bool = False
    #: The certificate (with the key when ``tls_key`` is empty), PEM.
    tls_cert: str = ""
    tls_key: str = ""
    #: The local certificate authority's certificate, when it signed ``tls_cert``.
    tls_ca: str = ""

    # Live browser reload (worker side).
    livereload: bool = False
    #: Local directories of the staticfiles finders, watched for live reload.
    static_dirs: tuple[str, ...] = ()

    # --print-sql (worker side).
    #: Add each request's query count and time to its access line.
    print_sql: bool = False
    #: Also print each query after the line (``-v 2``).
    print_sql_queries: bool = False
    #: Warn when one statement shape runs this often in a request (0: never).
    sql_repeat_threshold: int = DEFAULT_SQL_REPEAT_THRESHOLD

    @property
    def url(self) -> str:
        """The base URL the banner prints, without the port."""
        return f"{self.scheme}://{self.display_addr or self.addr}"

    @property
    def scheme(self) -> str:
        return "https" if self.https else "http"

    @property
    def is_wildcard(self) -> bool:
        """True when bound to every interface, so other machines can connect."""
        return self.addr in WILDCARD_ADDRESSES


class Host(Protocol):
    """What the runner needs from the management command."""

    def load_application(self) -> WSGIApp | ASGIApp:
        """Run the checks and build the handler: the ASGI one when
        ``config.asgi`` (may raise)."""

    def announce(self, port: int) -> None:
        """Print the banner for a server listening on ``port``."""

    def write_out(self, text: str) -> None: ...

    def write_err(self, text: str) -> None: ...

    def close_thread_resources(self) -> None:
        """Release what a finished connection thread held (database connections)."""

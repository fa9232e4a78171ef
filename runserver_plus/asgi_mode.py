"""ASGI mode: whether the options and settings ask for it, and the application."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.utils.module_loading import import_string

from runserver_plus import banner
from runserver_plus.config import DEFAULT_WEBSOCKET_MAX_MESSAGE, ServerConfig

if TYPE_CHECKING:
    # A type only: the supervisor, which serves nothing, imports this module
    # and must not pay for the HTTP parser (h11) before it starts a worker.
    from runserver_plus.server.asgi_scope import ASGIApp

NOTHREADING_ERROR = (
    "--nothreading cannot be used with ASGI: the ASGI server serves every "
    "connection from one event loop, so there is no thread to turn off. Use "
    "--wsgi to serve one request at a time."
)

# Django < 6 says "development server", 6.x "WSGI development server".
_BANNER_LINE = re.compile(r"Starting (?:WSGI )?development server at ")


def wants_asgi(options: dict[str, Any]) -> bool:
    """ASGI with ``--asgi``, ``RUNSERVER_PLUS_ASGI`` or ``ASGI_APPLICATION``
    (as Daphne's and Channels' runserver); ``--wsgi`` wins over all three."""
    if options.get("wsgi"):
        return False
    asked = bool(
        options.get("asgi")
        or getattr(settings, "RUNSERVER_PLUS_ASGI", False)
        or getattr(settings, "ASGI_APPLICATION", None)
    )
    if asked and not options.get("use_threading", True):
        raise CommandError(NOTHREADING_ERROR)
    return asked


def websocket_max_message() -> int:
    """``RUNSERVER_PLUS_WEBSOCKET_MAX_MESSAGE``, checked (bytes, at least 1)."""
    value = getattr(
        settings, "RUNSERVER_PLUS_WEBSOCKET_MAX_MESSAGE", DEFAULT_WEBSOCKET_MAX_MESSAGE
    )
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CommandError(
            "RUNSERVER_PLUS_WEBSOCKET_MAX_MESSAGE must be a number of bytes of 1 "
            f"or more; it is {value!r}."
        )
    return value


def load_asgi_application() -> ASGIApp:
    """``settings.ASGI_APPLICATION``, or Django's handler for a project without
    it; a bad path is worded as Django words a bad ``WSGI_APPLICATION``.

    For the process that serves: every Django handler in it then sends sync
    iterators as they are produced (``asgi_handler.stream_sync_iterators``),
    the one a project builds with ``get_asgi_application()`` included.
    """
    from runserver_plus.asgi_handler import stream_sync_iterators  # noqa: PLC0415

    stream_sync_iterators()
    path = getattr(settings, "ASGI_APPLICATION", None)
    if not path:
        # What get_asgi_application() returns, once django.setup() has run
        # (the command has run it).
        from django.core.handlers.asgi import ASGIHandler  # noqa: PLC0415

        return cast("ASGIApp", ASGIHandler())
    try:
        return cast("ASGIApp", import_string(path))
    except ImportError as error:
        raise ImproperlyConfigured(
            f"ASGI application '{path}' could not be loaded; Error importing module."
        ) from error


def with_query_log(handler: ASGIApp, config: ServerConfig) -> ASGIApp:
    """The handler behind ``--print-sql``'s layer, when asked for: without it,
    no execute wrapper is ever installed."""
    if not config.print_sql:
        return handler
    from runserver_plus.queries_asgi import QueryLogAsgi  # noqa: PLC0415 - worker only

    return QueryLogAsgi(handler, config)


def asgi_banner(text: str) -> str:
    """Django's banner text with the server named as the ASGI one."""
    return _BANNER_LINE.sub("Starting ASGI development server at ", text)


class AsgiBannerOutput(banner.FlushingOutput):
    """Django's banner, naming the ASGI server in Django's words."""

    def write(  # type: ignore[override]  # OutputWrapper's own signature
        self, msg: str = "", style_func: Any = None, ending: str | None = None
    ) -> None:
        super().write(asgi_banner(msg), style_func, ending)


def on_bind(command: Any, port: int) -> None:
    """Django's ``on_bind()`` banner, with the ASGI server named in it."""
    stdout = command.stdout
    command.stdout = banner.flushing(stdout, AsgiBannerOutput)
    try:
        command.on_bind(port)
    finally:
        command.stdout = stdout

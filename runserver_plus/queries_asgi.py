"""``--print-sql`` in ASGI mode: each HTTP request's queries, found by its context."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from runserver_plus.config import ServerConfig
from runserver_plus.queries import RequestQueries
from runserver_plus.server import log
from runserver_plus.server.asgi_scope import ASGIApp, Receive, Scope, Send

#: The queries of the request whose code runs. Set on the request's task;
#: asgiref's ``sync_to_async`` runs a sync view (or an async view's ORM call)
#: in a thread with a copy of that context, so a query finds its request
#: whichever thread runs it. A thread the view starts itself has a context of
#: its own: its queries are not the request's, as under WSGI.
CURRENT: contextvars.ContextVar[RequestQueries | None] = contextvars.ContextVar(
    "runserver_plus_request_queries", default=None
)
_SIGNAL_UID = "runserver_plus.queries_asgi"


def record(
    execute: Callable[..., Any],
    sql: str,
    params: Any,
    many: bool,
    context: dict[str, Any],
) -> Any:
    """The execute wrapper of every connection: counts for the current
    request, if any."""
    recorder = CURRENT.get()
    if recorder is None:
        return execute(sql, params, many, context)
    return recorder(execute, sql, params, many, context)


def _wrap(connection: BaseDatabaseWrapper) -> None:
    if record not in connection.execute_wrappers:
        connection.execute_wrappers.append(record)


def _connected(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    # Sent before the first cursor of a connection runs anything.
    _wrap(connection)


class QueryLogAsgi:
    """ASGI middleware in front of Django's handler: the queries each HTTP
    request runs, until the application returns (the response sent and
    closed), become an ``AccessNote`` in its scope.

    Where the WSGI layer wraps the serving thread's connections per request,
    ASGI runs a request's code in threads it does not choose: so every
    connection of the process gets one wrapper when it connects, and the
    wrapper finds the request through ``CURRENT``.
    """

    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.keep = config.print_sql_queries
        self.repeat_threshold = config.sql_repeat_threshold
        connection_created.connect(_connected, weak=False, dispatch_uid=_SIGNAL_UID)
        for connection in connections.all(initialized_only=True):
            _wrap(connection)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        recorder = RequestQueries(keep=self.keep)
        token = CURRENT.set(recorder)
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT.reset(token)
            scope[log.ACCESS_NOTE] = recorder.note(
                repeat_threshold=self.repeat_threshold,
                show_alias=len(list(connections)) > 1,
            )

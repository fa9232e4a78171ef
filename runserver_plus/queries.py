"""``--print-sql``: the SQL queries of each request, summed up on its access line."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.db import connections

from runserver_plus.config import ServerConfig
from runserver_plus.server import log
from runserver_plus.server.wsgi import FileWrapper, StartResponse, WSGIApp, WSGIEnviron

#: How much of a statement a query line shows.
MAX_SQL_CHARS = 400
#: How much of a query's parameters a query line shows.
MAX_PARAMS_CHARS = 200
#: How many query lines one request prints at most (``-v 2``).
MAX_QUERY_LINES = 100
#: A SELECT list longer than this is shown as ``…``: the FROM and WHERE say more.
MAX_SELECT_LIST_CHARS = 60

_WHITESPACE = re.compile(r"\s+")
_SELECT_LIST = re.compile(r"^(SELECT (?:DISTINCT )?)(.*?)( FROM )", re.IGNORECASE)
# What varies between two runs of one statement written with its values in it.
_LITERALS = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")
_TABLE = re.compile(
    r"\b(?:FROM|JOIN|INTO|UPDATE)\s+(\"[^\"]+\"|`[^`]+`|\[[^\]]+\]|[\w.]+)",
    re.IGNORECASE,
)


@dataclasses.dataclass(frozen=True)
class Query:
    """One statement a request ran."""

    alias: str
    sql: str
    params: object
    many: bool
    duration: float  # s


class RequestQueries:
    """The execute wrapper of every database alias for one request, in the
    thread serving it: counts the queries, their time and their shapes."""

    def __init__(self, *, keep: bool) -> None:
        self.keep = keep
        self.count = 0
        self.total = 0.0  # s
        self.shapes: Counter[str] = Counter()
        #: The first statement of each shape, as it was run.
        self.examples: dict[str, str] = {}
        self.queries: list[Query] = []

    def __call__(
        self,
        execute: Callable[..., Any],
        sql: str,
        params: Any,
        many: bool,
        context: dict[str, Any],
    ) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            duration = time.perf_counter() - started
            self.count += 1
            self.total += duration
            shape = statement_shape(sql)
            self.shapes[shape] += 1
            self.examples.setdefault(shape, sql)
            if self.keep:
                alias = str(getattr(context.get("connection"), "alias", ""))
                self.queries.append(Query(alias, sql, params, many, duration))

    def note(self, *, repeat_threshold: int, show_alias: bool) -> log.AccessNote:
        """The access line's ``<n>q <time>``; with ``keep``, a line per query;
        a warning per statement shape run ``repeat_threshold`` times or more."""
        lines: list[log.NoteLine] = []
        for query in self.queries[:MAX_QUERY_LINES]:
            lines.append(log.NoteLine(logging.INFO, query_line(query, show_alias)))
        if len(self.queries) > MAX_QUERY_LINES:
            more = len(self.queries) - MAX_QUERY_LINES
            lines.append(log.NoteLine(logging.INFO, f"  … and {more} more"))
        if repeat_threshold:
            for shape, count in self.shapes.most_common():
                if count < repeat_threshold:
                    break
                example = self.examples[shape]
                named = shorten(example) if self.keep else describe(example)
                lines.append(
                    log.NoteLine(
                        logging.WARNING,
                        f"  N+1? One statement ran {count} times: {named}",
                    )
                )
        return log.AccessNote(
            f"{self.count}q {log.format_duration(self.total)}", tuple(lines)
        )


def statement_shape(sql: str) -> str:
    """``sql`` without what changes between runs of one statement: parameters
    are placeholders already; literal strings and numbers become ``?``."""
    return _LITERALS.sub("?", _WHITESPACE.sub(" ", sql).strip())


def shorten(sql: str) -> str:
    """``sql`` on one line, a long SELECT list as ``…``, cut at ``MAX_SQL_CHARS``."""
    text = _WHITESPACE.sub(" ", sql).strip()
    match = _SELECT_LIST.match(text)
    if match and len(match.group(2)) > MAX_SELECT_LIST_CHARS:
        text = match.group(1) + "…" + text[match.end(2) :]
    return _cut(text, MAX_SQL_CHARS)


def describe(sql: str) -> str:
    """A statement named without its SQL: ``SELECT on "app_note"``."""
    verb = sql.split(None, 1)[0].upper() if sql.strip() else "?"
    tables = list(dict.fromkeys(_TABLE.findall(sql)))
    return f"{verb} on {', '.join(tables)}" if tables else verb


def query_line(query: Query, show_alias: bool) -> str:
    """``  [0.4ms] SELECT … WHERE "id" = %s  params: (3,)``, with the alias
    after the time when there is more than one database."""
    where = f" {query.alias}" if show_alias else ""
    duration = log.format_duration(query.duration)
    return f"  [{duration}{where}] {shorten(query.sql)}  {_params(query)}"


def _params(query: Query) -> str:
    if query.many:
        try:
            count = len(query.params)  # type: ignore[arg-type]
        except TypeError:  # an iterator: its length is unknown
            return "params: many"
        return f"params: {count} sets"
    if query.params is None:
        return "params: none"
    return "params: " + _cut(repr(query.params), MAX_PARAMS_CHARS)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class QueryLogApp:
    """WSGI middleware in front of Django's handler: each request's queries,
    from the moment it starts to the close of its response, in the thread
    serving it, become an ``AccessNote`` in the environ."""

    def __init__(self, app: WSGIApp, config: ServerConfig) -> None:
        self.app = app
        self.keep = config.print_sql_queries
        self.repeat_threshold = config.sql_repeat_threshold

    def __call__(
        self, environ: WSGIEnviron, start_response: StartResponse
    ) -> Iterable[bytes]:
        recorder = RequestQueries(keep=self.keep)
        aliases = list(connections)
        wrappers = contextlib.ExitStack()
        for alias in aliases:
            # connections[alias] is this thread's own connection object.
            wrappers.enter_context(connections[alias].execute_wrapper(recorder))

        def finish() -> None:
            wrappers.close()
            environ[log.ACCESS_NOTE] = recorder.note(
                repeat_threshold=self.repeat_threshold, show_alias=len(aliases) > 1
            )

        try:
            result = self.app(environ, start_response)
        except BaseException:
            finish()
            raise
        if isinstance(result, (list, tuple, FileWrapper)):
            # Nothing runs while these are sent; a file goes out with sendfile
            # only as the server's own FileWrapper, so it is left unwrapped.
            finish()
            return result
        return _Finishing(result, finish)


class _Finishing:
    """A response iterable that calls ``finish`` once it is closed."""

    def __init__(self, result: Iterable[bytes], finish: Callable[[], None]) -> None:
        self._result = result
        self._finish: Callable[[], None] | None = finish

    @property
    def streaming(self) -> bool:
        """Django's flag, which the live reload layer reads."""
        return bool(getattr(self._result, "streaming", True))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._result)

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            finish, self._finish = self._finish, None
            if finish is not None:
                finish()

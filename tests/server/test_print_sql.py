"""--print-sql: the formatting units, then real queries through the server."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from typing import cast

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.core.management.color import color_style
from django.db import connection, connections
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import path
from django.utils.log import DEFAULT_LOGGING, ServerFormatter

from runserver_plus.asgi_handler import stream_sync_iterators
from runserver_plus.config import ServerConfig
from runserver_plus.queries import (
    MAX_QUERY_LINES,
    Query,
    QueryLogApp,
    describe,
    query_line,
    shorten,
    statement_shape,
)
from runserver_plus.queries_asgi import QueryLogAsgi
from runserver_plus.server import log as server_log
from runserver_plus.server.asgi_scope import ASGIApp
from tests.live import LiveServer, LogRecorder, serve_app
from tests.live_asgi import LiveAsgiServer, serve_asgi

DURATION = r"\d+(?:\.\d)?(?:ms|s)"

# --- units ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "shape"),
    [
        ('SELECT "a"."id" FROM "a" WHERE "a"."id" = %s',
         'SELECT "a"."id" FROM "a" WHERE "a"."id" = %s'),
        ("SELECT *\n  FROM t\tWHERE id = 42", "SELECT * FROM t WHERE id = ?"),
        ("SELECT * FROM t WHERE name = 'O''Brien' AND x = 1.5",
         "SELECT * FROM t WHERE name = ? AND x = ?"),
        ('SELECT "t1"."c_2" FROM "t1"', 'SELECT "t1"."c_2" FROM "t1"'),
    ],
)  # fmt: skip
def test_statement_shape_leaves_the_values_out(sql: str, shape: str) -> None:
    assert statement_shape(sql) == shape


def test_shorten_puts_a_statement_on_one_line_and_folds_a_long_select_list() -> None:
    columns = ", ".join(f'"app_note"."column_{i}"' for i in range(10))
    sql = f'SELECT {columns}\nFROM "app_note"\n  WHERE "app_note"."id" = %s'
    assert shorten(sql) == 'SELECT … FROM "app_note" WHERE "app_note"."id" = %s'
    assert shorten('SELECT "a"."id"\n FROM "a"') == 'SELECT "a"."id" FROM "a"'
    long = "UPDATE t SET x = " + "1" * 1000
    assert len(shorten(long)) == 400
    assert shorten(long).endswith("…")


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ('SELECT "a"."x" FROM "app_note" WHERE "app_note"."id" = %s',
         'SELECT on "app_note"'),
        ('SELECT 1 FROM "a" INNER JOIN "b" ON ("a"."b_id" = "b"."id")',
         'SELECT on "a", "b"'),
        ('INSERT INTO "app_note" ("title") VALUES (%s)', 'INSERT on "app_note"'),
        ('update "app_note" SET "title" = %s', 'UPDATE on "app_note"'),
        ("SELECT %s", "SELECT"),
        ("", "?"),
    ],
)  # fmt: skip
def test_describe_names_a_statement_without_its_sql(sql: str, named: str) -> None:
    assert describe(sql) == named


def test_query_line_shows_time_sql_and_parameters() -> None:
    query = Query("default", 'SELECT "a" FROM "t" WHERE "id" = %s', (3,), False, 0.0004)
    assert query_line(query, show_alias=False) == (
        '  [0.4ms] SELECT "a" FROM "t" WHERE "id" = %s  params: (3,)'
    )
    assert query_line(query, show_alias=True).startswith("  [0.4ms default] SELECT")
    many = Query("default", "INSERT INTO t VALUES (%s)", [(1,), (2,)], True, 0.012)
    assert query_line(many, show_alias=False).endswith("  params: 2 sets")
    none = Query("default", "SELECT 1", None, False, 0.0)
    assert query_line(none, show_alias=False).endswith("  params: none")
    huge = Query("default", "SELECT %s", ("x" * 1000,), False, 0.0)
    assert len(query_line(huge, show_alias=False).split("params: ")[1]) == 200


# --- the access line with a note ------------------------------------------------------


def test_a_note_follows_the_duration_and_its_lines_follow_the_access_line(
    log: LogRecorder,
) -> None:
    note = server_log.AccessNote(
        "2q 1.5ms",
        (
            server_log.NoteLine(logging.INFO, "  [1.0ms] SELECT 1  params: none"),
            server_log.NoteLine(logging.WARNING, "  N+1? 100% of it"),
        ),
    )
    server_log.log_request("GET /x HTTP/1.1", 404, 5, 0.012, note=note)
    messages = log.messages()
    assert messages == [
        '"GET /x HTTP/1.1" 404 5 12ms 2q 1.5ms',
        "  [1.0ms] SELECT 1  params: none",
        "  N+1? 100% of it",
    ]
    assert [r.levelno for r in log.records] == [
        logging.WARNING,
        logging.INFO,
        logging.WARNING,
    ]
    # Django's formatter colours each line by its status, as the access line.
    formatter = ServerFormatter(
        fmt=DEFAULT_LOGGING["formatters"]["django.server"]["format"], style="{"
    )
    formatter.style = color_style(force_color=True)
    for record, message in zip(log.records, messages, strict=True):
        assert record.status_code == 404  # type: ignore[attr-defined]
        coloured = formatter.style.HTTP_NOT_FOUND(message)
        assert coloured != message
        assert formatter.format(record).endswith(f"] {coloured}")


# --- through the server, with Django's handler and real queries -------------------


def lookups(request: HttpRequest) -> HttpResponse:
    count = int(request.GET.get("n", "3"))
    for pk in range(1, count + 1):
        ContentType.objects.filter(pk=pk).exists()
    return HttpResponse(f"{len(connection.execute_wrappers)} wrapper(s)")


async def async_lookups(request: HttpRequest) -> HttpResponse:
    count = int(request.GET.get("n", "3"))
    for pk in range(1, count + 1):
        await ContentType.objects.filter(pk=pk).aexists()
    return HttpResponse("done")


def streamed(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        for pk in range(1, 3):
            yield str(ContentType.objects.filter(pk=pk).count()).encode()

    return StreamingHttpResponse(chunks())


def elsewhere(request: HttpRequest) -> HttpResponse:
    # A query in another thread is that thread's: not this request's.
    thread = threading.Thread(target=_query_then_close)
    thread.start()
    thread.join(10.0)
    return HttpResponse("done")


def _query_then_close() -> None:
    try:
        ContentType.objects.exists()
    finally:
        connections.close_all()


def both_databases(request: HttpRequest) -> HttpResponse:
    for alias in ("default", "other"):
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT %s", [alias])
    return HttpResponse("both")


urlpatterns = [
    path("lookups/", lookups),
    path("async/lookups/", async_lookups),
    path("streamed/", streamed),
    path("elsewhere/", elsewhere),
    path("both/", both_databases),
]


def get(live: LiveServer | LiveAsgiServer, target: str) -> None:
    with live.connect() as client:
        response = client.request("GET", target)
        assert response.status == 200, response.body


def logged(log: LogRecorder, target: str) -> list[str]:
    """The access line of ``GET target`` and the lines that follow it, up to
    the next access line. Read once the server has drained: all are written."""
    messages = log.messages()
    start = messages.index(
        next(m for m in messages if m.startswith(f'"GET {target} HTTP/1.1"'))
    )
    end = next(
        (i for i in range(start + 1, len(messages)) if messages[i].startswith('"')),
        len(messages),
    )
    return messages[start:end]


def served(**config: object) -> QueryLogApp:
    return QueryLogApp(WSGIHandler(), ServerConfig(addr="127.0.0.1", port=0, **config))  # type: ignore[arg-type]


pytestmark = [
    pytest.mark.urls("tests.server.test_print_sql"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("threading_", [True, False], ids=["threads", "nothreading"])
def test_the_access_line_counts_the_requests_queries(
    log: LogRecorder, threading_: bool
) -> None:
    app = served(print_sql=True)
    with serve_app(app, use_threading=threading_) as live:
        get(live, "/lookups/?n=3")
        get(live, "/lookups/?n=0")
    (line,) = logged(log, "/lookups/?n=3")
    (zero,) = logged(log, "/lookups/?n=0")
    assert re.fullmatch(
        rf'"GET /lookups/\?n=3 HTTP/1\.1" 200 \d+ {DURATION} 3q {DURATION}', line
    )
    assert re.fullmatch(
        rf'"GET /lookups/\?n=0 HTTP/1\.1" 200 \d+ {DURATION} 0q {DURATION}', zero
    )


@pytest.mark.django_db(transaction=True)
def test_each_request_installs_one_wrapper_and_removes_it(log: LogRecorder) -> None:
    app = served(print_sql=True)
    with serve_app(app) as live, live.connect() as client:
        for _ in range(3):
            assert client.request("GET", "/lookups/?n=1").body == b"1 wrapper(s)"
    assert connection.execute_wrappers == []


@pytest.mark.django_db(transaction=True)
def test_default_verbosity_prints_no_sql_and_warns_of_a_repeated_statement(
    log: LogRecorder,
) -> None:
    app = served(print_sql=True, sql_repeat_threshold=10)
    with serve_app(app) as live:
        get(live, "/lookups/?n=9")
        get(live, "/lookups/?n=10")
    nine = logged(log, "/lookups/?n=9")
    ten = logged(log, "/lookups/?n=10")
    assert len(nine) == 1
    line, warning = ten
    assert " 10q " in line
    assert (
        warning == '  N+1? One statement ran 10 times: SELECT on "django_content_type"'
    )
    assert log.records[-1].levelno == logging.WARNING
    assert "WHERE" not in "\n".join(log.messages())


@pytest.mark.django_db(transaction=True)
def test_a_threshold_of_zero_never_warns(log: LogRecorder) -> None:
    app = served(print_sql=True, sql_repeat_threshold=0)
    with serve_app(app) as live:
        get(live, "/lookups/?n=20")
    assert len(logged(log, "/lookups/?n=20")) == 1


@pytest.mark.django_db(transaction=True)
def test_verbosity_2_prints_each_query_after_the_line(log: LogRecorder) -> None:
    # The test settings have two databases: each query names its alias.
    app = served(print_sql=True, print_sql_queries=True, sql_repeat_threshold=3)
    with serve_app(app) as live:
        get(live, "/lookups/?n=3")
    line, *queries, warning = logged(log, "/lookups/?n=3")
    assert " 3q " in line
    # The constant is a parameter on Django >= 5.2.
    statement = (
        r'SELECT (?:1|%s) AS "a" FROM "django_content_type" WHERE '
        r'"django_content_type"\."id" = %s LIMIT 1'
    )
    assert len(queries) == 3
    for pk, query in enumerate(queries, start=1):
        assert re.fullmatch(
            rf"  \[{DURATION} default\] {statement}  params: \((?:1, )?{pk},?\)",
            query,
        ), query
    assert re.fullmatch(f"  N\\+1\\? One statement ran 3 times: {statement}", warning)


@pytest.mark.django_db(transaction=True)
def test_verbosity_2_caps_the_query_lines(log: LogRecorder) -> None:
    app = served(print_sql=True, print_sql_queries=True, sql_repeat_threshold=0)
    with serve_app(app) as live:
        get(live, f"/lookups/?n={MAX_QUERY_LINES + 5}")
    line, *queries = logged(log, f"/lookups/?n={MAX_QUERY_LINES + 5}")
    assert f" {MAX_QUERY_LINES + 5}q " in line
    assert len(queries) == MAX_QUERY_LINES + 1
    assert queries[-1] == "  … and 5 more"


@pytest.mark.django_db(transaction=True)
def test_queries_a_streaming_response_runs_are_counted(log: LogRecorder) -> None:
    # The access line is written once the stream has ended.
    app = served(print_sql=True)
    with serve_app(app) as live:
        get(live, "/streamed/")
    (line,) = logged(log, "/streamed/")
    assert " 2q " in line


@pytest.mark.django_db(transaction=True)
def test_queries_of_other_threads_are_not_counted(log: LogRecorder) -> None:
    app = served(print_sql=True)
    with serve_app(app) as live:
        get(live, "/elsewhere/")
    (line,) = logged(log, "/elsewhere/")
    assert " 0q " in line


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_the_alias_is_shown_with_more_than_one_database(log: LogRecorder) -> None:
    app = served(print_sql=True, print_sql_queries=True)
    with serve_app(app) as live:
        get(live, "/both/")
    line, first, second = logged(log, "/both/")
    assert " 2q " in line
    assert re.fullmatch(
        rf"  \[{DURATION} default\] SELECT %s  params: \['default'\]", first
    )
    assert re.fullmatch(
        rf"  \[{DURATION} other\] SELECT %s  params: \['other'\]", second
    )


# --- ASGI mode: sync views in Django's threads, async views on the loop ----------


def served_asgi(**config: object) -> QueryLogAsgi:
    stream_sync_iterators()  # as the serving worker does in ASGI mode
    return QueryLogAsgi(
        cast("ASGIApp", ASGIHandler()),
        ServerConfig(addr="127.0.0.1", port=0, asgi=True, **config),  # type: ignore[arg-type]
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("view", ["lookups", "async/lookups"])
def test_asgi_the_access_line_counts_the_requests_queries(
    log: LogRecorder, view: str
) -> None:
    app = served_asgi(print_sql=True)
    with serve_asgi(app) as live:
        get(live, f"/{view}/?n=3")
        get(live, f"/{view}/?n=0")
    (line,) = logged(log, f"/{view}/?n=3")
    (zero,) = logged(log, f"/{view}/?n=0")
    target = re.escape(f"/{view}/")
    assert re.fullmatch(
        rf'"GET {target}\?n=3 HTTP/1\.1" 200 \d+ {DURATION} 3q {DURATION}', line
    )
    assert re.fullmatch(
        rf'"GET {target}\?n=0 HTTP/1\.1" 200 \d+ {DURATION} 0q {DURATION}', zero
    )


@pytest.mark.django_db(transaction=True)
def test_asgi_requests_at_the_same_time_count_their_own_queries(
    log: LogRecorder,
) -> None:
    app = served_asgi(print_sql=True)
    targets = [f"/lookups/?n={n}" for n in (1, 4, 7)] + [
        f"/async/lookups/?n={n}" for n in (2, 5)
    ]
    with serve_asgi(app) as live:
        clients = [
            threading.Thread(target=get, args=(live, target)) for target in targets
        ]
        for client in clients:
            client.start()
        for client in clients:
            client.join(10.0)
        assert not any(client.is_alive() for client in clients)
    for target in targets:
        (line,) = logged(log, target)
        assert f" {target.split('=')[1]}q " in line, line


@pytest.mark.django_db(transaction=True)
def test_asgi_verbosity_2_prints_each_query_and_warns(log: LogRecorder) -> None:
    app = served_asgi(print_sql=True, print_sql_queries=True, sql_repeat_threshold=3)
    with serve_asgi(app) as live:
        get(live, "/async/lookups/?n=3")
    line, *queries, warning = logged(log, "/async/lookups/?n=3")
    assert " 3q " in line
    assert len(queries) == 3
    assert all(q.startswith("  [") and "django_content_type" in q for q in queries)
    assert warning.startswith("  N+1? One statement ran 3 times: SELECT ")


@pytest.mark.django_db(transaction=True)
def test_asgi_queries_of_a_sync_stream_and_of_other_threads(log: LogRecorder) -> None:
    app = served_asgi(print_sql=True)
    with serve_asgi(app) as live:
        get(live, "/streamed/")
        get(live, "/elsewhere/")
    (streamed_line,) = logged(log, "/streamed/")
    (elsewhere_line,) = logged(log, "/elsewhere/")
    assert " 2q " in streamed_line
    assert " 0q " in elsewhere_line

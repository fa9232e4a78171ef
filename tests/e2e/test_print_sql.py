"""End to end: --print-sql on the test project's /queries/ view."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import StartServer

pytestmark = pytest.mark.e2e

DURATION = r"\d+(?:\.\d)?(?:ms|s)"
SERVER_TIME = r"\d\d/[A-Z][a-z]{2}/\d{4} \d\d:\d\d:\d\d"
#: The lookup of one note; its constant is a parameter on Django >= 5.2.
LOOKUP = (
    r'SELECT (?:1|%s) AS "a" FROM "testapp_note" '
    r'WHERE "testapp_note"\."id" = %s LIMIT 1'
)


@pytest.mark.usefixtures("server_mode")
def test_the_request_line_counts_queries_and_warns_of_n_plus_1(
    start_server: StartServer,
) -> None:
    server = start_server("127.0.0.1:0", "--print-sql")
    assert server.get("/queries/?n=12").json()["lookups"] == 12
    # Django's line as it was, then the count and the time of the queries.
    server.wait_for_stderr(
        rf'^\[{SERVER_TIME}\] "GET /queries/\?n=12 HTTP/1\.1" 200 \d+ {DURATION} '
        rf"12q {DURATION}$"
    )
    server.wait_for_stderr(
        r'^\[.*\]   N\+1\? One statement ran 12 times: SELECT on "testapp_note"$'
    )
    assert server.get("/queries/?n=2").status == 200
    server.wait_for_stderr(rf'"GET /queries/\?n=2 HTTP/1\.1" 200 \d+ {DURATION} 2q ')
    # No SQL at the default verbosity.
    assert "WHERE" not in server.stderr_text()


def test_verbosity_2_prints_each_query_with_nothreading(
    start_server: StartServer,
) -> None:
    server = start_server(
        "127.0.0.1:0", "--noreload", "--nothreading", "--print-sql", "-v", "2"
    )
    assert server.get("/queries/?n=2").status == 200
    server.wait_for_stderr(r'"GET /queries/\?n=2 HTTP/1\.1" 200 .* 2q ')
    for pk in (1, 2):
        server.wait_for_stderr(
            rf"^\[.*\]   \[{DURATION}\] {LOOKUP}  params: \((?:1, )?{pk},?\)$"
        )


@pytest.mark.usefixtures("server_mode")
def test_the_alias_is_shown_with_two_databases(
    start_server: StartServer, project_dir: Path
) -> None:
    settings = project_dir / "testproject" / "settings.py"
    settings.write_text(
        settings.read_text()
        + '\nDATABASES["other"] = {"ENGINE": "django.db.backends.sqlite3",'
        ' "NAME": BASE_DIR / "other.sqlite3"}\n'
    )
    server = start_server("127.0.0.1:0", "--print-sql", "-v", "2")
    assert server.get("/queries/?n=1&db=other").json()["databases"] == ["other"]
    server.wait_for_stderr(r'"GET /queries/\?n=1&db=other HTTP/1\.1" 200 .* 2q ')
    server.wait_for_stderr(rf"   \[{DURATION} default\] {LOOKUP}  ")
    server.wait_for_stderr(rf"   \[{DURATION} other\] SELECT %s  params: \['other'\]$")

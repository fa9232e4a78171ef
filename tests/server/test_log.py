"""The request log: formatting units, then the lines the running server writes."""

from __future__ import annotations

import calendar
import contextlib
import io
import logging
import re
import time
from collections.abc import Iterable, Iterator

import pytest
from django.core.management.color import color_style, no_style
from django.utils.log import DEFAULT_LOGGING, ServerFormatter

from runserver_plus.server import log as server_log
from runserver_plus.server.wsgi import WSGIEnviron
from tests.live import LogRecorder, record_server_log, serve_app

DURATION = r"\d+(?:\.\d)?(?:ms|s)"
MONTHS = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)  # fmt: skip
SERVER_TIME = r"\d\d/[A-Z][a-z]{2}/\d{4} \d\d:\d\d:\d\d"
#: Long enough for the wall clock to reach its next second.
CLOCK_TIMEOUT = 5.0  # s


@pytest.fixture
def log() -> Iterator[LogRecorder]:
    with record_server_log() as recorder:
        yield recorder


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset() is POSIX only")
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# --- server_time ----------------------------------------------------------------


@pytest.mark.usefixtures("utc")
def test_server_time_format() -> None:
    assert server_log.server_time(0) == "01/Jan/1970 00:00:00"
    assert server_log.server_time(1_700_000_000) == "14/Nov/2023 22:13:20"
    assert server_log.server_time(1_700_000_000.999) == "14/Nov/2023 22:13:20"


@pytest.mark.usefixtures("utc")
@pytest.mark.parametrize(
    ("month", "name"),
    list(enumerate(MONTHS, start=1)),
)
def test_server_time_english_month_names(month: int, name: str) -> None:
    timestamp = calendar.timegm((2026, month, 5, 7, 8, 9, 0, 0, 0))
    assert server_log.server_time(timestamp) == f"05/{name}/2026 07:08:09"


def test_server_time_now_is_local_time() -> None:
    before = time.time()
    text = server_log.server_time()
    after = time.time()
    assert re.fullmatch(SERVER_TIME, text)
    assert text in {server_log.server_time(before), server_log.server_time(after)}


# --- format_duration and escape --------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0.0ms"),
        (0.0004, "0.4ms"),
        (0.0012, "1.2ms"),
        (0.0099, "9.9ms"),
        (0.012, "12ms"),
        (0.250, "250ms"),
        (0.9994, "999ms"),
        (1.0, "1.0s"),
        (1.234, "1.2s"),
        (75.0, "75.0s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert server_log.format_duration(seconds) == text


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("GET / HTTP/1.1", "GET / HTTP/1.1"),
        ("GET /caf\xc3\xa9/ HTTP/1.1", "GET /caf\\xc3\\xa9/ HTTP/1.1"),
        ("GET /\x1b[31m HTTP/1.1", "GET /\\x1b[31m HTTP/1.1"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("back\\slash", "back\\\\slash"),
        ("\u2603", "\\u2603"),
    ],
)
def test_escape(raw: str, escaped: str) -> None:
    assert server_log.escape(raw) == escaped


# --- the log functions -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "level"),
    [
        (101, logging.INFO),
        (200, logging.INFO),
        (206, logging.INFO),
        (301, logging.INFO),
        (304, logging.INFO),
        (399, logging.INFO),
        (400, logging.WARNING),
        (404, logging.WARNING),
        (499, logging.WARNING),
        (500, logging.ERROR),
        (503, logging.ERROR),
        (599, logging.ERROR),
    ],
)
def test_log_request_level_by_status(log: LogRecorder, status: int, level: int) -> None:
    server_log.log_request("GET /x HTTP/1.1", status, 5, 0.0123)
    (record,) = log.records
    assert record.levelno == level
    assert record.getMessage() == f'"GET /x HTTP/1.1" {status} 5 12ms'
    assert record.status_code == status  # type: ignore[attr-defined]
    assert record.name == "django.server"


def test_log_request_size_dash_for_server_errors(log: LogRecorder) -> None:
    server_log.log_request("GARBAGE", 400, None, 0.0004)
    assert log.messages() == ['"GARBAGE" 400 - 0.4ms']


def test_log_request_extras(log: LogRecorder) -> None:
    marker = object()
    server_log.log_request("GET / HTTP/1.1", 200, 0, 0.0, marker)
    (record,) = log.records
    assert record.request is marker  # type: ignore[attr-defined]
    assert re.fullmatch(SERVER_TIME, record.server_time)  # type: ignore[attr-defined]


def test_log_request_escapes_the_request_line(log: LogRecorder) -> None:
    server_log.log_request("GET /caf\xc3\xa9/\x1b HTTP/1.1", 200, 2, 0.0)
    assert log.messages() == ['"GET /caf\\xc3\\xa9/\\x1b HTTP/1.1" 200 2 0.0ms']


def test_log_request_percent_in_request_line_is_not_a_format(log: LogRecorder) -> None:
    server_log.log_request("GET /%s%d%(x)s HTTP/1.1", 200, 0, 0.0)
    assert log.messages() == ['"GET /%s%d%(x)s HTTP/1.1" 200 0 0.0ms']


def test_log_protocol_error(log: LogRecorder) -> None:
    server_log.log_protocol_error(400, "Bad request syntax ('\x1b')")
    (record,) = log.records
    assert record.levelno == logging.INFO
    assert record.getMessage() == "code 400, message Bad request syntax ('\\x1b')"
    # uncoloured in Django's formatter: no status_code
    assert not hasattr(record, "status_code")


def test_log_tls_attempt(log: LogRecorder) -> None:
    server_log.log_tls_attempt()
    (record,) = log.records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        "You're accessing the development server over HTTPS, but it only supports HTTP."
    )
    assert record.status_code == 500  # type: ignore[attr-defined]


def test_log_broken_pipe(log: LogRecorder) -> None:
    server_log.log_broken_pipe(("127.0.0.1", 46014))
    (record,) = log.records
    assert record.levelno == logging.INFO
    assert record.getMessage() == "- Broken pipe from ('127.0.0.1', 46014)"
    assert not hasattr(record, "status_code")


def test_djangos_server_formatter_renders_our_records(log: LogRecorder) -> None:
    server_log.log_request("GET /x HTTP/1.1", 404, 9, 0.002)
    formatter = ServerFormatter(fmt="[{server_time}] {message}", style="{")
    formatter.style = no_style()
    line = formatter.format(log.records[0])
    assert re.fullmatch(rf'\[{SERVER_TIME}\] "GET /x HTTP/1\.1" 404 9 2\.0ms', line)


def test_log_request_shows_the_time_given(log: LogRecorder, utc: None) -> None:
    server_log.log_request(
        "GET / HTTP/1.1", 200, 0, 0.0, now=calendar.timegm((2026, 11, 24, 9, 5, 7))
    )
    (record,) = log.records
    assert record.server_time == "24/Nov/2026 09:05:07"  # type: ignore[attr-defined]


# --- Django's default configuration ------------------------------------------------


class DefaultServerLog:
    """``django.server`` configured as Django's ``DEFAULT_LOGGING``, into a buffer."""

    def __init__(self, *, colour: bool) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setLevel(logging.INFO)
        fmt = DEFAULT_LOGGING["formatters"]["django.server"]["format"]
        formatter = ServerFormatter(fmt=fmt, style="{")
        formatter.style = color_style(force_color=True) if colour else no_style()
        self.handler.setFormatter(formatter)

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()


@contextlib.contextmanager
def default_server_log(*, colour: bool = False) -> Iterator[DefaultServerLog]:
    """Configure ``django.server`` as Django does by default, for the ``with`` block.

    Entered in the test's body: pytest adds its capture handlers to loggers
    that do not propagate at the start of each phase.
    """
    logger = logging.getLogger("django.server")
    saved = (logger.handlers[:], logger.filters[:], logger.level, logger.propagate)
    log = DefaultServerLog(colour=colour)
    logger.handlers[:] = [log.handler]
    logger.filters[:] = []
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield log
    finally:
        logger.handlers[:], logger.filters[:], level, logger.propagate = saved
        logger.setLevel(level)


@pytest.mark.usefixtures("utc")
@pytest.mark.parametrize("colour", [False, True])
@pytest.mark.parametrize("status", [101, 200, 206, 302, 304, 400, 404, 413, 500, 503])
def test_default_configuration_writes_djangos_line(colour: bool, status: int) -> None:
    when = calendar.timegm((2026, 12, 2, 9, 5, 7))
    with default_server_log(colour=colour) as log:
        server_log.log_request(
            'GET /caf\xe9/%s "q" HTTP/1.1', status, 12, 0.0042, now=when
        )
    (line,) = log.lines()
    text = f'"GET /caf\\xe9/%s "q" HTTP/1.1" {status} 12 4.2ms'
    assert line.startswith("[02/Dec/2026 09:05:07] ")
    assert line.endswith(text) is not colour
    assert text in line
    assert ("\x1b[" in line) is colour


def test_default_configuration_keeps_djangos_colours() -> None:
    when = calendar.timegm((2026, 12, 2, 23, 59, 59))
    with default_server_log(colour=True) as log:
        server_log.log_request("GET / HTTP/1.1", 200, 0, 0.0, now=when)
        server_log.log_request("GET / HTTP/1.1", 404, 0, 0.0, now=when)
        server_log.log_request("GET / HTTP/1.1", 500, 0, 0.0, now=when)
    style = color_style(force_color=True)
    ok, missing, failed = log.lines()
    assert style.HTTP_SUCCESS('"GET / HTTP/1.1" 200 0 0.0ms') in ok
    assert style.HTTP_NOT_FOUND('"GET / HTTP/1.1" 404 0 0.0ms') in missing
    assert style.HTTP_SERVER_ERROR('"GET / HTTP/1.1" 500 0 0.0ms') in failed


def test_default_configuration_honours_the_handler_level() -> None:
    with default_server_log() as log:
        log.handler.setLevel(logging.WARNING)
        server_log.log_request("GET /quiet HTTP/1.1", 200, 0, 0.0)
        server_log.log_request("GET /loud HTTP/1.1", 404, 0, 0.0)
    (line,) = log.lines()
    assert '"GET /loud HTTP/1.1" 404' in line


# --- through the running server -------------------------------------------------------


def status_app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
    """``/<status>`` answers that status with body ``hello``."""
    status = int(environ["PATH_INFO"].rsplit("/", 1)[-1] or 200)
    if status == 304:
        start_response("304 Not Modified", [])
        return []
    start_response(f"{status} X", [("Content-Type", "text/plain")])
    return [b"hello"]


def access_lines(log: LogRecorder) -> list[logging.LogRecord]:
    return [r for r in list(log.records) if r.getMessage().startswith('"')]


@pytest.mark.parametrize(
    ("status", "level"),
    [
        (200, logging.INFO),
        (302, logging.INFO),
        (404, logging.WARNING),
        (403, logging.WARNING),
        (500, logging.ERROR),
    ],
)
def test_server_access_line(log: LogRecorder, status: int, level: int) -> None:
    with serve_app(status_app) as live, live.connect() as client:
        client.send(f"GET /{status}?a=%20 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert client.read_response().status == status
        record = log.wait_message(f'"GET /{status}?a=%20 HTTP/1.1"')
    assert re.fullmatch(
        rf'"GET /{status}\?a=%20 HTTP/1\.1" {status} 5 {DURATION}', record.getMessage()
    )
    assert record.levelno == level
    assert record.status_code == status  # type: ignore[attr-defined]
    assert re.fullmatch(SERVER_TIME, record.server_time)  # type: ignore[attr-defined]


def test_server_logs_the_raw_request_line(log: LogRecorder) -> None:
    with serve_app(status_app) as live, live.connect() as client:
        client.send(b"GET //x/%2541/200?x=%C3%A9 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.read_response().status == 200
        record = log.wait_message('" 200 ')
    line = '"GET //x/%2541/200?x=%C3%A9 HTTP/1.1" 200 5 '
    assert record.getMessage().startswith(line)


def test_server_head_and_304_log_size_zero(log: LogRecorder) -> None:
    with serve_app(status_app) as live, live.connect() as client:
        assert client.request("HEAD", "/200").status == 200
        assert client.request("GET", "/304").status == 304
        assert client.request("GET", "/200").body == b"hello"
        log.wait_message('"GET /200 HTTP/1.1"')
    lines = [r.getMessage() for r in access_lines(log)]
    assert re.fullmatch(rf'"HEAD /200 HTTP/1\.1" 200 0 {DURATION}', lines[0])
    assert re.fullmatch(rf'"GET /304 HTTP/1\.1" 304 0 {DURATION}', lines[1])
    assert re.fullmatch(rf'"GET /200 HTTP/1\.1" 200 5 {DURATION}', lines[2])


def test_server_error_logs_code_line_then_access_line(log: LogRecorder) -> None:
    with serve_app(status_app) as live, live.connect() as client:
        client.send(b"GARBAGE\r\n\r\n")
        assert client.read_response().status == 400
        access = log.wait_message('"GARBAGE" 400 -')
    messages = log.messages()
    code_line = next(m for m in messages if m.startswith("code 400, message "))
    assert messages.index(code_line) < messages.index(access.getMessage())
    assert re.fullmatch(rf'"GARBAGE" 400 - {DURATION}', access.getMessage())
    assert access.levelno == logging.WARNING


def test_server_escapes_non_ascii_request_lines(log: LogRecorder) -> None:
    with serve_app(status_app) as live, live.connect() as client:
        client.send(b"GET /caf\xc3\xa9/\x1b HTTP/1.1\r\nHost: x\r\n\r\n")
        # h11 refuses a target that is not all visible ASCII.
        assert client.read_response().status == 400
        record = log.wait_message('" 400 ')
    assert record.getMessage().startswith('"GET /caf\\xc3\\xa9/\\x1b HTTP/1.1" 400 ')
    assert "\x1b" not in "".join(log.messages())


def test_server_access_line_comes_after_the_streamed_body(log: LogRecorder) -> None:
    chunks_sent: list[int] = []

    def app(environ: WSGIEnviron, start_response) -> Iterator[bytes]:
        start_response("200 OK", [])
        for i in range(3):
            chunks_sent.append(len(access_lines(log)))
            yield b"x" * (i + 1)

    with serve_app(app) as live, live.connect() as client:
        assert client.request("GET", "/s").body == b"xxxxxx"
        record = log.wait_message('"GET /s HTTP/1.1"')
    assert chunks_sent == [0, 0, 0]
    assert re.fullmatch(rf'"GET /s HTTP/1\.1" 200 6 {DURATION}', record.getMessage())

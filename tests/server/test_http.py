"""The server in-process over real sockets: connections, responses, environ, errors."""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import pytest

from runserver_plus.server.wsgi import FileWrapper, WSGIEnviron
from tests import live
from tests.helpers import wait_until
from tests.live import (
    LogRecorder,
    RawClient,
    serve_app,
)

TLS_MESSAGE = (
    "You're accessing the development server over HTTPS, but it only supports HTTP."
)
APP_ERROR_BODY = b"A server error occurred.  Please contact the administrator."

# A leaked file or socket raises its ResourceWarning in the test that leaked it.
# Each test runs on both drivers (tests/conftest.py: server_mode).
pytestmark = pytest.mark.usefixtures("collect_leaks", "server_mode")


def path_app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
    """Answers with its PATH_INFO, so pipelined answers can be told apart."""
    body = environ["PATH_INFO"].encode("latin-1")
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]


def stream_app(environ: WSGIEnviron, start_response) -> Iterator[bytes]:
    """A body of unknown length: three pieces from a generator."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"one,"
    yield b""
    yield b"two,"
    yield b"three"


def unread_body_app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
    """Never touches wsgi.input."""
    return path_app(environ, start_response)


class Recorder(live.Recorder):
    """Answers with the body it read (``ok`` for none)."""

    def answer(self, environ: WSGIEnviron) -> bytes:
        return bytes(environ["test.body"]) or b"ok"


def get(path: str, *headers: str, version: str = "1.1") -> bytes:
    lines = [f"GET {path} HTTP/{version}", "Host: testserver", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# --- persistent connections ---------------------------------------------------------


def test_several_requests_on_one_connection() -> None:
    with serve_app(path_app) as live, live.connect() as client:
        for i in range(5):
            response = client.request("GET", f"/r{i}")
            assert response.status == 200
            assert response.body == f"/r{i}".encode()
            assert response.header("Connection") is None
            assert response.header("Content-Length") == str(len(response.body))


def test_pipelined_requests_in_one_send() -> None:
    with serve_app(path_app) as live, live.connect() as client:
        client.send(get("/one") + get("/two") + get("/three"))
        bodies = [client.read_response().body for _ in range(3)]
        assert bodies == [b"/one", b"/two", b"/three"]
        assert client.request("GET", "/four").body == b"/four"


def test_pipelined_request_split_mid_head() -> None:
    with serve_app(path_app) as live, live.connect() as client:
        second = get("/two")
        client.send(get("/one") + second[:7])
        assert client.read_response().body == b"/one"
        client.send(second[7:])
        assert client.read_response().body == b"/two"


@pytest.mark.wsgi_only
def test_reused_connection_answers_head_and_body() -> None:
    def app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"small"]

    with serve_app(app) as live, live.connect() as client:
        for _ in range(3):
            response = client.request("GET", "/")
            assert response.body == b"small"
            assert response.header("Content-Length") == "5"
            assert response.header("Connection") is None
        assert not client.is_closed(timeout=0.05)


def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout() -> None:
    with serve_app(path_app, idle_timeout=0.3) as live, live.connect() as client:
        assert client.request("GET", "/").status == 200
        assert client.is_closed(timeout=5)


def test_idle_timeout_also_applies_before_the_first_request() -> None:
    with serve_app(path_app, idle_timeout=0.3) as live, live.connect() as client:
        assert client.is_closed(timeout=5)


def test_connection_close_request_header_is_honoured() -> None:
    with serve_app(path_app) as live, live.connect() as client:
        client.send(get("/bye", "Connection: close"))
        response = client.read_response()
        assert response.body == b"/bye"
        assert client.is_closed(timeout=5)


def test_connection_close_from_the_app_closes_after_the_response() -> None:
    def app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", "2"), ("Connection", "close")])
        return [b"ok"]

    with serve_app(app) as live, live.connect() as client:
        response = client.request("GET", "/")
        assert response.body == b"ok"
        assert response.header("Connection") == "close"
        assert client.is_closed(timeout=5)


def test_http_10_request_gets_a_response_then_close() -> None:
    with serve_app(path_app) as live, live.connect() as client:
        client.send(b"GET /old HTTP/1.0\r\n\r\n")
        response = client.read_response()
        assert response.status == 200
        assert response.body == b"/old"
        assert client.is_closed(timeout=5)


def test_hop_by_hop_headers_of_the_app_never_reach_the_wire() -> None:
    def app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
        start_response(
            "200 OK",
            [
                ("Content-Length", "2"),
                ("Keep-Alive", "timeout=99"),
                ("Transfer-Encoding", "gzip"),
                ("Upgrade", "h2c"),
                ("X-Kept", "yes"),
            ],
        )
        return [b"ok"]

    with serve_app(app) as live, live.connect() as client:
        response = client.request("GET", "/")
        assert response.body == b"ok"
        names = {name.lower() for name, _ in response.headers}
        assert not names & {"keep-alive", "transfer-encoding", "upgrade"}
        assert response.header("X-Kept") == "yes"
        assert response.header("Date")
        assert response.header("Server")
        assert client.request("GET", "/again").body == b"ok"


# --- responses of unknown length, HEAD, 100-continue, unread bodies ---------------


def test_generator_response_is_chunked_to_http_11() -> None:
    with serve_app(stream_app) as live, live.connect() as client:
        response = client.request("GET", "/")
        assert response.header("Transfer-Encoding") == "chunked"
        assert response.header("Content-Length") is None
        assert response.body == b"one,two,three"
        # the stream's end is marked, so the connection stays usable
        assert client.request("GET", "/").body == b"one,two,three"


def test_generator_response_is_close_delimited_to_http_10() -> None:
    with serve_app(stream_app) as live, live.connect() as client:
        client.send(b"GET / HTTP/1.0\r\n\r\n")
        response = client.read_response()
        assert response.header("Transfer-Encoding") is None
        assert response.header("Content-Length") is None
        assert response.header("Connection") == "close"
        assert response.body == b"one,two,three"  # read up to the close


def test_head_sends_no_body_and_keeps_the_connection() -> None:
    with serve_app(path_app) as live, live.connect() as client:
        response = client.request("HEAD", "/abc")
        assert response.status == 200
        assert response.header("Content-Length") == "4"
        # a stray body would be read here as the next status line
        assert client.request("GET", "/next").body == b"/next"


def test_head_on_a_generator_app_sends_no_body() -> None:
    with serve_app(stream_app) as live, live.connect() as client:
        response = client.request("HEAD", "/")
        assert response.status == 200
        assert response.header("Content-Length") is None
        assert client.request("GET", "/").body == b"one,two,three"
        assert client.request("HEAD", "/").status == 200
        assert client.buffer == b""
        assert client.request("GET", "/").body == b"one,two,three"


@pytest.mark.wsgi_only
def test_head_with_a_one_item_list_keeps_the_connection() -> None:
    def app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
        start_response("200 OK", [])
        return [b"twelve bytes"]

    with serve_app(app) as live, live.connect() as client:
        response = client.request("HEAD", "/")
        assert response.header("Content-Length") == "12"
        assert response.header("Connection") is None
        assert client.request("GET", "/").body == b"twelve bytes"


def test_no_body_for_204_and_304() -> None:
    def app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
        status = "204 No Content" if environ["PATH_INFO"] == "/204" else "304 X"
        start_response(status, [])
        return [b"should not be sent"]

    with serve_app(app) as live, live.connect() as client:
        assert client.request("GET", "/204").status == 204
        assert client.request("GET", "/304").status == 304
        client.send(get("/204"))
        assert client.read_response().status == 204
        assert not client.is_closed(timeout=0.05)
        assert client.buffer == b""


def test_expect_100_continue() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        client.send(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = client.read_response()
        assert interim.status == 100
        assert interim.raw_head.startswith(b"HTTP/1.1 100 Continue")
        assert recorder.environs == []  # nothing ran before the body came
        client.send(b"hello")
        response = client.read_response()
        assert response.status == 200
        assert response.body == b"hello"
        assert client.request("GET", "/after").status == 200


def test_expect_100_continue_with_the_body_sent_at_once() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        client.send(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\nhello"
        )
        response = client.read_response()
        if response.status == 100:
            response = client.read_response()
        assert response.body == b"hello"
        assert client.request("GET", "/after").status == 200


@pytest.mark.wsgi_only
def test_body_sent_after_the_app_started_reading() -> None:
    started = threading.Event()
    bodies: list[bytes] = []

    def app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
        started.set()
        bodies.append(environ["wsgi.input"].read())
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    with serve_app(app) as live, live.connect() as client:
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        assert started.wait(5)  # the head went alone: the body is still to come
        client.send(b"hello")
        assert client.read_response().status == 200
    assert bodies == [b"hello"]


def test_chunked_body_sent_after_the_head() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        client.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert client.read_response().status == 100  # the head was read alone
        client.send(b"5\r\nhello\r\n0\r\n\r\n")
        response = client.read_response()
    assert response.body == b"hello"
    assert recorder.environs[0]["CONTENT_LENGTH"] == "5"


def test_unread_request_body_is_drained_for_the_next_request() -> None:
    with serve_app(unread_body_app) as live, live.connect() as client:
        client.send(
            b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"
            + get("/next")
        )
        assert client.read_response().body == b"/post"
        assert client.read_response().body == b"/next"


def test_unread_chunked_request_body_does_not_desync() -> None:
    with serve_app(unread_body_app) as live, live.connect() as client:
        client.send(
            b"POST /post HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n" + get("/next")
        )
        assert client.read_response().body == b"/post"
        assert client.read_response().body == b"/next"


@pytest.mark.wsgi_only
def test_body_arriving_after_the_head_is_drained() -> None:
    with serve_app(unread_body_app) as live, live.connect() as client:
        client.send(b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        assert client.read_response().body == b"/post"
        client.send(b"0123456789" + get("/next"))
        assert client.read_response().body == b"/next"


@pytest.mark.wsgi_only
def test_huge_unread_body_closes_the_connection_after_the_response() -> None:
    size = 8 * 1024 * 1024  # far past what the server drains
    with serve_app(unread_body_app) as live, live.connect() as client:
        client.send(
            f"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        response = client.read_response()
        assert response.body == b"/p"
        sender = threading.Thread(target=_send_quietly, args=(client, b"x" * size))
        sender.start()
        try:
            assert client.is_closed(timeout=5)
        finally:
            sender.join(10)


def _send_quietly(client: RawClient, data: bytes) -> None:
    # the server closing the connection midway is what the test expects
    with contextlib.suppress(OSError):
        client.send(data)


# --- the environ ---------------------------------------------------------------------


def test_environ_is_built_from_the_request_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS", "on")
    monkeypatch.setenv("HTTP_X_FOO", "leak")
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        environ = recorder.get(client, get("/"))
        assert environ["wsgi.url_scheme"] == "http"
        assert "HTTP_X_FOO" not in environ
        assert "HTTPS" not in environ
        assert "PATH" not in environ
        environ = recorder.get(client, get("/", "X-Foo: sent"))
        assert environ["HTTP_X_FOO"] == "sent"


@pytest.mark.wsgi_only
def test_environ_server_and_remote_keys() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        environ = recorder.get(client, get("/a?b=1"))
        assert environ["REMOTE_ADDR"] == "127.0.0.1"
        assert environ["REMOTE_HOST"] == ""
        assert environ["SERVER_PORT"] == str(live.port)
        assert environ["SERVER_NAME"] == "localhost"
        assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
        assert environ["REQUEST_METHOD"] == "GET"
        assert environ["SCRIPT_NAME"] == ""
        assert environ["GATEWAY_INTERFACE"] == "CGI/1.1"
        assert environ["HTTP_HOST"] == "testserver"
        assert environ["wsgi.multithread"] is True
        assert environ["wsgi.multiprocess"] is False
        assert environ["wsgi.run_once"] is False
        assert environ["wsgi.version"] == (1, 0)
        assert environ["wsgi.file_wrapper"] is FileWrapper


def test_environ_multithread_even_without_threading() -> None:
    recorder = Recorder()
    with serve_app(recorder, use_threading=False) as live, live.connect() as client:
        assert recorder.get(client, get("/"))["wsgi.multithread"] is True


def test_environ_drops_headers_with_underscores() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        environ = recorder.get(client, get("/", "X_Foo: underscore", "X-Foo: dash"))
        assert environ["HTTP_X_FOO"] == "dash"
        environ = recorder.get(client, get("/", "X_Only: underscore"))
        assert "HTTP_X_ONLY" not in environ


def test_environ_joins_repeated_headers() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        environ = recorder.get(client, get("/", "X-Multi: a", "X-Multi: b"))
        assert environ["HTTP_X_MULTI"] == "a,b"


@pytest.mark.wsgi_only
def test_environ_content_type_and_length_defaults() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        environ = recorder.get(client, get("/"))
        assert environ["CONTENT_TYPE"] == "text/plain"
        assert environ["CONTENT_LENGTH"] == ""
        environ = recorder.get(
            client,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n{}",
        )
        assert environ["CONTENT_TYPE"] == "application/json"
        assert environ["CONTENT_LENGTH"] == "2"
        assert environ["test.body"] == b"{}"
        assert "HTTP_CONTENT_TYPE" not in environ
        assert "HTTP_CONTENT_LENGTH" not in environ


@pytest.mark.parametrize(
    ("target", "path_info", "query"),
    [
        ("/caf%C3%A9", "/caf\xc3\xa9", ""),
        ("/%2541", "/%41", ""),
        ("/a%2Fb?x=%2F", "/a/b", "x=%2F"),
        ("/s?q=caf%C3%A9&a=+b", "/s", "q=caf%C3%A9&a=+b"),
        ("//evil.example/x", "/evil.example/x", ""),
        ("///x?y=1", "/x", "y=1"),
    ],
)
def test_environ_path_and_query(target: str, path_info: str, query: str) -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        environ = recorder.get(client, get(target))
        assert environ["PATH_INFO"] == path_info
        assert environ["QUERY_STRING"] == query


def test_environ_absolute_form_target() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        environ = recorder.get(
            client,
            b"GET http://example.com:8000/p/q?x=1 HTTP/1.1\r\n"
            b"Host: example.com\r\n\r\n",
        )
        assert environ["PATH_INFO"] == "/p/q"
        assert environ["QUERY_STRING"] == "x=1"
        assert environ["HTTP_HOST"] == "example.com"


def test_wsgi_input_read_and_readline() -> None:
    seen: list[object] = []

    def app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        seen.append(stream.readline())
        seen.append(stream.read(3))
        seen.append(stream.readline())
        seen.append(stream.readline(2))
        seen.append(stream.read())
        seen.append(stream.read())
        seen.append(stream.readline())
        start_response("200 OK", [("Content-Length", "0")])
        return []

    body = b"line1\nline2\nabcdef"
    with serve_app(app) as live, live.connect() as client:
        assert client.request("POST", "/", body=body).status == 200
        # a pipelined request right behind the body is not part of it
        head = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        client.send(head.encode() + body + get("/next"))
        assert client.read_response().status == 200
        assert client.read_response().status == 200
    expected = [b"line1\n", b"lin", b"e2\n", b"ab", b"cdef", b"", b""]
    assert seen[:7] == expected
    assert seen[7:14] == expected


def test_wsgi_input_iterates_lines_and_reads_exact_sizes() -> None:
    seen: list[object] = []

    def app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        seen.append(stream.read(0))
        seen.append(list(stream))
        seen.append(stream.read(10))
        start_response("200 OK", [("Content-Length", "0")])
        return []

    with serve_app(app) as live, live.connect() as client:
        assert client.request("POST", "/", body=b"a\nb\n\nc").status == 200
    assert seen == [b"", [b"a\n", b"b\n", b"\n", b"c"], b""]


def test_wsgi_input_of_a_large_body_in_pieces() -> None:
    received: list[bytes] = []

    def app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        while piece := stream.read(100_000):
            received.append(piece)
        start_response("200 OK", [("Content-Length", "0")])
        return []

    body = bytes(range(256)) * 8192  # 2 MiB
    with serve_app(app) as live, live.connect() as client:
        assert client.request("POST", "/", body=body).status == 200
        assert client.request("GET", "/again").status == 200
    assert b"".join(received) == body
    assert all(len(piece) == 100_000 for piece in received[:-1])


# --- errors --------------------------------------------------------------------------


def raising_app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom")
    return path_app(environ, start_response)


def test_app_exception_is_a_plain_500_and_the_server_lives_on(log: LogRecorder) -> None:
    with serve_app(raising_app) as live:
        with live.connect() as client:
            response = client.request("GET", "/boom")
            assert response.status == 500
            assert response.header("Content-Type") == "text/plain"
            assert response.body == APP_ERROR_BODY
        record = log.wait_message("Exception while serving GET /boom")
        assert record.levelno == logging.ERROR
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], RuntimeError)
        with live.connect() as client:
            assert client.request("GET", "/fine").body == b"/fine"


def test_app_exception_after_start_response_is_a_500() -> None:
    def app(environ: WSGIEnviron, start_response) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "5")])
        raise RuntimeError("before any byte")
        yield b"never"  # pragma: no cover

    with serve_app(app) as live, live.connect() as client:
        response = client.request("GET", "/")
        assert response.status == 500
        assert response.body == APP_ERROR_BODY


def test_app_exception_on_head_sends_no_body() -> None:
    with serve_app(raising_app) as live, live.connect() as client:
        response = client.request("HEAD", "/boom")
        assert response.status == 500
        assert client.is_closed(timeout=5)
        assert client.buffer == b""


def test_app_without_start_response_is_a_500() -> None:
    def app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
        return [b"no status"]

    with serve_app(app) as live, live.connect() as client:
        assert client.request("GET", "/").status == 500


def test_generator_failing_midway_leaves_an_unterminated_body(
    log: LogRecorder,
) -> None:
    closed = threading.Event()

    def app(environ: WSGIEnviron, start_response) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            yield b"first chunk"
            raise RuntimeError("midway")
        finally:
            closed.set()

    with serve_app(app) as live, live.connect() as client:
        client.send(get("/"))
        raw = client.read_until_closed()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in head
        assert body == b"b\r\nfirst chunk\r\n"  # and no last chunk "0\r\n\r\n"
        assert closed.wait(5)
        log.wait_message("Exception while serving GET /")


def test_generator_failing_midway_with_a_content_length_is_cut_short() -> None:
    def app(environ: WSGIEnviron, start_response) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "100")])
        yield b"x" * 10
        raise RuntimeError("midway")

    with serve_app(app) as live, live.connect() as client:
        client.send(get("/"))
        with pytest.raises(ConnectionError, match="closed after 10 of 100 bytes"):
            client.read_response()


@pytest.mark.wsgi_only
def test_app_sending_more_than_its_content_length_is_cut_off() -> None:
    def app(environ: WSGIEnviron, start_response) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "3")])
        yield b"abc"
        yield b"def"

    with serve_app(app) as live, live.connect() as client:
        client.send(get("/") + get("/"))
        assert client.read_response().body == b"abc"
        # never "def" read as the next response: the connection is closed
        with pytest.raises(ConnectionError):
            client.read_response()


@pytest.mark.wsgi_only
def test_close_of_the_app_result_is_called() -> None:
    closed = threading.Event()

    class Result:
        def __iter__(self) -> Iterator[bytes]:
            yield b"body"

        def close(self) -> None:
            closed.set()

    def app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
        start_response("200 OK", [])
        return Result()

    with serve_app(app) as live, live.connect() as client:
        assert client.request("GET", "/").body == b"body"
        assert closed.wait(5)


@pytest.mark.wsgi_only
def test_write_callable_of_start_response() -> None:
    def app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written,")
        return [b"returned"]

    with serve_app(app) as live, live.connect() as client:
        assert client.request("GET", "/").body == b"written,returned"
        assert client.request("GET", "/").body == b"written,returned"


# --- sendfile -------------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 1024)  # 256 KiB
    return path


class FileApp:
    """Answers with a FileWrapper over ``path``, read from ``offset``."""

    def __init__(
        self, path: Path, offset: int, length: int | None, header: bool = True
    ) -> None:
        self.path = path
        self.offset = offset
        self.length = length
        self.header = header
        self.opened: list[IO[bytes]] = []

    def __call__(self, environ: WSGIEnviron, start_response) -> Iterable[bytes]:
        f = self.path.open("rb")
        self.opened.append(f)
        f.seek(self.offset)
        headers = [("Content-Type", "application/octet-stream")]
        if self.header and self.length is not None:
            headers.append(("Content-Length", str(self.length)))
        start_response("200 OK", headers)
        return FileWrapper(f, length=self.length)

    def all_closed(self) -> bool:
        return all(f.closed for f in self.opened)


@pytest.mark.wsgi_only
@pytest.mark.parametrize(
    ("offset", "length"),
    [(0, 256 * 1024), (1000, 5000), (100, 1), (200_000, 62_144)],
)
def test_sendfile_sends_exactly_length_bytes(
    data_file: Path, offset: int, length: int
) -> None:
    data = data_file.read_bytes()
    app = FileApp(data_file, offset, length)
    with serve_app(app) as live, live.connect() as client:
        response = client.request("GET", "/f")
        assert response.header("Content-Length") == str(length)
        assert response.body == data[offset : offset + length]
        # nothing more than announced: the next answer parses cleanly
        assert client.request("GET", "/f").body == data[offset : offset + length]
    wait_until(app.all_closed, 5, "file left open")


@pytest.mark.wsgi_only
def test_sendfile_without_content_length_header(data_file: Path) -> None:
    data = data_file.read_bytes()
    app = FileApp(data_file, 10, 20, header=False)
    with serve_app(app) as live, live.connect() as client:
        response = client.request("GET", "/f")
        assert response.header("Content-Length") == "20"
        assert response.body == data[10:30]
    app = FileApp(data_file, 250_000, None)
    with serve_app(app) as live, live.connect() as client:
        response = client.request("GET", "/f")
        assert response.header("Content-Length") == str(len(data) - 250_000)
        assert response.body == data[250_000:]
        assert client.request("GET", "/f").body == data[250_000:]


@pytest.mark.wsgi_only
def test_head_with_a_file_wrapper_sends_no_body(data_file: Path) -> None:
    app = FileApp(data_file, 0, 1000)
    with serve_app(app) as live, live.connect() as client:
        response = client.request("HEAD", "/f")
        assert response.status == 200
        assert response.header("Content-Length") == "1000"
        assert client.request("GET", "/f").body == data_file.read_bytes()[:1000]
    wait_until(app.all_closed, 5, "file left open")


@pytest.mark.wsgi_only
def test_sendfile_of_an_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    for length in (0, None):
        app = FileApp(empty, 0, length)
        with serve_app(app) as live, live.connect() as client:
            response = client.request("GET", "/f")
            assert response.status == 200
            assert response.header("Content-Length") == "0"
            assert response.body == b""
            assert client.request("GET", "/f").status == 200
        wait_until(app.all_closed, 5, "file left open")


@pytest.mark.wsgi_only
def test_file_wrapper_over_a_file_without_descriptor_is_iterated() -> None:
    def app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", "6")])
        return FileWrapper(io.BytesIO(b"abcdefgh"), blksize=4, length=6)

    with serve_app(app) as live, live.connect() as client:
        assert client.request("GET", "/").body == b"abcdef"
        assert client.request("GET", "/").body == b"abcdef"


# --- TLS on the plain port ------------------------------------------------------------


def test_tls_client_hello_is_refused_and_logged(log: LogRecorder) -> None:
    hello = bytes.fromhex("16030100c4010000c00303") + bytes(range(32)) + b"\x00" * 20
    with serve_app(path_app) as live:
        with live.connect() as client:
            client.send(hello)
            assert client.is_closed(timeout=5)
            assert client.buffer == b""
        record = log.wait_message(TLS_MESSAGE)
        assert record.levelno == logging.ERROR
        assert record.getMessage() == TLS_MESSAGE
        assert record.status_code == 500  # type: ignore[attr-defined]
        with live.connect() as client:
            assert client.request("GET", "/ok").status == 200

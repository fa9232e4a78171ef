"""Strict HTTP/1.1 framing over real sockets: rejections, limits, chunked bodies."""

from __future__ import annotations

import logging
import re
import socket

import pytest

from runserver_plus.server.connection import Connection, ConnectionSettings
from runserver_plus.server.errors import ProtocolError
from runserver_plus.server.request import MAX_HEAD
from runserver_plus.server.transport import RECV_SIZE
from runserver_plus.server.wsgi import base_environ
from tests.live import (
    LogRecorder,
    RawClient,
    Recorder,
    serve_app,
)

# A leaked file or socket raises its ResourceWarning in the test that leaked it.
# Each test runs on both drivers (tests/conftest.py: server_mode).
pytestmark = pytest.mark.usefixtures("collect_leaks", "server_mode")


def assert_rejected(client: RawClient, status: int) -> None:
    """A real error response with a status line, then the connection closes."""
    response = client.read_response()
    assert response.status == status, response.raw_head
    assert response.raw_head.startswith(f"HTTP/1.1 {status} ".encode())
    assert response.header("Connection") == "close"
    assert response.header("Content-Length") == str(len(response.body))
    assert client.is_closed(timeout=5)


H = b"Host: x\r\n"

REJECTED = [
    pytest.param(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n"
        b"hello!",
        400,
        id="conflicting-content-length",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello!",
        400,
        id="conflicting-content-length-list",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\n",
        400,
        id="content-length-not-a-number",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
        400,
        id="content-length-negative",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello",
        400,
        id="content-length-plus-sign",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nhello",
        400,
        id="content-length-hex",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: " + b"9" * 30 + b"\r\n\r\n",
        400,
        id="content-length-huge",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        id="content-length-and-transfer-encoding",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\n\r\n0\r\n\r\n",
        400,
        id="transfer-encoding-and-content-length",
    ),
    # RFC 9112 §6.3: without chunked as the final coding, the body has no end.
    pytest.param(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n",
        400,
        id="transfer-encoding-gzip",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n",
        400,
        id="transfer-encoding-chunked-gzip",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n",
        501,
        id="transfer-encoding-gzip-chunked",
    ),
    pytest.param(
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        id="http-1.0-transfer-encoding",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\n" + H + b"X-Folded: a\r\n b\r\n\r\n",
        400,
        id="obs-fold-space",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\n" + H + b"X-Folded: a\r\n\tb\r\n\r\n",
        400,
        id="obs-fold-tab",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\n Host: x\r\n\r\n",
        400,
        id="obs-fold-first-line",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        400,
        id="whitespace-before-colon",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\n" + H + b"X-Tab\t: y\r\n\r\n",
        400,
        id="tab-before-colon",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\n" + H + b"NoColonHere\r\n\r\n",
        400,
        id="header-without-colon",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\n" + H + b": no name\r\n\r\n",
        400,
        id="header-without-name",
    ),
    pytest.param(b"G(T / HTTP/1.1\r\n" + H + b"\r\n", 400, id="method-paren"),
    pytest.param(b"GE@T / HTTP/1.1\r\n" + H + b"\r\n", 400, id="method-at"),
    pytest.param(b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400, id="double-space"),
    pytest.param(b"GARBAGE\r\n\r\n", 400, id="one-word-request-line"),
    pytest.param(b"GET /\r\n\r\n", 400, id="http-0.9-request-line"),
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="http-11-without-host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, id="two-hosts"),
    pytest.param(
        b"GET / HTTP/1.1\r\n" + H + b"X-Bad: a\x00b\r\n\r\n",
        400,
        id="nul-in-header-value",
    ),
    # RFC 9112 §3.2: a target in a form its method does not take.
    pytest.param(b"PUT s://]ufd/: HTTP/1.1\r\n" + H + b"\r\n", 400, id="bad-absolute"),
    pytest.param(b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400, id="asterisk-with-GET"),
    pytest.param(
        b"GET example.com:443 HTTP/1.1\r\n" + H + b"\r\n",
        400,
        id="authority-form-with-GET",
    ),
    pytest.param(b"GET foo/bar HTTP/1.1\r\n" + H + b"\r\n", 400, id="no-leading-slash"),
    pytest.param(
        b"POST foo/bar HTTP/1.1\r\n" + H + b"Content-Length: 2\r\n\r\nab",
        400,
        id="no-leading-slash-with-body",
    ),
    pytest.param(b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505, id="http-2.0"),
    pytest.param(b"GET / HTTP/3.0\r\n" + H + b"\r\n", 505, id="http-3.0"),
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, id="http-2-preface"),
]


@pytest.mark.parametrize(("raw", "status"), REJECTED)
def test_malformed_request_gets_an_error_response(raw: bytes, status: int) -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        client.send(raw)
        assert_rejected(client, status)
    assert recorder.environs == []


@pytest.mark.parametrize(("raw", "status"), REJECTED[:3] + REJECTED[-3:])
def test_rejection_is_logged_as_django_does(
    log: LogRecorder, raw: bytes, status: int
) -> None:
    with serve_app(Recorder()) as live, live.connect() as client:
        client.send(raw)
        assert client.read_response().status == status
        access = log.wait_for(lambda r: getattr(r, "status_code", None) == status)
    request_line = raw.split(b"\r\n", 1)[0].decode("latin-1")
    assert access.getMessage().startswith(f'"{request_line}" {status} - ')
    assert access.levelno == (logging.ERROR if status >= 500 else logging.WARNING)
    code_lines = [m for m in log.messages() if m.startswith(f"code {status}, message ")]
    assert len(code_lines) == 1


def test_http_version_505_message(log: LogRecorder) -> None:
    with serve_app(Recorder()) as live, live.connect() as client:
        client.send(b"GET / HTTP/2.0\r\n" + H + b"\r\n")
        assert client.read_response().status == 505
        log.wait_message('"GET / HTTP/2.0" 505 -')
    assert "code 505, message Invalid HTTP version (2.0)" in log.messages()


def test_request_line_over_64k_is_414() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        client.send(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n" + H + b"\r\n")
        assert_rejected(client, 414)
    assert recorder.environs == []


def test_request_line_of_64k_without_end_is_414() -> None:
    with serve_app(Recorder()) as live, live.connect() as client:
        client.send(b"GET /" + b"a" * 66_000)  # no line end in sight
        assert_rejected(client, 414)


def test_long_request_line_under_the_limit_is_served() -> None:
    recorder = Recorder()
    path = "/" + "a" * 60_000
    with serve_app(recorder) as live, live.connect() as client:
        assert client.request("GET", path).status == 200
    assert recorder.paths == [path]


def headers(count: int) -> bytes:
    return b"".join(f"X-H{i}: {i}\r\n".encode() for i in range(count - 1))


def test_more_than_100_headers_is_431() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        client.send(b"GET / HTTP/1.1\r\n" + H + headers(101) + b"\r\n")
        assert_rejected(client, 431)
    assert recorder.environs == []


def test_100_headers_are_served() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        client.send(b"GET / HTTP/1.1\r\n" + H + headers(100) + b"\r\n")
        assert client.read_response().status == 200
    assert recorder.environs[0]["HTTP_X_H98"] == "98"


def test_header_line_over_64k_is_431() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        client.send(
            b"GET / HTTP/1.1\r\n" + H + b"X-Huge: " + b"v" * 100_000 + b"\r\n\r\n"
        )
        assert_rejected(client, 431)
    assert recorder.environs == []


def test_huge_head_is_431() -> None:
    with serve_app(Recorder()) as live, live.connect() as client:
        client.send(
            b"GET / HTTP/1.1\r\n"
            + H
            + b"".join(b"X-Big: " + b"v" * 60_000 + b"\r\n" for _ in range(5))
            + b"\r\n"
        )
        assert_rejected(client, 431)


def test_huge_head_is_431_when_the_read_that_crosses_the_limit_ends_it() -> None:
    # As the event loop reads, a chunk at a time with a look after each: four
    # chunks reach the limit exactly, the fifth goes over it and ends the head.
    head = b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"v" * 300_000 + b"\r\n\r\n"
    chunks = [head[i : i + RECV_SIZE] for i in range(0, len(head), RECV_SIZE)]
    assert RECV_SIZE * (len(chunks) - 1) == MAX_HEAD
    ours, theirs = socket.socketpair()
    settings = ConnectionSettings(
        base_environ=base_environ("localhost", 80, "127.0.0.1", multithread=True),
        idle_timeout=5,
        read_timeout=5,
        keep_alive=True,
    )
    connection = Connection(ours, "peer", Recorder(), settings)
    with ours, theirs:
        for chunk in chunks[:-1]:
            theirs.sendall(chunk)
            assert connection.receive_ready()
            assert connection.take_head() is None
        theirs.sendall(chunks[-1])
        assert connection.receive_ready()
        with pytest.raises(ProtocolError) as raised:
            connection.take_head()
    assert raised.value.status == 431


def test_absolute_form_target_is_accepted() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        client.send(
            b"GET http://example.com/a/b?c=d HTTP/1.1\r\nHost: example.com\r\n\r\n"
        )
        assert client.read_response().body == b"/a/b"
        assert client.request("GET", "/next").status == 200
    assert recorder.environs[0]["QUERY_STRING"] == "c=d"


def test_leading_empty_lines_before_a_request_are_ignored() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        client.send(b"\r\n\r\nGET /x HTTP/1.1\r\n" + H + b"\r\n")
        assert client.read_response().body == b"/x"


def test_bare_lf_line_endings_are_accepted() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        client.send(b"GET /lf HTTP/1.1\nHost: x\n\n")
        assert client.read_response().body == b"/lf"


# --- chunked request bodies ------------------------------------------------------

CHUNKED_HEAD = b"POST /up HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"


def test_chunked_body_is_decoded_with_a_content_length() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        client.send(CHUNKED_HEAD + b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
        assert client.read_response().status == 200
    (environ,) = recorder.environs
    assert environ["test.body"] == b"hello world"
    assert environ["CONTENT_LENGTH"] == "11"
    assert "HTTP_TRANSFER_ENCODING" not in environ


def test_chunked_body_with_trailers() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        client.send(CHUNKED_HEAD + b"3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n")
        assert client.read_response().status == 200
        assert client.request("GET", "/next").body == b"/next"
    assert recorder.environs[0]["test.body"] == b"abc"


def test_empty_chunked_body() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        client.send(CHUNKED_HEAD + b"0\r\n\r\n")
        assert client.read_response().status == 200
    assert recorder.environs[0]["test.body"] == b""
    assert recorder.environs[0]["CONTENT_LENGTH"] == "0"


def test_chunked_body_then_pipelined_request() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        client.send(
            CHUNKED_HEAD
            + b"5\r\nhello\r\n0\r\n\r\n"
            + b"GET /second HTTP/1.1\r\n"
            + H
            + b"\r\n"
        )
        assert client.read_response().body == b"/up"
        assert client.read_response().body == b"/second"
    assert recorder.paths == ["/up", "/second"]
    assert recorder.environs[0]["test.body"] == b"hello"
    assert recorder.environs[1]["test.body"] == b""


def test_large_chunked_body() -> None:
    recorder = Recorder()
    piece = bytes(range(256)) * 256  # 64 KiB
    chunks = b"".join(b"10000\r\n" + piece + b"\r\n" for _ in range(40))  # 2.5 MiB
    with serve_app(recorder) as live, live.connect() as client:
        client.send(CHUNKED_HEAD + chunks + b"0\r\n\r\n")
        assert client.read_response().status == 200
    assert recorder.environs[0]["CONTENT_LENGTH"] == str(40 * len(piece))
    assert recorder.environs[0]["test.body"] == piece * 40


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"5\r\nhello\r\nZZ\r\nxx\r\n0\r\n\r\n", id="bad-chunk-size"),
        pytest.param(b"5\r\nhelloXX0\r\n\r\n", id="missing-chunk-crlf"),
        pytest.param(b"ffffffffffffffffffffff\r\nx\r\n", id="chunk-size-overflow"),
        # RFC 9112 §7.1: nothing between the size and the line end; h11 allows
        # whitespace there, other servers do not, and that is how smuggling starts.
        pytest.param(b"a \r\n0123456789\r\n0\r\n\r\n", id="space-after-size"),
        pytest.param(b"5\t\r\nhello\r\n0\r\n\r\n", id="tab-after-size"),
        pytest.param(b"5\r\nhello\r\n3 \r\nabc\r\n0\r\n\r\n", id="space-after-2nd"),
        pytest.param(b"5\r\nhello\r\n0 \r\n\r\n", id="space-after-last-size"),
        pytest.param(b"5;a=b \r\nhello\r\n0\r\n\r\n", id="space-after-extension"),
    ],
)
def test_malformed_chunked_body_is_400(body: bytes) -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        client.send(CHUNKED_HEAD + body)
        assert_rejected(client, 400)
    assert recorder.environs == []


def test_client_leaving_mid_chunked_body_is_not_an_error() -> None:
    recorder = Recorder()
    with serve_app(recorder) as live:
        with live.connect() as client:
            client.send(CHUNKED_HEAD + b"5\r\nhel")
        with live.connect() as client:
            assert client.request("GET", "/next").status == 200
    assert recorder.paths == ["/next"]


# --- request smuggling -----------------------------------------------------------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\n" + H + b"\r\n"

SMUGGLING = [
    pytest.param(
        b"POST /front HTTP/1.1\r\n" + H + b"Content-Length: 6\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        id="CL.TE",
    ),
    pytest.param(
        b"POST /front HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
        b"Content-Length: 4\r\n\r\n5c\r\n" + SMUGGLED + b"\r\n0\r\n\r\n",
        id="TE.CL",
    ),
    pytest.param(
        b"POST /front HTTP/1.1\r\n" + H + b"Content-Length: 6\r\n"
        b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        id="CL.TE-space-before-colon",
    ),
    pytest.param(
        b"POST /front HTTP/1.1\r\n" + H + b"Content-Length: 6\r\n"
        b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        id="CL.TE-xchunked",
    ),
    pytest.param(
        b"POST /front HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n" + SMUGGLED,
        id="TE.TE",
    ),
    pytest.param(
        b"POST /front HTTP/1.1\r\n" + H + b"Content-Length: 6\r\n"
        b"X: y\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        id="CL.TE-folded",
    ),
    pytest.param(
        b"POST /front HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n"
        b"Content-Length: 44\r\n\r\n" + SMUGGLED,
        id="CL.CL",
    ),
]


@pytest.mark.parametrize("raw", SMUGGLING)
def test_smuggling_attempt_is_one_400_and_never_reaches_the_app(raw: bytes) -> None:
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        client.send(raw)
        raw_answer = client.read_until_closed()
    # One 400 for the ambiguous framing, and the app sees neither request.
    assert recorder.paths == []
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", raw_answer) == [b"400"], raw_answer


def test_chunk_extension_smuggling_is_refused() -> None:
    # A lone LF inside a chunk extension: lenient parsers disagree on where it ends.
    recorder = Recorder()
    with serve_app(recorder) as live, live.connect() as client:
        client.send(CHUNKED_HEAD + b"2;\n\r\nxx\r\n45\r\n0\r\n\r\n" + SMUGGLED)
        raw_answer = client.read_until_closed()
    # h11 refuses the size line, so neither request reaches the app.
    assert recorder.paths == []
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", raw_answer) == [b"400"], raw_answer


def test_a_higher_http_1_minor_version_is_served_as_1_1() -> None:
    # RFC 9110 §2.5: only another major version is refused.
    with serve_app(Recorder()) as live, live.connect() as client:
        client.send(b"GET /one HTTP/1.2\r\n" + H + b"\r\n")
        assert client.read_response().body == b"/one"
        assert client.request("GET", "/two").status == 200


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        pytest.param(
            b"HEAD /static/a.css HTTP/1.1\r\n"
            + H
            + b"Transfer-Encoding: identity\r\n\r\n",
            400,
            id="bad-framing",
        ),
        pytest.param(
            b"HEAD / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n",
            501,
            id="unsupported-coding",
        ),
        pytest.param(b"HEAD /" + b"a" * 66_000, 414, id="request-line-too-long"),
        pytest.param(
            b"HEAD / HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 300_000 + b"\r\n\r\n",
            431,
            id="head-too-large",
        ),
    ],
)
def test_the_servers_own_error_for_head_has_no_body(raw: bytes, status: int) -> None:
    # RFC 9110 §9.3.2: the answer to HEAD never has content, errors included.
    with serve_app(Recorder()) as live, live.connect() as client:
        client.send(raw)
        response = client.read_response(head_request=True)
        assert response.status == status, response.raw_head
        assert int(response.header("Content-Length") or 0) > 0  # as for a GET
        assert client.is_closed(timeout=5)
        assert client.buffer == b""


def test_rejection_reasons_do_not_quote_raw_bytes() -> None:
    with serve_app(Recorder()) as live, live.connect() as client:
        client.send(b"G@T / HTTP/1.1\r\n" + H + b"\r\n")
        response = client.read_response()
    assert response.status == 400
    assert b"bytearray" not in response.body
    assert b"illegal request line" in response.body

"""Tier-1 units of the server's WSGI side: targets, environ, headers, status, files."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import h11
import pytest

from runserver_plus.server.wsgi import (
    HOP_BY_HOP,
    SERVER_SOFTWARE,
    FileWrapper,
    WSGIEnviron,
    base_environ,
    build_environ,
    http_date,
    parse_status,
    response_headers,
    split_target,
)

# --- split_target -------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"/", b"/", b""),
        (b"/a/b", b"/a/b", b""),
        (b"/a?b=1", b"/a", b"b=1"),
        (b"/a?", b"/a", b""),
        (b"/a?b=1?c=2", b"/a", b"b=1?c=2"),
        (b"/a%20b?q=%20", b"/a%20b", b"q=%20"),
        # absolute-form (RFC 9112 §3.2.2)
        (b"http://example.com/p/q?x=1", b"/p/q", b"x=1"),
        (b"http://example.com:8000/p", b"/p", b""),
        (b"HTTPS://Example.com/p", b"/p", b""),
        (b"http://example.com", b"/", b""),
        (b"http://example.com?x=1", b"/", b"x=1"),
        (b"http://example.com//evil.com/x", b"/evil.com/x", b""),
        # never a scheme-relative path (CPython gh-87389)
        (b"//x", b"/x", b""),
        (b"//evil.com/a?b", b"/evil.com/a", b"b"),
        (b"///etc//passwd", b"/etc//passwd", b""),
        # a "://" later in an origin-form path is just part of the path
        (b"/go/http://example.com/", b"/go/http://example.com/", b""),
        (b"/?next=http://x/", b"/", b"next=http://x/"),
        # asterisk-form (OPTIONS *) is left alone
        (b"*", b"*", b""),
    ],
)
def test_split_target(target: bytes, path: bytes, query: bytes) -> None:
    assert split_target(target) == (path, query)


# --- build_environ ------------------------------------------------------------


def make_request(
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    method: str = "GET",
    http_version: str = "1.1",
) -> h11.Request:
    """A request as the server's parser hands it over (lower-cased names)."""
    if headers is None:
        headers = [("Host", "testserver")]
    return h11.Request(
        method=method, target=target, headers=headers, http_version=http_version
    )


BASE = base_environ("localhost", 8123, "127.0.0.1", multithread=True)


def environ_for(request: h11.Request, content_length: int | None = None) -> WSGIEnviron:
    return build_environ(BASE, request, io.BytesIO(b""), content_length)


def test_base_environ_holds_the_wsgi_and_cgi_constants() -> None:
    assert BASE["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert BASE["SCRIPT_NAME"] == ""
    assert BASE["SERVER_NAME"] == "localhost"
    assert BASE["SERVER_PORT"] == "8123"
    assert BASE["SERVER_SOFTWARE"] == SERVER_SOFTWARE
    assert BASE["REMOTE_ADDR"] == "127.0.0.1"
    assert BASE["REMOTE_HOST"] == ""
    assert "REMOTE_PORT" not in BASE
    assert BASE["wsgi.version"] == (1, 0)
    assert BASE["wsgi.url_scheme"] == "http"
    assert BASE["wsgi.errors"] is sys.stderr
    assert BASE["wsgi.multithread"] is True
    assert BASE["wsgi.multiprocess"] is False
    assert BASE["wsgi.run_once"] is False
    assert BASE["wsgi.file_wrapper"] is FileWrapper


def test_base_environ_multithread_flag() -> None:
    single = base_environ("localhost", 1, "::1", multithread=False)
    assert single["wsgi.multithread"] is False
    assert single["REMOTE_ADDR"] == "::1"


def test_build_environ_request_keys() -> None:
    body = io.BytesIO(b"")
    request = make_request("/caf%C3%A9/x?a=1&b=%20", method="POST")
    environ = build_environ(BASE, request, body, None)
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["PATH_INFO"] == "/caf\xc3\xa9/x"
    assert environ["QUERY_STRING"] == "a=1&b=%20"
    assert environ["HTTP_HOST"] == "testserver"
    assert environ["wsgi.input"] is body


def test_build_environ_does_not_change_the_base() -> None:
    before = dict(BASE)
    environ_for(make_request(headers=[("Host", "a"), ("X-Foo", "1")]))
    assert before == BASE


def test_build_environ_http_10() -> None:
    environ = environ_for(make_request(headers=[], http_version="1.0"))
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.0"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/caf%C3%A9", "/caf\xc3\xa9"),  # bytes as latin-1, per PEP 3333
        ("/%2541", "/%41"),  # decoded once, not twice
        ("/a%2Fb", "/a/b"),
        ("/a%20b", "/a b"),
        ("/a+b", "/a+b"),  # '+' means space only in a query
        ("/%ff", "/\xff"),
        ("/%zz", "/%zz"),  # not an escape: left as is
        ("//x", "/x"),
    ],
)
def test_build_environ_path_info_is_decoded_once(path: str, expected: str) -> None:
    assert environ_for(make_request(path))["PATH_INFO"] == expected


def test_build_environ_query_string_is_raw() -> None:
    environ = environ_for(make_request("/p?a=caf%C3%A9&b=%2541&c=+"))
    assert environ["QUERY_STRING"] == "a=caf%C3%A9&b=%2541&c=+"


def test_build_environ_defaults_for_missing_content_headers() -> None:
    environ = environ_for(make_request())
    assert environ["CONTENT_TYPE"] == "text/plain"
    assert environ["CONTENT_LENGTH"] == ""
    assert "HTTP_CONTENT_TYPE" not in environ
    assert "HTTP_CONTENT_LENGTH" not in environ


def test_build_environ_content_headers_without_http_prefix() -> None:
    request = make_request(
        headers=[
            ("Host", "x"),
            ("Content-Type", "application/json"),
            ("Content-Length", "12"),
        ],
        method="POST",
    )
    environ = environ_for(request)
    assert environ["CONTENT_TYPE"] == "application/json"
    assert environ["CONTENT_LENGTH"] == "12"
    assert "HTTP_CONTENT_TYPE" not in environ
    assert "HTTP_CONTENT_LENGTH" not in environ


def test_build_environ_decoded_chunked_body_gets_a_length() -> None:
    request = make_request(
        headers=[("Host", "x"), ("Transfer-Encoding", "chunked")], method="POST"
    )
    environ = environ_for(request, content_length=11)
    assert environ["CONTENT_LENGTH"] == "11"
    assert "HTTP_TRANSFER_ENCODING" not in environ


def test_build_environ_drops_headers_with_underscores() -> None:
    request = make_request(
        headers=[("Host", "x"), ("X_Foo", "underscore"), ("X-Foo", "dash")]
    )
    environ = environ_for(request)
    assert environ["HTTP_X_FOO"] == "dash"
    request = make_request(headers=[("Host", "x"), ("X_Only", "underscore")])
    assert "HTTP_X_ONLY" not in environ_for(request)


def test_build_environ_joins_repeated_headers_with_commas() -> None:
    request = make_request(
        headers=[("Host", "x"), ("X-Multi", "a"), ("X-Multi", "b"), ("x-multi", "c")]
    )
    assert environ_for(request)["HTTP_X_MULTI"] == "a,b,c"


def test_build_environ_header_values_are_latin1() -> None:
    request = h11.Request(
        method=b"GET",
        target=b"/",
        headers=[(b"Host", b"x"), (b"X-Name", b"caf\xc3\xa9")],
    )
    assert environ_for(request)["HTTP_X_NAME"] == "caf\xc3\xa9"


def test_build_environ_ignores_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS", "on")
    monkeypatch.setenv("HTTP_X_LEAK", "leak")
    monkeypatch.setenv("RUNSERVER_PLUS_TEST_VAR", "1")
    environ = environ_for(make_request())
    assert environ["wsgi.url_scheme"] == "http"
    assert "HTTP_X_LEAK" not in environ
    assert "HTTPS" not in environ
    assert "RUNSERVER_PLUS_TEST_VAR" not in environ


# --- response_headers ---------------------------------------------------------


def names(block: bytes) -> list[bytes]:
    return [line.split(b":", 1)[0].lower() for line in lines_of(block)]


def lines_of(block: bytes) -> list[bytes]:
    lines = block.splitlines(keepends=True)
    assert b"".join(lines) == block
    assert all(line.endswith(b"\r\n") for line in lines)
    return lines


def test_response_headers_adds_date_and_server() -> None:
    before = http_date()
    block, close, length = response_headers([("Content-Type", "text/plain")])
    lines = lines_of(block)
    assert lines[0] == b"Content-Type: text/plain\r\n"
    assert lines[1] in (b"Date: " + d + b"\r\n" for d in (before, http_date()))
    assert lines[2] == b"Server: " + SERVER_SOFTWARE.encode() + b"\r\n"
    assert len(lines) == 3
    assert close is False
    assert length is None


def test_response_headers_keeps_the_apps_date_and_server() -> None:
    block, _, _ = response_headers([("date", "yesterday"), ("SERVER", "mine")])
    assert block == b"date: yesterday\r\nSERVER: mine\r\n"


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP))
def test_response_headers_drops_hop_by_hop(name: str) -> None:
    block, _, _ = response_headers([(name.title(), "x"), ("X-Kept", "1")])
    assert name.encode() not in names(block)
    assert b"x-kept" in names(block)


def test_hop_by_hop_set() -> None:
    expected = {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
    assert expected == HOP_BY_HOP


@pytest.mark.parametrize(
    ("value", "close"),
    [
        ("close", True),
        ("Close", True),
        ("keep-alive, close", True),
        ("keep-alive", False),
        ("Upgrade", False),
    ],
)
def test_response_headers_detects_connection_close(value: str, close: bool) -> None:
    block, wants_close, _ = response_headers([("Connection", value)])
    assert wants_close is close
    assert b"connection" not in names(block)


def test_response_headers_encodes_latin1() -> None:
    block, _, _ = response_headers([("X-Name", "caf\xe9")])
    assert lines_of(block)[0] == b"X-Name: caf\xe9\r\n"


def test_response_headers_keeps_repeated_headers() -> None:
    block, _, _ = response_headers([("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
    assert lines_of(block)[:2] == [b"Set-Cookie: a=1\r\n", b"Set-Cookie: b=2\r\n"]


def test_response_headers_returns_the_declared_length() -> None:
    _, _, length = response_headers([("Content-Length", "14")])
    assert length == 14


@pytest.mark.parametrize(
    "header",
    [
        ("X-Split", "a\r\nSet-Cookie: evil=1"),
        ("X-Split", "a\nb"),
        ("X-Nul", "a\x00b"),
        ("X-Cr", "a\rb"),
        ("X-Not-Text", 1),
        ("X-Bytes", b"x"),
        ("Bad Name", "x"),
        ("Bad:Name", "x"),
        ("", "x"),
        ("Content-Length", "-1"),
        ("Content-Length", "1e3"),
        ("Content-Length", "\u0661"),
    ],
)
def test_response_headers_refuse_what_could_split_the_response(header) -> None:
    with pytest.raises(ValueError, match="invalid"):
        response_headers([header])


def test_two_content_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid Content-Length"):
        response_headers([("Content-Length", "1"), ("Content-Length", "1")])


# --- parse_status ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("200 OK", (200, b"OK")),
        ("404 Not Found", (404, b"Not Found")),
        ("599 Custom Thing", (599, b"Custom Thing")),
        ("204", (204, b"")),
        ("200 Ok caf\xe9", (200, b"Ok caf\xe9")),
    ],
)
def test_parse_status(status: str, expected: tuple[int, bytes]) -> None:
    assert parse_status(status) == expected


@pytest.mark.parametrize(
    "status",
    [
        "",
        "OK",
        "OK 200",
        "20 OK",
        "2000 OK",
        " 200 OK",
        "2x0 OK",
        "-20 OK",
        "+20 OK",
        "200\tOK",
        "\u0662\u0660\u0660 OK",  # Arabic-Indic digits pass str.isdigit()
        "\xb200 OK",  # a superscript two passes it too
    ],
)
def test_parse_status_rejects(status: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the contract names no message
        parse_status(status)


# --- FileWrapper ------------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 4)  # 1024 bytes
    return path


def test_file_wrapper_iterates_to_eof_in_blocks(data_file: Path) -> None:
    with data_file.open("rb") as f:
        chunks = list(FileWrapper(f, blksize=300))
    assert [len(c) for c in chunks] == [300, 300, 300, 124]
    assert b"".join(chunks) == data_file.read_bytes()


def test_file_wrapper_length_from_current_position(data_file: Path) -> None:
    with data_file.open("rb") as f:
        f.seek(10)
        chunks = list(FileWrapper(f, blksize=4, length=10))
    assert b"".join(chunks) == data_file.read_bytes()[10:20]
    assert [len(c) for c in chunks] == [4, 4, 2]


def test_file_wrapper_length_past_eof_stops_at_eof(data_file: Path) -> None:
    with data_file.open("rb") as f:
        f.seek(1000)
        assert b"".join(FileWrapper(f, length=100)) == data_file.read_bytes()[1000:]


def test_file_wrapper_zero_length(data_file: Path) -> None:
    with data_file.open("rb") as f:
        assert list(FileWrapper(f, length=0)) == []


def test_file_wrapper_close_closes_the_file(data_file: Path) -> None:
    f = data_file.open("rb")
    wrapper = FileWrapper(f)
    wrapper.close()
    assert f.closed


def test_file_wrapper_close_without_file_close() -> None:
    class Reader:
        def read(self, size: int) -> bytes:
            return b""

    FileWrapper(Reader()).close()  # type: ignore[arg-type]


def test_file_wrapper_sendfile_span_of_a_real_file(data_file: Path) -> None:
    with data_file.open("rb") as f:
        f.seek(100)
        assert FileWrapper(f, length=50).sendfile_span() == (100, 50)
        assert FileWrapper(f).sendfile_span() == (100, None)


def test_file_wrapper_no_sendfile_span_without_a_descriptor() -> None:
    assert FileWrapper(io.BytesIO(b"abc")).sendfile_span() is None


def test_file_wrapper_no_sendfile_span_for_a_closed_file(data_file: Path) -> None:
    f = data_file.open("rb")
    f.close()
    assert FileWrapper(f).sendfile_span() is None

"""StaticFilesApp called directly as a WSGI application on real files."""

from __future__ import annotations

import dataclasses
import gc
import io
import logging
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import pytest
from django.core import signals

from runserver_plus.server.wsgi import FileWrapper
from runserver_plus.static import StaticFilesApp

MTIME_NS = 1_700_000_000_250_000_000  # Tue, 14 Nov 2023 22:13:20.25 GMT
LAST_MODIFIED = "Tue, 14 Nov 2023 22:13:20 GMT"
HELLO = b"hello world\n"
FIXTURES = Path(__file__).parent.parent / "static_fixtures"  # in tests.settings


@dataclasses.dataclass
class Result:
    status: str
    headers: list[tuple[str, str]]
    body: bytes
    iterable: Iterable[bytes]

    @property
    def code(self) -> int:
        return int(self.status.split()[0])

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        assert len(values) <= 1, f"{name} repeated: {values}"
        return values[0] if values else None


class Downstream:
    """The wrapped application: records the paths it was asked for."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.paths.append(environ["PATH_INFO"])
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")]
        )
        return [b"app"]


def call(
    app: Any,
    target: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    start_response: Any = None,
) -> Result:
    """Call ``app`` as our server would for the request target ``target``.

    The path is percent-decoded once into latin-1, as the server does (PEP 3333).
    """
    path, _, query = target.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query,
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_HOST": "",
        "HTTP_HOST": "testserver",  # pytest-django's ALLOWED_HOSTS
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    captured: list[tuple[str, list[tuple[str, str]]]] = []

    def recording_start_response(status, response_headers, exc_info=None):
        captured.append((status, list(response_headers)))
        return lambda data: None

    iterable = app(environ, start_response or recording_start_response)
    try:
        body = b"".join(iterable)
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            close()
    (status, response_headers), *rest = captured
    assert not rest
    return Result(status, response_headers, body, iterable)


@pytest.fixture
def downstream() -> Downstream:
    return Downstream()


@pytest.fixture
def app(downstream: Downstream) -> StaticFilesApp:
    return StaticFilesApp(downstream, "/static/")


@pytest.fixture
def static_dir(tmp_path: Path, settings: Any) -> Path:
    """An empty STATICFILES_DIRS root; ``tmp_path/secret.txt`` lies outside it."""
    root = tmp_path / "static"
    root.mkdir()
    (tmp_path / "secret.txt").write_bytes(b"TOPSECRET")
    settings.STATICFILES_DIRS = [str(root)]
    return root


def write(path: Path, data: bytes, mtime_ns: int = MTIME_NS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


@pytest.fixture
def hello(static_dir: Path) -> Path:
    return write(static_dir / "hello.txt", HELLO)


def etag_of(path: Path) -> str:
    st = path.stat()
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


# 200 and HEAD


def test_get_sends_the_file_with_full_headers(app, hello):
    result = call(app, "/static/hello.txt")
    assert result.status == "200 OK"
    assert result.body == HELLO
    assert result.header("Content-Type") == "text/plain"
    assert result.header("Content-Length") == "12"
    assert result.header("Content-Disposition") == 'inline; filename="hello.txt"'
    assert result.header("Last-Modified") == LAST_MODIFIED
    assert result.header("ETag") == f'"{MTIME_NS:x}-c"'
    assert result.header("Cache-Control") == "no-cache"
    assert result.header("Accept-Ranges") == "bytes"
    assert result.header("Content-Encoding") is None


def test_get_body_is_a_file_wrapper_the_server_can_sendfile(app, hello):
    result = call(app, "/static/hello.txt")
    assert isinstance(result.iterable, FileWrapper)
    assert result.iterable.filelike.closed


def test_the_file_wrapper_starts_at_the_file_start(app, hello):
    statuses: list[Any] = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)

    wrapper = app(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/static/hello.txt"}, start_response
    )
    try:
        assert isinstance(wrapper, FileWrapper)
        assert wrapper.sendfile_span() == (0, 12)
    finally:
        wrapper.close()
    assert statuses == ["200 OK"]


@pytest.mark.parametrize(
    ("relative", "content_type"),
    [("css/site.css", "text/css"), ("files/hello.txt", "text/plain")],
)
def test_files_come_from_the_project_finders(app, relative, content_type):
    result = call(app, "/static/" + relative)
    assert result.code == 200
    assert result.header("Content-Type") == content_type
    assert result.body == (FIXTURES / relative).read_bytes()


def test_query_string_is_ignored(app, hello):
    assert call(app, "/static/hello.txt?v=3").body == HELLO


def test_head_sends_the_headers_of_get_without_body(app, hello):
    get = call(app, "/static/hello.txt")
    head = call(app, "/static/hello.txt", method="HEAD")
    assert head.status == "200 OK"
    assert head.body == b""
    assert head.headers == get.headers


def test_precompressed_file_keeps_base_type_and_coding(app, static_dir):
    write(static_dir / "notes.txt.gz", b"\x1f\x8b fake gzip")
    result = call(app, "/static/notes.txt.gz")
    assert result.header("Content-Type") == "text/plain"
    assert result.header("Content-Encoding") == "gzip"


def test_modern_type_is_sent(app, static_dir):
    write(static_dir / "app.mjs", b"export {};")
    assert call(app, "/static/app.mjs").header("Content-Type") == "text/javascript"


def test_non_ascii_name_with_space(app, static_dir):
    write(
        static_dir / "d\u00e9j\u00e0 vu" / "h\u00e9llo w\u00f6rld.txt", b"caf\xc3\xa9"
    )
    result = call(
        app, "/static/" + quote("d\u00e9j\u00e0 vu/h\u00e9llo w\u00f6rld.txt")
    )
    assert result.code == 200
    assert result.body == b"caf\xc3\xa9"
    assert (
        result.header("Content-Disposition")
        == "inline; filename*=utf-8''h%C3%A9llo%20w%C3%B6rld.txt"
    )


def test_path_is_percent_decoded_only_once(app, static_dir):
    write(static_dir / "a%41.txt", b"literal name")
    write(static_dir / "aA.txt", b"decoded name")
    assert call(app, "/static/a%2541.txt").body == b"literal name"
    assert call(app, "/static/a%41.txt").body == b"decoded name"


def test_new_file_is_served_without_restart(app, static_dir):
    assert call(app, "/static/late.txt").code == 404
    write(static_dir / "late.txt", b"here now")
    assert call(app, "/static/late.txt").body == b"here now"


def test_big_file_and_a_range_inside_it(app, static_dir):
    data = bytes(range(256)) * 20_480  # 5 MiB
    write(static_dir / "big.bin", data)
    whole = call(app, "/static/big.bin")
    assert whole.header("Content-Length") == str(len(data))
    assert whole.header("Content-Type") == "application/octet-stream"
    assert whole.body == data
    part = call(app, "/static/big.bin", headers={"Range": "bytes=1000000-2999999"})
    assert part.code == 206
    assert part.body == data[1_000_000:3_000_000]


# Conditional requests


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    "if_none_match", ["{etag}", "W/{etag}", '"other", {etag}', "*"]
)
def test_if_none_match_gives_304(app, hello, method, if_none_match):
    value = if_none_match.format(etag=etag_of(hello))
    result = call(app, "/static/hello.txt", method, {"If-None-Match": value})
    assert result.status == "304 Not Modified"
    assert result.body == b""
    assert dict(result.headers) == {
        "ETag": etag_of(hello),
        "Last-Modified": LAST_MODIFIED,
        "Cache-Control": "no-cache",
    }


def test_if_none_match_other_tag_gives_200(app, hello):
    result = call(app, "/static/hello.txt", headers={"If-None-Match": '"other"'})
    assert result.code == 200
    assert result.body == HELLO


@pytest.mark.parametrize(
    ("since", "code"),
    [
        (LAST_MODIFIED, 304),
        ("Tue, 14 Nov 2023 22:13:21 GMT", 304),
        ("Tue, 14 Nov 2023 22:13:19 GMT", 200),
        ("not a date", 200),
        ("Tue, 14 Nov 2023 25:61:61 GMT", 200),
    ],
)
def test_if_modified_since(app, hello, since, code):
    result = call(app, "/static/hello.txt", headers={"If-Modified-Since": since})
    assert result.code == code


def test_if_modified_since_is_ignored_when_if_none_match_is_present(app, hello):
    headers = {"If-None-Match": '"other"', "If-Modified-Since": LAST_MODIFIED}
    assert call(app, "/static/hello.txt", headers=headers).code == 200


def test_an_edit_within_the_same_second_changes_the_etag(app, static_dir):
    path = write(static_dir / "edit.txt", b"version 1", MTIME_NS)
    old = call(app, "/static/edit.txt").header("ETag")
    assert old is not None
    write(path, b"version 2", MTIME_NS + 1_000)  # same size, same second
    result = call(app, "/static/edit.txt", headers={"If-None-Match": old})
    assert result.code == 200
    assert result.body == b"version 2"
    assert result.header("ETag") != old
    assert result.header("Last-Modified") == LAST_MODIFIED


# Ranges


@pytest.mark.parametrize(
    ("header", "content_range", "body"),
    [
        ("bytes=0-4", "bytes 0-4/12", b"hello"),
        ("bytes=6-", "bytes 6-11/12", b"world\n"),
        ("bytes=-3", "bytes 9-11/12", b"ld\n"),
        ("bytes=6-100", "bytes 6-11/12", b"world\n"),
    ],
)
def test_range_gives_206(app, hello, header, content_range, body):
    result = call(app, "/static/hello.txt", headers={"Range": header})
    assert result.status == "206 Partial Content"
    assert result.header("Content-Range") == content_range
    assert result.header("Content-Length") == str(len(body))
    assert result.body == body
    assert result.header("ETag") == etag_of(hello)


def test_range_file_wrapper_sends_only_the_range(app, hello):
    def start_response(status, headers, exc_info=None):
        pass

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/static/hello.txt"}
    wrapper = app({**environ, "HTTP_RANGE": "bytes=6-9"}, start_response)
    try:
        assert isinstance(wrapper, FileWrapper)
        assert wrapper.sendfile_span() == (6, 4)
    finally:
        wrapper.close()


@pytest.mark.parametrize("header", ["bytes=12-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_range_gives_416(app, hello, header):
    result = call(app, "/static/hello.txt", headers={"Range": header})
    assert result.status == "416 Range Not Satisfiable"
    assert result.header("Content-Range") == "bytes */12"
    assert result.header("Content-Length") == "0"
    assert result.body == b""


@pytest.mark.parametrize("header", ["bytes=0-1,4-5", "bytes=5-2", "lines=1-2", "junk"])
def test_invalid_or_multiple_range_gives_the_whole_file(app, hello, header):
    result = call(app, "/static/hello.txt", headers={"Range": header})
    assert result.code == 200
    assert result.body == HELLO
    assert result.header("Content-Range") is None


def test_head_ignores_range(app, hello):
    result = call(app, "/static/hello.txt", "HEAD", {"Range": "bytes=0-4"})
    assert result.code == 200
    assert result.header("Content-Length") == "12"
    assert result.header("Content-Range") is None


@pytest.mark.parametrize(
    ("if_range", "code"),
    [
        ("{etag}", 206),
        ('"other"', 200),
        ("W/{etag}", 200),  # If-Range needs the strong comparison
        (LAST_MODIFIED, 206),
        ("Tue, 14 Nov 2023 22:13:21 GMT", 200),  # must equal Last-Modified
        ("garbage", 200),
    ],
)
def test_if_range(app, hello, if_range, code):
    headers = {"Range": "bytes=0-4", "If-Range": if_range.format(etag=etag_of(hello))}
    result = call(app, "/static/hello.txt", headers=headers)
    assert result.code == code
    assert result.body == (b"hello" if code == 206 else HELLO)


# Methods


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_give_405(app, hello, downstream, method):
    result = call(app, "/static/hello.txt", method)
    assert result.status == "405 Method Not Allowed"
    assert result.header("Allow") == "GET, HEAD"
    assert result.header("Content-Length") == "0"
    assert downstream.paths == []


# 404 and traversal


def assert_not_found(result: Result, message: str | None = None) -> None:
    assert result.status == "404 Not Found"
    assert result.header("Content-Length") == str(len(result.body))
    assert b"TOPSECRET" not in result.body
    if message is not None:
        assert message.encode() in result.body


def test_missing_file_is_djangos_technical_404(app, static_dir, settings):
    settings.DEBUG = True  # pytest-django turns it off
    result = call(app, "/static/nope.txt")
    assert_not_found(result, "&#x27;nope.txt&#x27; could not be found")
    assert result.header("Content-Type") == "text/html; charset=utf-8"
    assert b"Page not found" in result.body


def test_missing_file_without_debug_is_the_projects_404(app, static_dir, settings):
    settings.DEBUG = False
    result = call(app, "/static/nope.txt")
    assert_not_found(result, "The requested resource was not found on this server.")
    assert b"could not be found" not in result.body


def test_404_with_a_disallowed_host_is_400_not_500(app, static_dir, settings):
    settings.DEBUG = True
    result = call(app, "/static/nope.txt", headers={"Host": "evil.example"})
    assert result.status == "400 Bad Request"
    assert result.header("Content-Length") == str(len(result.body))


def test_undecodable_path_leaves_no_exception_behind(app, static_dir, settings, caplog):
    # The 404 is built outside the handler of the decoding error: an error
    # logged meanwhile (here Django's DisallowedHost) does not chain to it.
    settings.DEBUG = True
    assert_not_found(call(app, "/static/%ff"))
    with caplog.at_level(logging.ERROR, logger="django.security"):
        result = call(app, "/static/%ff", headers={"Host": "evil.example"})
    assert result.status == "400 Bad Request"
    (record,) = caplog.records
    console = logging.Formatter().format(record)
    assert "DisallowedHost" in console
    assert "During handling of the above exception" not in console
    assert "UnicodeDecodeError" not in console


def test_404_fires_request_started_and_finished(app, static_dir):
    seen: list[str] = []

    def started(**kwargs):
        seen.append("started")

    def finished(**kwargs):
        seen.append("finished")

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        call(app, "/static/nope.txt")
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    assert seen == ["started", "finished"]


@pytest.mark.parametrize("target", ["/static/", "/static/sub/", "/static/sub"])
def test_directories_are_404(app, static_dir, target, settings):
    settings.DEBUG = True
    write(static_dir / "sub" / "inner.txt", b"x")
    assert_not_found(call(app, target), "Directory indexes are not allowed here.")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_is_404_without_blocking(app, static_dir):
    os.mkfifo(static_dir / "pipe")
    assert_not_found(call(app, "/static/pipe"))


TRAVERSALS = [
    "/static/../secret.txt",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt",
    "/static/..%2fsecret.txt",
    "/static/%2e%2e%2fsecret.txt",
    "/static/sub/../../secret.txt",
    "/static/sub/..%2f..%2fsecret.txt",
    "/static/sub/./../../secret.txt",
    "/static/..\\secret.txt",
    "/static/..%5csecret.txt",
    "/static/sub%5c..%5c..%5csecret.txt",
    "/static/.../secret.txt",
    "/static/.%20./secret.txt",
    "/static/./hello.txt",
    "/static/sub//../hello.txt",
    "/static/hello.txt%00",
    "/static/hello.txt%00.png",
    "/static/%00",
    "/static/%c0%ae%c0%ae/secret.txt",  # overlong UTF-8 dots
    "/static/%ff",
    "/static/C:/Windows/win.ini",
    "/static/c:secret.txt",
    "/static///server/share/secret.txt",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_is_404(app, hello, downstream, target):
    write(hello.parent / "sub" / "inner.txt", b"x")
    assert_not_found(call(app, target))
    assert downstream.paths == []


def test_absolute_path_is_404(app, static_dir, tmp_path):
    secret = quote(str(tmp_path / "secret.txt").replace(os.sep, "/"))
    for target in (f"/static/{secret}", f"/static//{secret.lstrip('/')}"):
        assert_not_found(call(app, target))


def test_absolute_path_with_encoded_slash_is_404(app, static_dir, tmp_path):
    secret = quote(str(tmp_path / "secret.txt").replace(os.sep, "/").lstrip("/"))
    assert_not_found(call(app, f"/static/%2f{secret}"))


# Pass-through


@pytest.mark.parametrize(
    ("target", "method"),
    [
        ("/", "GET"),
        ("/other/hello.txt", "GET"),
        ("/static", "GET"),
        ("/staticfoo/hello.txt", "GET"),
        ("/other/", "POST"),
    ],
)
def test_other_paths_go_to_the_app(app, hello, downstream, target, method):
    result = call(app, target, method)
    assert result.body == b"app"
    assert downstream.paths == [unquote_to_bytes(target).decode("latin-1")]


def test_percent_encoded_prefix_is_still_static(app, hello, downstream):
    assert call(app, "/stat%69c/hello.txt").body == HELLO
    assert downstream.paths == []


def test_other_and_non_ascii_base_path(downstream, hello):
    assets = StaticFilesApp(downstream, "/assets/")
    assert call(assets, "/assets/hello.txt").body == HELLO
    assert call(assets, "/static/hello.txt").body == b"app"
    accented = StaticFilesApp(downstream, "/st\u00e4tic/")
    assert call(accented, quote("/st\u00e4tic/hello.txt")).body == HELLO


# Resources


@pytest.mark.parametrize(
    "headers", [{}, {"Range": "bytes=0-1"}], ids=["whole", "range"]
)
def test_file_is_closed_when_start_response_raises(app, hello, headers):
    def failing_start_response(status, headers, exc_info=None):
        raise ConnectionResetError("client went away")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(ConnectionResetError):
            call(
                app,
                "/static/hello.txt",
                headers=headers,
                start_response=failing_start_response,
            )
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []

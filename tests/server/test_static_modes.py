"""Static files over real sockets, in front of a WSGI and of an ASGI application."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runserver_plus.server.asgi_scope import Receive, Scope, Send
from runserver_plus.static import StaticFilesApp
from runserver_plus.static_asgi import AsgiStaticFiles
from tests.live import Live, RawClient, serve_app
from tests.live_asgi import serve_asgi

pytestmark = pytest.mark.usefixtures("collect_leaks")

MTIME_NS = 1_700_000_000_250_000_000
LAST_MODIFIED = "Tue, 14 Nov 2023 22:13:20 GMT"
HELLO = b"hello world\n"


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Length", "3")])
    return [b"app"]


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise ValueError("no lifespan")
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]}
    )
    await send({"type": "http.response.body", "body": b"app"})


@pytest.fixture(params=["wsgi", "asgi"])
def client(request: pytest.FixtureRequest) -> Iterator[RawClient]:
    """A connection to a server with static files in front of its app."""
    with contextlib.ExitStack() as stack:
        live: Live[Any]
        if request.param == "wsgi":
            live = stack.enter_context(serve_app(StaticFilesApp(wsgi_app, "/static/")))
        else:
            live = stack.enter_context(
                serve_asgi(AsgiStaticFiles(asgi_app, "/static/"))
            )
        yield stack.enter_context(live.connect())


@pytest.fixture
def static_dir(tmp_path: Path, settings: Any) -> Path:
    root = tmp_path / "static"
    root.mkdir()
    (tmp_path / "secret.txt").write_bytes(b"TOPSECRET")
    settings.STATICFILES_DIRS = [str(root)]
    settings.ALLOWED_HOSTS = ["testserver"]
    return root


@pytest.fixture
def hello(static_dir: Path) -> Path:
    path = static_dir / "hello.txt"
    path.write_bytes(HELLO)
    os.utime(path, ns=(MTIME_NS, MTIME_NS))
    return path


ETAG = f'"{MTIME_NS:x}-c"'


def test_get_sends_the_file_with_validators(client: RawClient, hello: Path) -> None:
    response = client.request("GET", "/static/hello.txt")
    assert response.status == 200
    assert response.body == HELLO
    assert response.header("Content-Type") == "text/plain"
    assert response.header("Content-Length") == "12"
    assert response.header("ETag") == ETAG
    assert response.header("Last-Modified") == LAST_MODIFIED
    assert response.header("Cache-Control") == "no-cache"
    assert response.header("Accept-Ranges") == "bytes"
    # Kept alive: the next request on the connection is answered.
    assert client.request("GET", "/static/hello.txt").body == HELLO


def test_head_has_the_headers_and_no_body(client: RawClient, hello: Path) -> None:
    response = client.request("HEAD", "/static/hello.txt")
    assert response.status == 200
    assert response.header("Content-Length") == "12"
    assert client.request("GET", "/other/").body == b"app"


def test_if_none_match_gives_304(client: RawClient, hello: Path) -> None:
    response = client.request("GET", "/static/hello.txt", {"If-None-Match": ETAG})
    assert response.status == 304
    assert response.header("ETag") == ETAG
    assert client.request("GET", "/other/").body == b"app"


def test_if_modified_since_gives_304(client: RawClient, hello: Path) -> None:
    headers = {"If-Modified-Since": LAST_MODIFIED}
    assert client.request("GET", "/static/hello.txt", headers).status == 304


def test_range_gives_206(client: RawClient, hello: Path) -> None:
    response = client.request("GET", "/static/hello.txt", {"Range": "bytes=6-"})
    assert response.status == 206
    assert response.header("Content-Range") == "bytes 6-11/12"
    assert response.body == b"world\n"


def test_unsatisfiable_range_gives_416(client: RawClient, hello: Path) -> None:
    response = client.request("GET", "/static/hello.txt", {"Range": "bytes=99-"})
    assert response.status == 416
    assert response.header("Content-Range") == "bytes */12"


def test_if_range_with_another_tag_gives_the_whole_file(
    client: RawClient, hello: Path
) -> None:
    headers = {"Range": "bytes=6-", "If-Range": '"other"'}
    response = client.request("GET", "/static/hello.txt", headers)
    assert response.status == 200
    assert response.body == HELLO


@pytest.mark.parametrize(
    "target", ["/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/a/"]
)
def test_traversal_and_directories_are_404(
    client: RawClient, hello: Path, target: str
) -> None:
    response = client.request("GET", target)
    assert response.status == 404
    assert b"TOPSECRET" not in response.body


def test_path_is_percent_decoded_once(client: RawClient, static_dir: Path) -> None:
    (static_dir / "100%.txt").write_bytes(b"percent")
    assert client.request("GET", "/static/100%25.txt").body == b"percent"
    assert client.request("GET", "/static/100%2525.txt").status == 404


def test_other_methods_give_405(client: RawClient, hello: Path) -> None:
    response = client.request("POST", "/static/hello.txt", body=b"x")
    assert response.status == 405
    assert response.header("Allow") == "GET, HEAD"


def test_other_paths_go_to_the_app(client: RawClient, hello: Path) -> None:
    assert client.request("GET", "/statics/hello.txt").body == b"app"

"""Tier 3: the server on 127.0.0.1:0 with --https: TLS, the redirect, the timeouts.

Each test runs on both drivers (tests/conftest.py: server_mode) unless marked
``wsgi_only``; test_tls_asgi.py has what only ASGI mode has (scopes, wss://).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import queue
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runserver_plus.server.wsgi import WSGIEnviron
from runserver_plus.static import StaticFilesApp
from runserver_plus.tls.authority import server_names
from runserver_plus.tls.files import TLSFiles, local_files
from tests.helpers import wait_until
from tests.live import TIMEOUT, LiveServer, LogRecorder, RawClient, serve_app

pytestmark = pytest.mark.usefixtures("collect_leaks", "server_mode")


@pytest.fixture
def tls(ca_dir: Path) -> TLSFiles:
    return local_files(ca_dir, server_names("box.test"))


def https_config(tls: TLSFiles, **extra: Any) -> dict[str, Any]:
    return {"https": True, "tls_cert": tls.cert_file, "tls_ca": tls.ca_file, **extra}


def echo_app(environ: WSGIEnviron, start_response: Any) -> Iterable[bytes]:
    """Answers with what the server told the application."""
    body = (
        f"{environ['wsgi.url_scheme']} {environ['PATH_INFO']} {environ['REMOTE_ADDR']}"
    ).encode()
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]


def client_context(tls: TLSFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=tls.ca_file)


@contextlib.contextmanager
def tls_client(
    live: LiveServer,
    context: ssl.SSLContext,
    name: str = "localhost",
    *,
    ragged_eof_ok: bool = True,
) -> Iterator[RawClient]:
    raw = socket.create_connection(("127.0.0.1", live.port), TIMEOUT)
    try:
        sock = context.wrap_socket(
            raw, server_hostname=name, suppress_ragged_eofs=ragged_eof_ok
        )
    except BaseException:
        raw.close()
        raise
    with RawClient(sock) as client:
        yield client


def test_a_request_over_tls_is_secure_and_kept_alive(tls):
    with serve_app(echo_app, **https_config(tls)) as live:
        connection = http.client.HTTPSConnection(
            "localhost", live.port, timeout=TIMEOUT, context=client_context(tls)
        )
        try:
            for path in ("/one", "/two"):
                connection.request("GET", path)
                response = connection.getresponse()
                assert (response.status, response.read()) == (
                    200,
                    f"https {path} 127.0.0.1".encode(),
                )
            # One TLS connection carried both requests.
            assert connection.sock is not None
            assert connection.sock.version() in {"TLSv1.2", "TLSv1.3"}
        finally:
            connection.close()


def test_every_name_of_the_certificate_verifies(tls):
    with serve_app(echo_app, **https_config(tls)) as live:
        for name in server_names("box.test"):
            with tls_client(live, client_context(tls), name) as client:
                assert client.request("GET", "/").status == 200


def test_a_client_without_the_authority_fails_verification(tls, log: LogRecorder):
    with serve_app(echo_app, **https_config(tls)) as live:
        unknown = ssl.create_default_context()
        with (
            pytest.raises(ssl.SSLCertVerificationError, match="unable to get local"),
            tls_client(live, unknown),
        ):
            pass
        # The server lives on, and said nothing about it.
        with tls_client(live, client_context(tls)) as client:
            assert client.request("GET", "/").status == 200
    assert not [m for m in log.messages() if "Traceback" in m]


@pytest.mark.parametrize(
    ("request_bytes", "location"),
    [
        (b"GET /a/b?c=d HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n",
         "https://localhost:{port}/a/b?c=d"),
        (b"GET http://box.test:{port}/x HTTP/1.1\r\nHost: box.test:{port}\r\n\r\n",
         "https://box.test:{port}/x"),
        (b"GET /old HTTP/1.0\r\n\r\n", "https://localhost:{port}/old"),
    ],
)  # fmt: skip
def test_plain_http_on_the_https_port_is_redirected(
    tls, log: LogRecorder, request_bytes, location
):
    with serve_app(echo_app, **https_config(tls)) as live, live.connect() as client:
        client.send(request_bytes.replace(b"{port}", str(live.port).encode()))
        response = client.read_response()
        assert response.status == 308
        assert response.header("Location") == location.format(port=live.port)
        assert response.header("Connection") == "close"
        assert client.is_closed()
    log.wait_message(" 308 - ")


def test_a_redirected_head_has_no_body(tls):
    with serve_app(echo_app, **https_config(tls)) as live, live.connect() as client:
        client.send(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
        response = client.read_response(head_request=True)
        assert (response.status, response.header("Location")) == (308, "https://h/")
        assert client.read_until_closed() == b""


def test_a_stalled_handshake_is_dropped_after_the_read_timeout_and_holds_no_thread(
    tls,
):
    with serve_app(
        echo_app, **https_config(tls, read_timeout=1.0, idle_timeout=30.0)
    ) as live:
        # Let the loop's own threads start before counting.
        with tls_client(live, client_context(tls)) as client:
            assert client.request("GET", "/").status == 200
        threads = threading.active_count()
        stalled = []
        try:
            for _ in range(20):
                client = live.connect()
                stalled.append(client)
                client.send(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello, begun
            started = time.monotonic()
            # Meanwhile others are served, and no thread waits for the stalled.
            with tls_client(live, client_context(tls)) as other:
                assert other.request("GET", "/").status == 200
            assert threading.active_count() <= threads
            for client in stalled:
                assert client.is_closed(timeout=5.0)
                assert client.buffer == b""  # no plaintext 408 into a TLS stream
            elapsed = time.monotonic() - started
            assert 0.5 < elapsed < 5.0
        finally:
            for client in stalled:
                client.close()


def test_a_silent_connection_on_the_https_port_gets_the_read_timeout(tls):
    config = https_config(tls, read_timeout=0.5)
    with serve_app(echo_app, **config) as live, live.connect() as client:
        started = time.monotonic()
        assert client.is_closed(timeout=5.0)
        assert time.monotonic() - started < 5.0


@pytest.mark.wsgi_only  # ASGI mode refuses --nothreading
def test_tls_without_threading(tls):
    with serve_app(echo_app, **https_config(tls, use_threading=False)) as live:
        for _ in range(2):
            with tls_client(live, client_context(tls)) as client:
                assert client.request("GET", "/x").body == b"https /x 127.0.0.1"


@pytest.mark.wsgi_only  # the file wrapper's sendfile path
def test_a_file_goes_out_whole_through_tls(tls, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)  # several writes of MAX_SEND
    path = tmp_path / "big.bin"
    path.write_bytes(data)

    def app(environ: WSGIEnviron, start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", str(len(data)))])
        body: Iterable[bytes] = environ["wsgi.file_wrapper"](path.open("rb"))
        return body

    with (
        serve_app(app, **https_config(tls)) as live,
        tls_client(live, client_context(tls)) as client,
    ):
        for _ in range(2):  # and the connection stays usable
            response = client.request("GET", "/big")
            assert response.status == 200
            assert response.body == data


@pytest.mark.wsgi_only  # the WSGI static layer; test_tls_asgi.py has ASGI's
@pytest.mark.django_db
def test_static_files_over_tls_range_etag_and_304(tls):
    app = StaticFilesApp(echo_app, "/static/")
    hello = Path(__file__).parents[1] / "static_fixtures" / "files" / "hello.txt"
    content = hello.read_bytes()
    with (
        serve_app(app, **https_config(tls)) as live,
        tls_client(live, client_context(tls)) as client,
    ):
        whole = client.request("GET", "/static/files/hello.txt")
        assert (whole.status, whole.body) == (200, content)
        etag = whole.header("ETag")
        assert etag
        ranged = client.request(
            "GET", "/static/files/hello.txt", headers={"Range": "bytes=1-3"}
        )
        assert (ranged.status, ranged.body) == (206, content[1:4])
        cached = client.request(
            "GET", "/static/files/hello.txt", headers={"If-None-Match": etag}
        )
        assert (cached.status, cached.body) == (304, b"")


def test_tls_on_the_plain_port_still_gets_the_hint(log: LogRecorder):
    with serve_app(echo_app) as live:
        context = ssl.create_default_context()
        with pytest.raises((ssl.SSLError, ConnectionError)), tls_client(live, context):
            pass
        log.wait_message("You're accessing the development server over HTTPS")


def test_the_drain_lets_a_tls_request_finish(tls):
    entered, release = threading.Event(), threading.Event()

    def slow(environ: WSGIEnviron, start_response: Any) -> Iterable[bytes]:
        entered.set()
        release.wait(TIMEOUT)
        return echo_app(environ, start_response)

    with (
        serve_app(slow, **https_config(tls)) as live,
        tls_client(live, client_context(tls)) as client,
    ):
        client.send(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert entered.wait(TIMEOUT)
        # As the runner stops a server: shutdown, then the drain.
        live.server.shutdown()
        drained: queue.Queue[bool] = queue.Queue()
        drain = threading.Thread(target=lambda: drained.put(live.server.drain(TIMEOUT)))
        drain.start()
        release.set()
        response = client.read_response()
        assert (response.status, response.body) == (200, b"https /slow 127.0.0.1")
        wait_until(lambda: client.is_closed(0.1), TIMEOUT, "not closed after drain")
        assert drained.get(timeout=TIMEOUT) is True
        drain.join(TIMEOUT)


def test_a_response_that_ends_with_the_close_ends_tls_cleanly(tls):
    def stream(environ: WSGIEnviron, start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"no length: "
        yield b"the close ends it"

    with (
        serve_app(stream, **https_config(tls)) as live,
        tls_client(live, client_context(tls), ragged_eof_ok=False) as client,
    ):
        # HTTP/1.0 and no Content-Length: the end of the body is the close,
        # which must be TLS's close_notify, not a bare TCP end of stream.
        client.send(b"GET / HTTP/1.0\r\n\r\n")
        response = client.read_response()
        assert response.header("Connection") == "close"
        assert response.body == b"no length: the close ends it"

"""Tier 3: --https in ASGI mode: the scopes' schemes, wss://, the TLS close.

test_tls.py runs the behaviour both drivers share (verification, the
redirect, stalled handshakes, the drain) on each of them.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from runserver_plus.server.asgi_scope import Receive, Scope, Send
from runserver_plus.server.asgi_tls import TLS_CLOSE_TIMEOUT
from runserver_plus.static_asgi import AsgiStaticFiles
from runserver_plus.tls.authority import server_names
from runserver_plus.tls.files import TLSFiles, local_files
from tests.live import TIMEOUT, LogRecorder
from tests.live_asgi import ScopeRecorder, serve_asgi
from tests.server.test_tls import client_context, https_config, tls_client
from tests.server.test_websocket import echo

pytestmark = pytest.mark.usefixtures("collect_leaks")


@pytest.fixture
def tls(ca_dir: Path) -> TLSFiles:
    return local_files(ca_dir, server_names("box.test"))


def test_an_http_scope_over_tls_says_https(tls):
    app = ScopeRecorder()
    with (
        serve_asgi(app, **https_config(tls)) as live,
        tls_client(live, client_context(tls)) as client,  # type: ignore[arg-type]
    ):
        assert client.request("GET", "/a").body == b"/a"
        assert client.request("GET", "/b").body == b"/b"  # kept alive
    assert [scope["scheme"] for scope in app.scopes] == ["https", "https"]
    assert app.scopes[0]["server"] == ("127.0.0.1", live.port)
    assert app.scopes[0]["client"][0] == "127.0.0.1"


def test_a_websocket_over_tls_is_wss_and_echoes(tls, log: LogRecorder):
    schemes: queue.Queue[str] = queue.Queue()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        schemes.put(scope["scheme"])
        await echo(scope, receive, send)

    with serve_asgi(app, **https_config(tls)) as live:
        url = f"wss://localhost:{live.port}/ws/"
        with connect(url, ssl=client_context(tls), open_timeout=TIMEOUT) as ws:
            ws.send("over tls")
            assert ws.recv(TIMEOUT) == "over tls"
            ws.send(b"\x00" * 100_000)  # several TLS records
            assert ws.recv(TIMEOUT) == b"\x00" * 100_000
    assert schemes.get(timeout=TIMEOUT) == "wss"
    log.wait_message("WSDISCONNECT /ws/")


def test_a_plain_websocket_request_on_the_https_port_is_redirected(tls):
    with serve_asgi(echo, **https_config(tls)) as live, live.connect() as client:
        client.send(
            b"GET /ws/ HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        response = client.read_response()
        assert (response.status, response.header("Location")) == (
            308,
            "https://localhost/ws/",
        )
        assert client.is_closed()


def test_a_large_response_goes_out_whole_through_tls(tls):
    data = os.urandom(5 * 1024 * 1024 + 3)  # far above the write high water

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError("no lifespan")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(data)).encode())],
            }
        )
        for start in range(0, len(data), 1024 * 1024):
            chunk = data[start : start + 1024 * 1024]
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    with (
        serve_asgi(app, **https_config(tls)) as live,
        tls_client(live, client_context(tls)) as client,  # type: ignore[arg-type]
    ):
        for _ in range(2):  # and the connection stays usable
            response = client.request("GET", "/big")
            assert (response.status, response.body == data) == (200, True)


@pytest.mark.django_db
def test_asgi_static_files_over_tls(tls):
    hello = Path(__file__).parents[1] / "static_fixtures" / "files" / "hello.txt"
    with (
        serve_asgi(
            AsgiStaticFiles(ScopeRecorder(), "/static/"), **https_config(tls)
        ) as live,
        tls_client(live, client_context(tls)) as client,  # type: ignore[arg-type]
    ):
        whole = client.request("GET", "/static/files/hello.txt")
        assert (whole.status, whole.body) == (200, hello.read_bytes())
        ranged = client.request(
            "GET", "/static/files/hello.txt", headers={"Range": "bytes=1-3"}
        )
        assert (ranged.status, ranged.body) == (206, hello.read_bytes()[1:4])


def test_an_idle_tls_client_that_keeps_its_end_open_does_not_hold_the_drain(tls):
    # The close sends close_notify; the client never answers it nor closes.
    with (
        serve_asgi(ScopeRecorder(), **https_config(tls)) as live,
        tls_client(live, client_context(tls), ragged_eof_ok=False) as client,  # type: ignore[arg-type]
    ):
        assert client.request("GET", "/").status == 200
        live.server.shutdown(1.0)
        drained: queue.Queue[bool] = queue.Queue()
        started = time.monotonic()
        drain = threading.Thread(target=lambda: drained.put(live.server.drain(1.0)))
        drain.start()
        # At the drain's deadline close_notify arrives: the TLS stream ends
        # cleanly, not truncated.
        assert client.is_closed()
        # The drain ends at its bound (the wait for the client's close_notify
        # is cut short there, hence False), not a TLS close timeout later.
        assert drained.get(timeout=TIMEOUT) is False
        drain.join(TIMEOUT)
        assert time.monotonic() - started < 1.0 + TLS_CLOSE_TIMEOUT


def test_the_close_notify_after_a_response_is_not_held_by_nagle(tls):
    # Without TCP_NODELAY, close_notify (a small write right after the
    # response) waits for the client's delayed ACK: 40 ms on Linux, every time.
    with serve_asgi(ScopeRecorder(), **https_config(tls)) as live:
        waits = []
        for _ in range(5):
            with tls_client(live, client_context(tls), ragged_eof_ok=False) as client:  # type: ignore[arg-type]
                response = client.request("GET", "/", headers={"Connection": "close"})
                assert response.status == 200
                answered = time.monotonic()
                assert client.is_closed()
                waits.append(time.monotonic() - answered)
    assert min(waits) < 0.02, waits

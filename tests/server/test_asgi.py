"""The asyncio driver in-process on real sockets: framing, scope, streams, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest

from runserver_plus.server.asgi_scope import Receive, Scope, Send
from tests.live_asgi import Events, ScopeRecorder, serve_asgi, wait_thread_event

pytestmark = pytest.mark.usefixtures("collect_leaks")


def get(path: str, *headers: str, version: str = "1.1") -> bytes:
    lines = [f"GET {path} HTTP/{version}", "Host: testserver", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def start(send: Send, status: int = 200, *headers: tuple[bytes, bytes]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})


# --- persistent connections and framing -----------------------------------------


def test_keep_alive_serves_several_requests_on_one_connection(log) -> None:
    with serve_asgi(ScopeRecorder()) as live, live.connect() as client:
        for i in range(5):
            response = client.request("GET", f"/r{i}")
            assert response.status == 200
            assert response.body == f"/r{i}".encode()
            assert response.header("Content-Length") == str(len(response.body))
            assert response.header("Connection") is None
        assert not client.is_closed(timeout=0.05)
    lines = [m for m in log.messages() if m.startswith('"GET /r')]
    assert len(lines) == 5
    assert lines[0].startswith('"GET /r0 HTTP/1.1" 200 3 ')
    assert lines[0].endswith("ms")


def test_pipelined_requests_are_answered_in_order() -> None:
    with serve_asgi(ScopeRecorder()) as live, live.connect() as client:
        client.send(get("/one") + get("/two") + get("/three"))
        assert [client.read_response().body for _ in range(3)] == [
            b"/one",
            b"/two",
            b"/three",
        ]


def test_head_response_carries_no_body_but_the_length() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await start(send)
        await send({"type": "http.response.body", "body": b"twelve bytes"})

    with serve_asgi(app) as live, live.connect() as client:
        response = client.request("HEAD", "/")
        assert response.header("Content-Length") == "12"
        # The next response follows at once: no body bytes were sent.
        assert client.request("GET", "/").body == b"twelve bytes"


def test_body_of_unknown_length_is_chunked_then_close_delimited_for_http_10() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await start(send)
        for part in (b"one,", b"", b"two"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body"})

    with serve_asgi(app) as live:
        with live.connect() as client:
            response = client.request("GET", "/")
            assert response.header("Transfer-Encoding") == "chunked"
            assert response.body == b"one,two"
            assert client.request("GET", "/").body == b"one,two"
        with live.connect() as client:
            client.send(b"GET / HTTP/1.0\r\n\r\n")
            response = client.read_response()
            assert response.header("Connection") == "close"
            assert response.body == b"one,two"


def test_chunked_request_body_is_decoded_and_announced_by_length() -> None:
    recorder = ScopeRecorder()
    with serve_asgi(recorder) as live, live.connect() as client:
        client.send(
            b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        assert client.read_response().body == b"hello world"
        headers = dict(recorder.scopes[-1]["headers"])
        assert headers[b"content-length"] == b"11"
        assert b"transfer-encoding" not in headers
        assert client.request("GET", "/next").body == b"/next"


def test_expect_100_continue_is_answered_before_the_body_is_read() -> None:
    with serve_asgi(ScopeRecorder()) as live, live.connect() as client:
        client.send(
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = client.read_response()
        assert interim.status == 100
        client.send(b"data")
        assert client.read_response().body == b"data"


def test_malformed_request_gets_a_400_and_a_close() -> None:
    with serve_asgi(ScopeRecorder()) as live, live.connect() as client:
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n")
        client.send(b"Content-Length: 2\r\n\r\n")
        response = client.read_response()
        assert response.status == 400
        assert client.is_closed()


def test_too_long_request_line_gets_414() -> None:
    with serve_asgi(ScopeRecorder()) as live, live.connect() as client:
        client.send(b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        assert client.read_response().status == 414


def test_idle_connection_is_closed_after_the_idle_timeout() -> None:
    with serve_asgi(ScopeRecorder(), idle_timeout=0.3) as live, live.connect() as c:
        assert c.request("GET", "/").status == 200
        assert c.is_closed(timeout=5)


def test_request_that_stalls_mid_head_gets_408() -> None:
    with serve_asgi(ScopeRecorder(), read_timeout=0.3) as live, live.connect() as c:
        c.send(b"GET / HTTP/1.1\r\nHost")
        assert c.read_response().status == 408


def test_exception_before_the_response_is_a_500_and_the_server_lives_on(log) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        await start(send)
        await send({"type": "http.response.body", "body": b"fine"})

    with serve_asgi(app) as live:
        with live.connect() as client:
            assert client.request("GET", "/boom").status == 500
        log.wait_message("Exception while serving GET /boom")
        with live.connect() as client:
            assert client.request("GET", "/").body == b"fine"


# --- the scope --------------------------------------------------------------------


def test_scope_comes_from_the_request_alone(monkeypatch) -> None:
    monkeypatch.setenv("HTTPS", "on")
    monkeypatch.setenv("SCRIPT_NAME", "/prefix")
    recorder = ScopeRecorder()
    with serve_asgi(recorder) as live, live.connect() as client:
        client.send(
            get(
                "/caf%C3%A9/a%2Fb?q=%20x&y",
                "X-Custom: one",
                "X-Custom: two",
                "X_Spoof: dropped",
            )
        )
        assert client.read_response().status == 200
        peer = client.sock.getsockname()
    scope = recorder.scopes[-1]
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/café/a/b"
    assert scope["raw_path"] == b"/caf%C3%A9/a%2Fb"
    assert scope["query_string"] == b"q=%20x&y"
    assert scope["root_path"] == ""
    assert scope["headers"] == [
        (b"host", b"testserver"),
        (b"x-custom", b"one"),
        (b"x-custom", b"two"),
    ]
    assert scope["client"] == (peer[0], peer[1])
    assert scope["server"] == ("127.0.0.1", live.port)


def test_http_10_scope_says_so() -> None:
    recorder = ScopeRecorder()
    with serve_asgi(recorder) as live, live.connect() as client:
        client.send(b"GET /old HTTP/1.0\r\n\r\n")
        assert client.read_response().body == b"/old"
    assert recorder.scopes[-1]["http_version"] == "1.0"


# --- streaming and disconnects ------------------------------------------------------


def test_first_event_of_a_stream_arrives_before_the_stream_ends() -> None:
    release = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await start(send, 200, (b"content-type", b"text/event-stream"))
        body = b"data: first\n\n"
        await send({"type": "http.response.body", "body": body, "more_body": True})
        await wait_thread_event(release)
        await send({"type": "http.response.body", "body": b"data: last\n\n"})

    with serve_asgi(app) as live, live.connect() as client:
        client.send(get("/events"))
        started = time.monotonic()
        while b"data: first" not in client.buffer:
            assert client._fill()
        assert time.monotonic() - started < 1.0
        assert b"data: last" not in client.buffer
        release.set()
        assert client.read_response().body == b"data: first\n\ndata: last\n\n"


def test_client_that_leaves_gives_the_application_http_disconnect() -> None:
    events = Events()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "http.request"
        await start(send)
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        events.put((await receive())["type"])

    with serve_asgi(app) as live, live.connect() as client:
        client.send(get("/"))
        while b"\r\n\r\n" not in client.buffer:
            assert client._fill()
        client.close()
        assert events.get() == "http.disconnect"


def test_send_to_a_client_that_left_raises_an_oserror() -> None:
    events = Events()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await start(send)
        try:
            while True:
                tick = {"type": "http.response.body", "body": b"t\n", "more_body": True}
                await send(tick)
                await asyncio.sleep(0.02)
        except OSError as error:
            events.put(type(error).__name__)

    with serve_asgi(app) as live, live.connect() as client:
        client.send(get("/"))
        while b"t\n" not in client.buffer:
            assert client._fill()
        client.close()
        assert events.get() == "ClientDisconnected"


def test_silent_stream_that_never_listens_is_cancelled_soon_after_a_disconnect() -> (
    None
):
    events = Events()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await start(send)
        await send({"type": "http.response.body", "body": b"t", "more_body": True})
        try:
            await asyncio.sleep(30)  # an event stream with nothing to say
        except asyncio.CancelledError:
            events.put(time.monotonic())
            raise

    with serve_asgi(app) as live, live.connect() as client:
        client.send(get("/"))
        while b"\r\n\r\n" not in client.buffer:
            assert client._fill()
        client.close()
        left = time.monotonic()
        assert events.get() - left < 1.0


# --- lifespan and the drain ----------------------------------------------------------


def test_lifespan_startup_and_shutdown_are_sent() -> None:
    events = Events()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.put(message["type"])
                scope["state"]["ready"] = True
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        await start(send)
        await send(
            {"type": "http.response.body", "body": repr(scope["state"]).encode()}
        )

    with serve_asgi(app) as live, live.connect() as client:
        assert events.get() == "lifespan.startup"
        assert client.request("GET", "/").body == b"{'ready': True}"
    assert events.get() == "lifespan.shutdown"


def test_application_without_lifespan_is_served_silently(log, capsys) -> None:
    with serve_asgi(ScopeRecorder()) as live, live.connect() as client:
        assert client.request("GET", "/x").body == b"/x"
    assert not [m for m in log.messages() if "lifespan" in m]
    assert "lifespan" not in capsys.readouterr().err


def test_drain_lets_a_request_in_flight_finish() -> None:
    release = threading.Event()
    events = Events()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError("no lifespan")
        events.put("in")
        await wait_thread_event(release)
        await start(send)
        await send({"type": "http.response.body", "body": b"done"})

    with serve_asgi(app) as live, live.connect() as client:
        client.send(get("/"))
        events.get()
        live.server.shutdown()
        release.set()
        assert live.server.drain(5.0)
        assert client.read_response().body == b"done"
        assert client.is_closed()


# --- bodies the application does not read -----------------------------------------


async def answer_without_reading(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise ValueError("no lifespan")
    await start(send)
    await send({"type": "http.response.body", "body": scope["path"].encode()})


def test_unread_body_is_skipped_so_the_next_request_is_found() -> None:
    with serve_asgi(answer_without_reading) as live, live.connect() as client:
        client.send(b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        assert client.read_response().body == b"/post"
        client.send(b"0123456789" + get("/next"))
        assert client.read_response().body == b"/next"


def test_huge_unread_body_closes_the_connection_after_the_response() -> None:
    size = 8 * 1024 * 1024  # far past what the server skips
    with serve_asgi(answer_without_reading) as live, live.connect() as client:
        head = f"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n"
        client.send(head.encode())
        assert client.read_response().body == b"/p"
        sender = threading.Thread(target=_send_quietly, args=(client, b"x" * size))
        sender.start()
        try:
            assert client.is_closed(timeout=5)
        finally:
            sender.join(10)


def _send_quietly(client, data: bytes) -> None:
    # The server closing the connection midway is what the test expects.
    with contextlib.suppress(OSError):
        client.send(data)


def test_body_of_one_message_gets_a_content_length_and_keeps_alive() -> None:
    with serve_asgi(answer_without_reading) as live, live.connect() as client:
        response = client.request("GET", "/one")
        assert response.header("Content-Length") == "4"
        assert response.header("Transfer-Encoding") is None
        assert client.request("GET", "/two").body == b"/two"


def test_app_sending_more_than_its_content_length_gets_a_500(log) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError("no lifespan")
        await start(send, 200, (b"content-length", b"2"))
        await send({"type": "http.response.body", "body": b"toolong"})

    with serve_asgi(app) as live, live.connect() as client:
        # Nothing went out yet: the whole answer is the server's 500.
        assert client.request("GET", "/").status == 500
        assert client.is_closed()
    log.wait_message("Exception while serving GET /")


def test_connections_beyond_the_bound_wait_in_the_backlog() -> None:
    with (
        serve_asgi(ScopeRecorder(), max_connections=1) as live,
        live.connect() as first,
        live.connect() as second,
    ):
        assert first.request("GET", "/first").body == b"/first"
        second.send(get("/second"))
        # Not accepted while the first connection is open (kept alive).
        assert not second.is_closed(timeout=0.3)
        assert second.buffer == b""
        first.close()
        assert second.read_response().body == b"/second"

"""WebSockets through the asyncio driver, with the websockets client library."""

from __future__ import annotations

from typing import Any, cast

import pytest
from django.core.handlers.asgi import ASGIHandler
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from runserver_plus.server.asgi_scope import ASGIApp, Receive, Scope, Send
from tests.live_asgi import Events, LiveAsgiServer, serve_asgi

pytestmark = pytest.mark.usefixtures("collect_leaks")

TIMEOUT = 10.0  # s


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Accepts (with the first subprotocol offered), echoes; closes with the
    code a text message ``close NNNN`` asks for."""
    if scope["type"] != "websocket":
        raise ValueError(f"cannot handle {scope['type']}")
    assert (await receive())["type"] == "websocket.connect"
    subprotocols = scope["subprotocols"]
    await send(
        {
            "type": "websocket.accept",
            "subprotocol": subprotocols[0] if subprotocols else None,
        }
    )
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is not None and text.startswith("close "):
            await send({"type": "websocket.close", "code": int(text[6:])})
            return
        await send({**message, "type": "websocket.send"})


def url(live: LiveAsgiServer, path: str = "/ws/") -> str:
    return f"ws://127.0.0.1:{live.port}{path}"


def test_text_and_binary_messages_are_echoed() -> None:
    with serve_asgi(echo) as live, connect(url(live), open_timeout=TIMEOUT) as ws:
        ws.send("héllo")
        assert ws.recv(TIMEOUT) == "héllo"
        ws.send(b"\x00\xff")
        assert ws.recv(TIMEOUT) == b"\x00\xff"


def test_a_fragmented_message_arrives_whole() -> None:
    with serve_asgi(echo) as live, connect(url(live), open_timeout=TIMEOUT) as ws:
        ws.send(["frag", "men", "ted"])
        assert ws.recv(TIMEOUT) == "fragmented"
        ws.send([b"\x01", b"\x02"])
        assert ws.recv(TIMEOUT) == b"\x01\x02"


def test_a_ping_is_answered_with_a_pong() -> None:
    with serve_asgi(echo) as live, connect(url(live), open_timeout=TIMEOUT) as ws:
        assert ws.ping(b"payload").wait(TIMEOUT)


def test_the_subprotocol_the_application_chose_is_sent() -> None:
    with (
        serve_asgi(echo) as live,
        connect(url(live), subprotocols=["chat"], open_timeout=TIMEOUT) as ws,  # type: ignore[list-item]
    ):
        assert ws.subprotocol == "chat"


def test_the_applications_close_code_reaches_the_client() -> None:
    with serve_asgi(echo) as live, connect(url(live), open_timeout=TIMEOUT) as ws:
        ws.send("close 4001")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(TIMEOUT)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4001


def test_the_clients_close_code_reaches_the_application() -> None:
    events = Events()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise ValueError("no lifespan")
        await receive()
        await send({"type": "websocket.accept"})
        events.put(await receive())

    with serve_asgi(app) as live, connect(url(live), open_timeout=TIMEOUT) as ws:
        ws.close(code=4321)
        assert events.get() == {"type": "websocket.disconnect", "code": 4321}


def send_then_receive(ws: ClientConnection, message: Any) -> Any:
    """Send ``message``, then receive. The client ends a fragmented message
    with one more, empty frame: a close the server sends meanwhile makes
    send() raise, otherwise recv() does."""
    ws.send(message)
    return ws.recv(TIMEOUT)


def test_a_message_over_the_limit_is_closed_with_1009() -> None:
    with (
        serve_asgi(echo, websocket_max_message=1024) as live,
        connect(url(live), open_timeout=TIMEOUT) as ws,
    ):
        ws.send(b"x" * 1024)
        assert ws.recv(TIMEOUT) == b"x" * 1024
        with pytest.raises(ConnectionClosed) as closed:
            send_then_receive(ws, ["y" * 600, "y" * 600])  # in two fragments
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009


def test_closing_before_accepting_refuses_the_handshake_with_403(log) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise ValueError("no lifespan")
        await receive()
        await send({"type": "websocket.close"})

    with serve_asgi(app) as live, pytest.raises(InvalidStatus) as refused:
        connect(url(live), open_timeout=TIMEOUT)
    assert refused.value.response.status_code == 403
    log.wait_message('"WSREJECT /ws/" 403')


def test_plain_django_refuses_websockets_with_403_and_one_line(log) -> None:
    django = cast("ASGIApp", ASGIHandler())
    with serve_asgi(django) as live, pytest.raises(InvalidStatus) as refused:
        connect(url(live), open_timeout=TIMEOUT)
    assert refused.value.response.status_code == 403
    record = log.wait_message('"WSREJECT /ws/" 403')
    assert "Django can only handle ASGI/HTTP connections" in record.getMessage()
    assert all(r.exc_info is None for r in log.records), log.messages()


def test_connect_and_disconnect_are_logged_with_the_duration(log) -> None:
    with serve_asgi(echo) as live:
        with connect(url(live, "/ws/chat/"), open_timeout=TIMEOUT) as ws:
            ws.send("x")
            ws.recv(TIMEOUT)
        connected = log.wait_message('"WSCONNECT /ws/chat/" 101 -')
        gone = log.wait_message('"WSDISCONNECT /ws/chat/" 101 -')
    assert connected.getMessage().endswith("ms")
    assert gone.getMessage().endswith(" code 1000")


def test_the_scope_describes_the_websocket() -> None:
    events = Events()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise ValueError("no lifespan")
        events.put(dict(scope))
        await send({"type": "websocket.close"})

    with serve_asgi(app) as live, pytest.raises(InvalidStatus):
        connect(
            url(live, "/ws/caf%C3%A9?room=1"),
            additional_headers={"X_Spoof": "no", "X-Real": "yes"},
            open_timeout=TIMEOUT,
        )
    scope = events.get()
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/ws/café"
    assert scope["raw_path"] == b"/ws/caf%C3%A9"
    assert scope["query_string"] == b"room=1"
    assert scope["server"] == ("127.0.0.1", live.port)
    headers = dict(scope["headers"])
    assert headers[b"x-real"] == b"yes"
    assert b"x_spoof" not in headers


def test_a_stop_closes_open_websockets_with_1012_before_the_drain() -> None:
    events = Events()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise ValueError("no lifespan")
        await receive()
        await send({"type": "websocket.accept"})
        events.put(await receive())

    with serve_asgi(app) as live, connect(url(live), open_timeout=TIMEOUT) as ws:
        live.server.shutdown()
        assert live.server.drain(TIMEOUT)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(TIMEOUT)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1012
        assert events.get() == {"type": "websocket.disconnect", "code": 1012}

"""Live reload's ASGI layer over real sockets: injection, reserved paths, events."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator

import pytest

from runserver_plus.livereload.asgi import AsgiLiveReload
from runserver_plus.livereload.middleware import (
    SCRIPT_PATH,
    SCRIPT_TAG,
    TRIGGER_PATH,
    WORKER_PATH,
    Hub,
)
from runserver_plus.server.asgi_scope import Receive, Scope, Send
from tests.live import record_server_log
from tests.live_asgi import LiveAsgiServer, serve_asgi
from tests.server.test_livereload import HTML, PROMPT, EventStream

pytestmark = pytest.mark.usefixtures("collect_leaks")


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """HTML with a length at /page, streamed HTML at /stream, JSON elsewhere."""
    if scope["type"] != "http":
        raise ValueError("no lifespan")
    path = scope["path"]
    html = path in ("/page", "/stream")
    headers = [(b"content-type", b"text/html" if html else b"application/json")]
    if path != "/stream":
        headers.append((b"content-length", str(len(HTML)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    half = len(HTML) // 2
    await send({"type": "http.response.body", "body": HTML[:half], "more_body": True})
    await send({"type": "http.response.body", "body": HTML[half:]})


@contextlib.contextmanager
def serve_livereload() -> Iterator[tuple[LiveAsgiServer, Hub]]:
    """The layer on 127.0.0.1:0; the hub closes before the drain, as the
    worker closes it."""
    hub = Hub()
    with serve_asgi(AsgiLiveReload(app, hub)) as live:
        try:
            yield live, hub
        finally:
            hub.close()


def test_a_complete_html_response_gets_the_tag_and_its_length() -> None:
    with serve_livereload() as (live, _), live.connect() as client:
        response = client.request("GET", "/page")
        assert response.body.count(SCRIPT_TAG) == 1
        assert response.body.endswith(b"</body></html>")
        assert response.header("Content-Length") == str(len(response.body))
        assert client.request("GET", "/page").body.count(SCRIPT_TAG) == 1


@pytest.mark.parametrize("path", ["/stream", "/data"])
def test_streams_and_other_types_pass_untouched(path: str) -> None:
    with serve_livereload() as (live, _), live.connect() as client:
        assert client.request("GET", path).body == HTML


@pytest.mark.parametrize("path", [SCRIPT_PATH, WORKER_PATH])
def test_the_scripts_are_served_quietly(path: str) -> None:
    with (
        record_server_log() as log,
        serve_livereload() as (live, _),
        live.connect() as client,
    ):
        response = client.request("GET", path)
        assert response.status == 200
        assert response.header("Content-Type") == "text/javascript; charset=utf-8"
        client.request("GET", "/data")
        log.wait_message('"GET /data HTTP/1.1"')
    assert not any("livereload" in m for m in log.messages())


def test_events_say_hello_then_carry_broadcasts() -> None:
    with serve_livereload() as (live, hub), EventStream(live.port) as stream:
        hello = stream.next_event()
        assert hello is not None
        assert hello["data"] == json.dumps({"boot": hub.boot_id})
        assert hub.broadcast({"type": "reload"}) == 1
        assert stream.next_event() == {
            "event": "change",
            "data": json.dumps({"type": "reload"}),
        }


def test_closing_the_hub_ends_the_stream_and_the_drain_is_prompt() -> None:
    with serve_livereload() as (live, hub), EventStream(live.port) as stream:
        assert stream.next_event() is not None
        started = time.monotonic()
        hub.close()
        assert stream.next_event(timeout=PROMPT) is None
        live.server.shutdown()
        assert live.server.drain(PROMPT)
        assert time.monotonic() - started < PROMPT


def test_the_trigger_reloads_streams_from_this_machine() -> None:
    with (
        serve_livereload() as (live, _),
        EventStream(live.port) as stream,
        live.connect() as client,
    ):
        assert stream.next_event() is not None
        assert client.request("GET", TRIGGER_PATH).status == 405
        response = client.request("POST", TRIGGER_PATH + "?css")
        assert response.body == b"Reloading 1 stream(s).\n"
        assert stream.next_event() == {
            "event": "change",
            "data": json.dumps({"type": "css"}),
        }

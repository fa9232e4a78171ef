"""End to end: ASGI mode chosen by setting or option, streaming, disconnects."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from runserver_plus.livereload.middleware import EVENTS_PATH, SCRIPT_TAG
from tests.e2e.harness import BANNER_RE, StartServer
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

ADDRPORT = "127.0.0.1:0"
ASGI_ENV = {"TESTPROJECT_ASGI": "1"}
ASGI_BANNER = re.compile(r"^Starting ASGI development server at http://\S+/$", re.M)


def test_asgi_application_setting_selects_asgi_mode(start_server: StartServer) -> None:
    server = start_server(ADDRPORT, env=ASGI_ENV)
    assert ASGI_BANNER.search(server.stdout_text()), server.stdout_text()
    assert server.get("/hello/").body == b"Hello, world!\n"
    assert server.get("/async/hello/").body == b"Hello, async world!\n"
    server.wait_for_stderr(r'"GET /async/hello/ HTTP/1.1" 200 20 [0-9.]+m?s$')


def test_asgi_option_serves_djangos_handler_without_the_setting(
    start_server: StartServer,
) -> None:
    server = start_server(ADDRPORT, "--asgi", "--noreload")
    assert ASGI_BANNER.search(server.stdout_text()), server.stdout_text()
    assert server.get("/async/hello/").status == 200


def test_wsgi_option_wins_over_the_setting(start_server: StartServer) -> None:
    server = start_server(ADDRPORT, "--wsgi", "--noreload", env=ASGI_ENV)
    assert "ASGI" not in BANNER_RE.search(server.stdout_text()).group(0)  # type: ignore[union-attr]
    assert server.get("/hello/").status == 200


def test_nothreading_with_asgi_is_a_one_line_command_error(
    start_server: StartServer,
) -> None:
    server = start_server(
        ADDRPORT, "--nothreading", "--noreload", env=ASGI_ENV, expect_ready=False
    )
    assert server.wait(30) == 1
    assert server.stderr_text().startswith("CommandError: --nothreading cannot")
    assert server.stderr_text().count("\n") == 1
    assert "Traceback" not in server.stderr_text()


#: The event streams of testproject: an async generator, and a sync one,
#: which Django's own handler would consume whole before sending a byte.
#: Each notes in MEDIA_ROOT that it was closed early.
STREAMS = {
    "async": ("/async/events/", "events-closed.log"),
    "sync": ("/sync/events/", "sync-events-closed.log"),
}


def open_events(port: int, query: str, path: str) -> tuple[socket.socket, float]:
    """Send a GET for the event stream; return the socket and when it was sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    request = f"GET {path}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    sock.sendall(request.encode())
    return sock, time.perf_counter()


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before {marker!r}: {data!r}"
        data += chunk
    return data


# With ASGI_APPLICATION set, as a Channels project has it: the application is
# a router around the handler the project made with get_asgi_application().
@pytest.mark.parametrize("kind", STREAMS)
def test_first_server_sent_event_arrives_at_once(
    start_server: StartServer, kind: str
) -> None:
    server = start_server(ADDRPORT, env=ASGI_ENV)
    server.get("/async/hello/")  # the first request imports the views
    sock, sent = open_events(server.port, "count=1&every=5", STREAMS[kind][0])
    with sock:
        head_and_first = read_until(sock, b"event: tick")
        waited = time.perf_counter() - sent
    assert b"Transfer-Encoding: chunked" in head_and_first
    assert b"text/event-stream" in head_and_first
    # The second event is 5 s away: the first came as it was yielded.
    assert waited < 1.0


@pytest.mark.parametrize("kind", STREAMS)
def test_a_client_that_leaves_closes_the_stream_within_a_second(
    start_server: StartServer, project_dir: Path, kind: str
) -> None:
    server = start_server(ADDRPORT, env=ASGI_ENV)
    path, log_name = STREAMS[kind]
    closed_log = project_dir / "media" / log_name
    sock, _ = open_events(server.port, "count=100&every=0.2&id=leaver", path)
    with sock:
        read_until(sock, b"event: tick")
    left = time.time()
    text = wait_until(
        lambda: closed_log.read_text() if closed_log.exists() else "",
        5.0,
        "the event stream's generator was never closed",
    )
    stream_id, closed_at = text.split()
    assert stream_id == "leaver"
    assert float(closed_at) - left < 1.0


def test_an_open_async_stream_does_not_hold_up_other_requests(
    start_server: StartServer,
) -> None:
    server = start_server(ADDRPORT, env=ASGI_ENV)
    # In flight for certain: its first event has arrived, the next is 5 s away.
    sock, _ = open_events(server.port, "count=1&every=5", STREAMS["async"][0])
    with sock:
        read_until(sock, b"event: tick")
        started = time.monotonic()
        assert server.get("/async/sleep/?seconds=0.2").body == b"slept 0.2\n"
        assert server.get("/hello/").status == 200
        assert time.monotonic() - started < 2.0


def test_a_blocking_sync_view_does_not_hold_up_other_requests(
    start_server: StartServer,
) -> None:
    server = start_server(ADDRPORT, env=ASGI_ENV)
    result: list[bytes] = []
    slow = threading.Thread(
        target=lambda: result.append(server.get("/slow/?seconds=3").body)
    )
    slow.start()
    try:
        started = time.monotonic()
        assert server.get("/async/hello/").status == 200
        assert server.get("/hello/").status == 200
        assert time.monotonic() - started < 2.0
    finally:
        slow.join(10)
    assert result == [b"slept 3.0\n"]


def test_static_files_are_served_in_front_with_validators(
    start_server: StartServer,
) -> None:
    server = start_server(ADDRPORT, env=ASGI_ENV)
    response = server.get("/static/css/site.css")
    assert response.status == 200
    etag = response.headers["ETag"]
    assert etag
    again = server.get("/static/css/site.css", headers={"If-None-Match": etag})
    assert again.status == 304
    partial = server.get("/static/css/site.css", headers={"Range": "bytes=0-3"})
    assert partial.status == 206
    assert partial.body == response.body[:4]
    assert server.get("/static/../settings.py").status == 404


def test_livereload_injects_its_script_and_ends_streams_on_reload(
    start_server: StartServer, project_dir: Path
) -> None:
    server = start_server(ADDRPORT, "--livereload", env=ASGI_ENV)
    page = server.get("/page/")
    assert SCRIPT_TAG in page.body
    assert page.headers["Content-Length"] == str(len(page.body))
    before = server.get("/pid/").json()["boot_id"]
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    with sock:
        sock.sendall(f"GET {EVENTS_PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        read_until(sock, b"event: hello")
        views = project_dir / "testapp" / "views.py"
        views.write_text(views.read_text() + "\n# edited\n")
        # The old worker ends the stream (the chunked body's last chunk) as
        # it stops, so the drain never waits for it.
        read_until(sock, b"0\r\n\r\n")
    wait_until(
        lambda: server.get("/pid/").json()["boot_id"] != before,
        15.0,
        "no new worker after the save",
    )


# WebSockets, through Channels' router in testproject/asgi.py.


def ws_url(server_port: int) -> str:
    return f"ws://127.0.0.1:{server_port}/ws/echo/"


def test_the_channels_echo_consumer_answers_text_and_binary(
    start_server: StartServer,
) -> None:
    pytest.importorskip("channels")
    server = start_server(ADDRPORT, env=ASGI_ENV)
    origin = server.base_url.rstrip("/")
    with connect(ws_url(server.port), origin=Origin(origin), open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(10) == "hello"
        ws.send(b"\x00\x01")
        assert ws.recv(10) == b"\x00\x01"
    server.wait_for_stderr(r'"WSCONNECT /ws/echo/" 101 - [0-9.]+m?s$')
    server.wait_for_stderr(r'"WSDISCONNECT /ws/echo/" 101 - [0-9.]+m?s code 1000$')


def test_the_origin_check_is_the_applications(start_server: StartServer) -> None:
    pytest.importorskip("channels")
    server = start_server(ADDRPORT, env=ASGI_ENV)
    with pytest.raises(InvalidStatus) as refused:
        connect(
            ws_url(server.port), origin=Origin("http://evil.example"), open_timeout=10
        )
    assert refused.value.response.status_code == 403
    server.wait_for_stderr(r'"WSREJECT /ws/echo/" 403')


def test_plain_django_refuses_a_websocket_with_403_and_one_line(
    start_server: StartServer,
) -> None:
    server = start_server(ADDRPORT, "--asgi")
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(server.port), open_timeout=10)
    assert refused.value.response.status_code == 403
    server.wait_for_stderr(r'"WSREJECT /ws/echo/" 403 - \S+ Django can only handle')
    assert "Traceback" not in server.stderr_text()


def test_a_reload_closes_open_websockets_with_1012_and_they_reconnect(
    start_server: StartServer, project_dir: Path
) -> None:
    pytest.importorskip("channels")
    server = start_server(ADDRPORT, env=ASGI_ENV)
    origin = server.base_url.rstrip("/")
    before = server.get("/pid/").json()["boot_id"]
    with connect(ws_url(server.port), origin=Origin(origin), open_timeout=10) as ws:
        ws.send("before")
        assert ws.recv(10) == "before"
        views = project_dir / "testapp" / "views.py"
        views.write_text(views.read_text() + "\n# edited\n")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(15)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1012
    # The client reconnects at once: into the backlog, answered by the new worker.
    with connect(ws_url(server.port), origin=Origin(origin), open_timeout=15) as ws:
        ws.send("after")
        assert ws.recv(10) == "after"
    assert server.get("/pid/").json()["boot_id"] != before


def test_with_asgi_option_a_sync_stream_is_sent_without_djangos_warning(
    start_server: StartServer,
) -> None:
    server = start_server(ADDRPORT, "--asgi", "--noreload")
    response = server.get("/stream/?chunks=3")
    assert response.body == b"chunk 0\nchunk 1\nchunk 2\n"
    assert response.headers["Transfer-Encoding"] == "chunked"
    server.wait_for_stderr(r'"GET /stream/\?chunks=3 HTTP/1.1" 200 24 ')
    assert "must consume synchronous iterators" not in server.stderr_text()

"""The supervisor's error page on a real socket: the page, and the live reload
stream that tells open tabs to show it."""

from __future__ import annotations

import json

from runserver_plus.livereload.middleware import EVENTS_PATH
from runserver_plus.reloader.errorpage import ErrorPage
from tests.live import LogRecorder, serve_app


def test_every_path_answers_the_error_with_500(log: LogRecorder) -> None:
    page = ErrorPage("Traceback: SyntaxError", 7, debug=True)
    with serve_app(page) as live, live.connect() as client:
        response = client.request("GET", "/any/page/")
    assert response.status == 500
    assert b"SyntaxError" in response.body


def test_the_live_reload_stream_says_broken_at_once_and_ends_with_the_error(
    log: LogRecorder,
) -> None:
    page = ErrorPage("Traceback: SyntaxError", 7, debug=True)
    with serve_app(page) as live, live.connect() as client:
        client.send(f"GET {EVENTS_PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = client._read_until(b"\r\n\r\n").decode("latin-1")
        size = int(client._read_until(b"\r\n"), 16)
        first = client._read_exact(size).decode()

        page.finish()  # a file changed: the page is no longer shown

        # The end of the first chunk, then the last chunk: the stream ended.
        rest = client._read_until(b"0\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK\r\n")
    assert "Content-Type: text/event-stream" in head
    lines = first.splitlines()
    assert lines[0] == "retry: 100"
    assert lines[1] == "event: change"
    assert json.loads(lines[2].removeprefix("data: ")) == {"type": "broken", "id": 7}
    assert rest == b"\r\n"
    assert not [m for m in log.messages() if EVENTS_PATH in m]  # quiet, as workers'

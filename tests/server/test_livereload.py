"""Live reload below the browser: injection, the middleware on a socket, the flag."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse

from runserver_plus.config import ServerConfig
from runserver_plus.livereload.middleware import (
    EVENTS_PATH,
    RETRY,
    SCRIPT_PATH,
    SCRIPT_TAG,
    TRIGGER_PATH,
    WORKER_PATH,
    Hub,
    LiveReloadApp,
    inject_script,
)
from runserver_plus.management.commands.runserver import StaticfilesCommand
from tests.live import TIMEOUT, LiveServer, record_server_log, serve_app

#: How soon an event stream must end once the hub closes (the worker's stop).
PROMPT = 1.0  # s

HTML = b"<!DOCTYPE html><html><head></head><body><p>Hi</p></body></html>"

StartResponse = Callable[..., Any]


# --- tier 1: inject_script -------------------------------------------------------


def test_the_tag_goes_before_the_closing_body_tag():
    assert inject_script(b"<body>x</body></html>") == (
        b"<body>x" + SCRIPT_TAG + b"</body></html>"
    )


def test_the_tag_goes_before_the_last_closing_body_tag():
    # A "</body>" inside a script string or a comment comes before the real one.
    body = b'<body><script>var s = "</body>";</script><!-- </body> --></body>'
    injected = inject_script(body)
    assert injected is not None
    assert injected.endswith(SCRIPT_TAG + b"</body>")
    assert injected.count(SCRIPT_TAG) == 1
    assert injected.replace(SCRIPT_TAG, b"") == body


@pytest.mark.parametrize("closing", [b"</BODY>", b"</Body>", b"</body >", b"</body\n>"])
def test_the_closing_body_tag_is_found_in_any_case_and_spacing(closing):
    body = b"<html><body>x" + closing + b"</html>"
    assert inject_script(body) == b"<html><body>x" + SCRIPT_TAG + closing + b"</html>"


@pytest.mark.parametrize(
    "body",
    [b"", b"<p>a fragment</p>", b"<body>never closed", b"</bodyx>", b"</ body>"],
)
def test_without_a_closing_body_tag_nothing_is_injected(body):
    assert inject_script(body) is None


def test_the_tag_loads_the_script_from_the_reserved_path_deferred():
    # An external same-origin script: allowed by a CSP with script-src 'self'.
    expected = f'<script src="{SCRIPT_PATH}" defer></script>'.encode()
    assert expected == SCRIPT_TAG


# --- tier 1: the app called directly (addresses no test can connect from) -----------


def call(
    app: LiveReloadApp, **environ: Any
) -> tuple[str, list[tuple[str, str]], bytes]:
    """Call ``app`` once with a minimal environ; the status, headers and body."""
    seen: list[Any] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ):
        seen[:] = [status, headers]
        return lambda data: None

    base = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": ""}
    result = app({**base, **environ}, start_response)
    body = b"".join(result)
    return seen[0], seen[1], body


def hello_app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"app"]


@pytest.mark.parametrize("address", ["192.0.2.10", "10.0.0.1", "2001:db8::1", ""])
def test_the_trigger_refuses_other_machines(address):
    hub = Hub()
    app = LiveReloadApp(hello_app, hub)
    status, _, body = call(
        app, REQUEST_METHOD="POST", PATH_INFO=TRIGGER_PATH, REMOTE_ADDR=address
    )
    assert status.startswith("403")
    assert body == b"Only from this machine.\n"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.0.0.2",
        "::1",
        # A server bound to "::" is dual-stack on Linux: a tool on this machine
        # that connects to 127.0.0.1 appears as the IPv4-mapped address.
        "::ffff:127.0.0.1",
    ],
)
def test_the_trigger_accepts_every_loopback_form(address):
    hub = Hub()
    app = LiveReloadApp(hello_app, hub)
    status, _, _ = call(
        app, REQUEST_METHOD="POST", PATH_INFO=TRIGGER_PATH, REMOTE_ADDR=address
    )
    assert status.startswith("200")


def test_other_paths_under_the_prefix_reach_the_project():
    # The error page's status path must reach the worker's project: its 404
    # tells the error page that the code works again.
    seen: list[str] = []

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        seen.append(environ["PATH_INFO"])
        assert not environ.get("runserver_plus.quiet")
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"nope"]

    status, _, body = call(
        LiveReloadApp(app, Hub()), PATH_INFO="/__runserver_plus__/status"
    )
    assert (status, body, seen) == (
        "404 Not Found",
        b"nope",
        ["/__runserver_plus__/status"],
    )


# --- tier 3: the middleware on a real socket --------------------------------------


@contextlib.contextmanager
def serve_livereload(
    app: Callable[..., Iterable[bytes]],
) -> Iterator[tuple[LiveServer, Hub]]:
    """``LiveReloadApp(app)`` on 127.0.0.1:0; the hub closes before the drain,
    as the worker closes it, so open event streams never hold the drain up."""
    hub = Hub()
    with serve_app(LiveReloadApp(app, hub)) as live:
        try:
            yield live, hub
        finally:
            hub.close()


def fixed_app(
    content_type: str, body: bytes, *extra: tuple[str, str], with_length: bool = True
) -> Callable[..., list[bytes]]:
    headers = [("Content-Type", content_type), *extra]
    if with_length:
        headers.append(("Content-Length", str(len(body))))

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", list(headers))
        return [body[: len(body) // 2], body[len(body) // 2 :]]

    return app


def get(live: LiveServer, path: str, method: str = "GET"):
    with live.connect() as client:
        return client.request(method, path)


def test_an_html_response_gets_the_tag_and_a_matching_content_length():
    with serve_livereload(fixed_app("text/html; charset=utf-8", HTML)) as (live, _):
        response = get(live, "/")
    assert response.status == 200
    assert response.body == HTML.replace(b"</body>", SCRIPT_TAG + b"</body>")
    assert [v for k, v in response.headers if k.lower() == "content-length"] == [
        str(len(response.body))
    ]


def test_an_html_response_without_content_length_gets_one():
    app = fixed_app("text/html", HTML, with_length=False)
    with serve_livereload(app) as (live, _):
        response = get(live, "/")
    assert response.body.count(SCRIPT_TAG) == 1
    assert response.header("Content-Length") == str(len(response.body))
    assert response.header("Transfer-Encoding") is None


def test_the_tag_is_injected_once_per_response_over_keep_alive():
    with (
        serve_livereload(fixed_app("text/html", HTML)) as (live, _),
        live.connect() as client,
    ):
        bodies = [client.request("GET", "/").body for _ in range(3)]
    assert all(body.count(SCRIPT_TAG) == 1 for body in bodies)


@pytest.mark.parametrize(
    ("content_type", "body", "extra"),
    [
        ("application/json", b'{"html": "</body>"}', ()),
        ("text/plain", b"</body>", ()),
        ("text/htmlx", HTML, ()),
        ("application/xhtml+xml", HTML, ()),
        ("text/html", gzip.compress(HTML, mtime=0), (("Content-Encoding", "gzip"),)),
        ("text/html", HTML, (("Content-Encoding", "br"),)),
        ("text/html", b"<p>no closing body tag</p>", ()),
    ],
    ids=["json", "text", "htmlx", "xhtml", "gzip", "br", "no-body-tag"],
)
def test_other_responses_pass_untouched(content_type, body, extra):
    with serve_livereload(fixed_app(content_type, body, *extra)) as (live, _):
        response = get(live, "/")
    assert response.body == body
    assert response.header("Content-Length") == str(len(body))


def test_a_streamed_html_response_passes_untouched():
    # An iterator may be endless (or an HTML download): never buffered.
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/html")])
        return iter([b"<html><body>", b"</body></html>"])

    with serve_livereload(app) as (live, _):
        response = get(live, "/")
    assert response.status == 200
    assert response.body == b"<html><body></body></html>"
    assert response.header("Transfer-Encoding") == "chunked"


def test_a_generator_app_that_starts_its_response_late_passes_untouched():
    # PEP 3333 lets an app call start_response() on the first iteration of
    # its result, after the app call returned: a generator does just that.
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/html")])
        yield b"<html><body>"
        yield b"</body></html>"

    with serve_livereload(app) as (live, _):
        response = get(live, "/")
    assert response.status == 200
    assert response.body == b"<html><body></body></html>"


def django_app(make_response: Callable[[], Any]) -> Callable[..., Any]:
    """A WSGI app that answers with a Django response, as WSGIHandler does."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
        response = make_response()
        status = f"{response.status_code} {response.reason_phrase}"
        start_response(status, list(response.items()))
        return response

    return app


def test_a_django_html_response_gets_the_tag():
    app = django_app(lambda: HttpResponse(HTML))
    with serve_livereload(app) as (live, _):
        response = get(live, "/")
    assert response.body.count(SCRIPT_TAG) == 1
    assert response.header("Content-Length") == str(len(response.body))


def test_a_django_streaming_html_response_passes_untouched():
    app = django_app(lambda: StreamingHttpResponse(iter([b"<body>", b"</body>"])))
    with serve_livereload(app) as (live, _):
        response = get(live, "/")
    assert response.body == b"<body></body>"


def test_a_django_json_response_passes_untouched():
    app = django_app(lambda: JsonResponse({"html": "</body>"}))
    with serve_livereload(app) as (live, _):
        response = get(live, "/")
    assert json.loads(response.body) == {"html": "</body>"}


class ClosingBody(list[bytes]):
    """A complete body that records its close(), as WSGI requires it be called."""

    streaming = False

    def __init__(self, parts: list[bytes]) -> None:
        super().__init__(parts)
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()


def test_the_original_body_is_closed_after_it_was_read():
    body = ClosingBody([HTML])

    def app(environ: dict[str, Any], start_response: StartResponse) -> ClosingBody:
        start_response("200 OK", [("Content-Type", "text/html")])
        return body

    with serve_livereload(app) as (live, _):
        response = get(live, "/")
    assert response.body.count(SCRIPT_TAG) == 1
    assert body.closed.wait(TIMEOUT)


def test_head_gets_the_length_of_the_injected_body():
    with (
        serve_livereload(fixed_app("text/html", HTML)) as (live, _),
        live.connect() as client,
    ):
        head = client.request("HEAD", "/")
        full = client.request("GET", "/")
    assert head.header("Content-Length") == str(len(full.body))
    assert head.body == b""


# Reserved paths.


@pytest.mark.parametrize(
    ("path", "asset"), [(SCRIPT_PATH, "client.js"), (WORKER_PATH, "worker.js")]
)
def test_the_scripts_are_served_as_javascript(path, asset):
    expected = resources.files("runserver_plus.livereload").joinpath(asset).read_bytes()
    with serve_livereload(hello_app) as (live, _):
        response = get(live, path)
    assert response.status == 200
    assert response.header("Content-Type") == "text/javascript; charset=utf-8"
    assert response.body == expected
    assert response.header("Content-Length") == str(len(expected))


def test_the_scripts_are_not_logged_but_the_trigger_is():
    with (
        record_server_log() as log,
        serve_livereload(hello_app) as (live, _),
        live.connect() as client,
    ):
        # One connection: each request is logged before the next is read.
        for method, path in [
            ("GET", SCRIPT_PATH),
            ("GET", WORKER_PATH),
            ("POST", TRIGGER_PATH),
            ("GET", "/after"),
        ]:
            assert client.request(method, path).status == 200
        log.wait_message("/after")
    messages = log.messages()
    assert any(TRIGGER_PATH in m for m in messages)
    assert not any("livereload" in m for m in messages), messages


class EventStream:
    """A raw GET of the events path, read one server-sent event at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), TIMEOUT)
        self.sock.sendall(
            f"GET {EVENTS_PATH} HTTP/1.1\r\nHost: testserver\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        self._raw = b""
        self._text = ""
        self.ended = False
        status_line, *lines = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {k.lower(): v for k, v in (x.split(": ", 1) for x in lines)}

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _until(self, marker: bytes) -> bytes:
        while marker not in self._raw:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed before {marker!r}")
            self._raw += data
        found, self._raw = self._raw.split(marker, 1)
        return found

    def _next_chunk(self) -> bytes:
        size = int(self._until(b"\r\n").split(b";")[0], 16)
        if size == 0:
            self._until(b"\r\n")
            self.ended = True
            return b""
        while len(self._raw) < size + 2:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed inside a chunk")
            self._raw += data
        chunk, self._raw = self._raw[:size], self._raw[size + 2 :]
        return chunk

    def next_event(self, timeout: float = TIMEOUT) -> dict[str, str] | None:
        """The next event's fields (comments skipped); None when the stream ends."""
        self.sock.settimeout(timeout)
        try:
            while True:
                while "\n\n" in self._text:
                    block, self._text = self._text.split("\n\n", 1)
                    fields = dict(
                        line.split(": ", 1)
                        for line in block.split("\n")
                        if line and not line.startswith(":")
                    )
                    if fields:
                        return fields
                if self.ended:
                    return None
                self._text += self._next_chunk().decode()
        finally:
            self.sock.settimeout(TIMEOUT)


def open_stream(live: LiveServer) -> tuple[EventStream, dict[str, str]]:
    stream = EventStream(live.port)
    hello = stream.next_event()
    assert hello is not None
    return stream, hello


def test_the_events_stream_says_hello_with_the_boot_id():
    with serve_livereload(hello_app) as (live, hub):
        stream, hello = open_stream(live)
        with stream:
            assert stream.status == 200
            assert stream.headers["content-type"] == "text/event-stream"
            assert stream.headers["cache-control"] == "no-store"
            assert hello == {
                "retry": str(RETRY),
                "event": "hello",
                "data": json.dumps({"boot": hub.boot_id}),
            }


def test_each_hub_has_its_own_boot_id():
    # The client reloads when the boot id changes: a new worker, a new hub.
    assert Hub().boot_id != Hub().boot_id


def test_a_broadcast_reaches_every_stream():
    with serve_livereload(hello_app) as (live, hub):
        first, _ = open_stream(live)
        second, _ = open_stream(live)
        with first, second:
            assert hub.broadcast({"type": "css", "path": "/x/site.css"}) == 2
            for stream in (first, second):
                assert stream.next_event() == {
                    "event": "change",
                    "data": json.dumps({"type": "css", "path": "/x/site.css"}),
                }


def test_a_client_that_left_does_not_stop_the_others():
    with serve_livereload(hello_app) as (live, hub):
        stream, _ = open_stream(live)
        stream.sock.close()
        with open_stream(live)[0] as other:
            assert hub.broadcast({"type": "reload"}) >= 1
            assert other.next_event() == {
                "event": "change",
                "data": json.dumps({"type": "reload"}),
            }


def test_closing_the_hub_ends_every_stream_at_once():
    with serve_livereload(hello_app) as (live, hub):
        first, _ = open_stream(live)
        second, _ = open_stream(live)
        with first, second:
            started = time.monotonic()
            hub.close()
            assert first.next_event(timeout=PROMPT) is None
            assert second.next_event(timeout=PROMPT) is None
            assert time.monotonic() - started < PROMPT
            assert first.ended
            assert second.ended


def test_after_close_a_new_stream_ends_at_once():
    with serve_livereload(hello_app) as (live, hub):
        hub.close()
        with EventStream(live.port) as stream:
            assert stream.status == 200
            assert stream.next_event(timeout=PROMPT) is None


def test_an_open_stream_does_not_hold_up_the_drain():
    # What the worker does when it stops: close the hub, then drain.
    hub = Hub()
    with serve_app(LiveReloadApp(hello_app, hub)) as live:
        stream, _ = open_stream(live)
        with stream:
            started = time.monotonic()
            hub.close()
            live.server.shutdown()
            assert live.server.drain(TIMEOUT)
            assert time.monotonic() - started < PROMPT


# The trigger.


def test_a_post_from_this_machine_reloads_every_stream():
    with serve_livereload(hello_app) as (live, _):
        first, _ = open_stream(live)
        second, _ = open_stream(live)
        with first, second:
            response = get(live, TRIGGER_PATH, "POST")
            assert response.status == 200
            assert response.body == b"Reloading 2 stream(s).\n"
            for stream in (first, second):
                assert stream.next_event() == {
                    "event": "change",
                    "data": json.dumps({"type": "reload"}),
                }


def test_a_post_with_css_asks_for_a_stylesheet_swap_only():
    with serve_livereload(hello_app) as (live, _):
        stream, _ = open_stream(live)
        with stream:
            assert get(live, TRIGGER_PATH + "?css", "POST").status == 200
            assert stream.next_event() == {
                "event": "change",
                "data": json.dumps({"type": "css"}),
            }


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_the_trigger_wants_post(method):
    with serve_livereload(hello_app) as (live, hub):
        stream, _ = open_stream(live)
        with stream:
            response = get(live, TRIGGER_PATH, method)
            assert response.status == 405
            # Nothing was sent: the next event is the one broadcast now.
            hub.broadcast({"type": "marker"})
            assert stream.next_event() == {
                "event": "change",
                "data": json.dumps({"type": "marker"}),
            }


def test_the_trigger_with_no_browser_open_says_so():
    with serve_livereload(hello_app) as (live, _):
        response = get(live, TRIGGER_PATH, "POST")
    assert (response.status, response.body) == (200, b"Reloading 0 stream(s).\n")


# --- tier 2: the flag -------------------------------------------------------------


class RecordingCommand(StaticfilesCommand):
    """The real command, except that it records the config instead of serving."""

    config: ServerConfig | None = None

    def hand_off(self, config: ServerConfig) -> None:
        self.config = config


def config_for(*args: str, **options: Any) -> ServerConfig:
    command = RecordingCommand(stdout=io.StringIO(), stderr=io.StringIO())
    call_command(command, *args, **options)
    assert command.config is not None
    return command.config


@pytest.fixture
def debug(settings):
    """pytest-django runs tests with DEBUG off; runserver users mostly have it on."""
    settings.DEBUG = True
    return settings


def test_live_reload_is_off_by_default(debug):
    assert config_for().livereload is False


def test_the_flag_turns_it_on(debug):
    assert config_for("--livereload").livereload is True


def test_the_setting_turns_it_on(debug):
    debug.RUNSERVER_PLUS_LIVERELOAD = True
    assert config_for().livereload is True


def test_the_flag_with_noreload_is_an_error(debug):
    with pytest.raises(CommandError, match=r"--livereload .* --noreload"):
        config_for("--livereload", "--noreload")


def test_the_setting_with_noreload_stays_off_without_an_error(debug):
    debug.RUNSERVER_PLUS_LIVERELOAD = True
    assert config_for("--noreload").livereload is False


@pytest.mark.parametrize("args", [("--livereload",), ()])
def test_without_debug_it_stays_off(settings, args):
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["localhost"]
    settings.RUNSERVER_PLUS_LIVERELOAD = True
    assert config_for(*args).livereload is False


def test_the_static_directories_reach_the_config(debug):
    (directory,) = debug.STATICFILES_DIRS
    assert str(directory) in config_for("--livereload").static_dirs


def test_the_help_lists_the_flag():
    parser = RecordingCommand().create_parser("manage.py", "runserver")
    assert "--livereload" in parser.format_help()

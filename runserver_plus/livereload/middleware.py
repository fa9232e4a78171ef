"""Live reload in the worker: event hub, reserved paths, script injection."""

from __future__ import annotations

import ipaddress
import json
import queue
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from typing import Any

from runserver_plus.server.wsgi import StartResponse, WSGIApp, WSGIEnviron, respond

PREFIX = "/__runserver_plus__/"
SCRIPT_PATH = PREFIX + "livereload.js"
WORKER_PATH = PREFIX + "livereload-worker.js"
EVENTS_PATH = PREFIX + "events"
TRIGGER_PATH = PREFIX + "reload"

#: A comment line on idle streams, so that dead clients are noticed.
HEARTBEAT = 15.0  # s
#: How long a browser waits before its first reconnection after a stream ends.
RETRY = 100  # ms
SCRIPT_TAG = f'<script src="{SCRIPT_PATH}" defer></script>'.encode()
_BODY_END = re.compile(rb"</body\s*>", re.IGNORECASE)


class Hub:
    """Fans change messages out to every open event stream."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: set[queue.Queue[dict[str, Any] | None]] = set()
        self._closed = False
        self.boot_id = uuid.uuid4().hex

    def broadcast(self, message: dict[str, Any]) -> int:
        """Send ``message`` to every stream; returns how many got it."""
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber.put(message)
        return len(subscribers)

    def close(self) -> None:
        """End every stream now (the worker is stopping)."""
        with self._lock:
            self._closed = True
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber.put(None)

    def stream(self) -> Iterator[bytes]:
        """One client's server-sent events, until the hub closes."""
        inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        with self._lock:
            if self._closed:
                return
            self._subscribers.add(inbox)
        try:
            hello = json.dumps({"boot": self.boot_id})
            yield f"retry: {RETRY}\nevent: hello\ndata: {hello}\n\n".encode()
            while True:
                try:
                    message = inbox.get(timeout=HEARTBEAT)
                except queue.Empty:
                    yield b": ping\n\n"
                    continue
                if message is None:
                    return
                yield f"event: change\ndata: {json.dumps(message)}\n\n".encode()
        finally:
            with self._lock:
                self._subscribers.discard(inbox)


def _asset(name: str) -> bytes:
    return resources.files("runserver_plus.livereload").joinpath(name).read_bytes()


def inject_script(body: bytes) -> bytes | None:
    """``body`` with the script tag before its last ``</body>``, or None."""
    matches = list(_BODY_END.finditer(body))
    if not matches:
        return None
    at = matches[-1].start()
    return body[:at] + SCRIPT_TAG + body[at:]


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    # A [::] socket also takes IPv4: 127.0.0.1 arrives as ::ffff:127.0.0.1,
    # which Python < 3.13 does not call loopback.
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


class LiveReloadApp:
    """WSGI middleware: answers the reserved paths and injects the client script
    into complete HTML responses."""

    def __init__(self, app: WSGIApp, hub: Hub) -> None:
        self.app = app
        self.hub = hub

    def __call__(
        self, environ: WSGIEnviron, start_response: StartResponse
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(PREFIX):
            reserved = self._reserved(path, environ, start_response)
            if reserved is not None:
                return reserved
        captured: list[Any] = []
        returned = False

        def capture(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            # Only a response started before the app returned can still be
            # changed; one started lazily, on iteration, goes through as is.
            if returned or exc_info is not None or not _is_html(headers):
                return start_response(status, headers, exc_info)
            captured[:] = [status, headers]
            return _refuse_write

        result = self.app(environ, capture)
        returned = True
        if not captured:
            return result
        status, headers = captured
        # Only complete bodies: a list, or a Django response that is not
        # streaming. A stream may be endless (or an HTML file download).
        complete = isinstance(result, (list, tuple)) or (
            getattr(result, "streaming", True) is False
        )
        if not complete:
            start_response(status, headers)
            return result
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        injected = inject_script(body)
        if injected is not None:
            body = injected
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [body]

    def _reserved(
        self, path: str, environ: WSGIEnviron, start_response: StartResponse
    ) -> Iterable[bytes] | None:
        environ["runserver_plus.quiet"] = True
        if path == SCRIPT_PATH:
            return _javascript(start_response, _asset("client.js"))
        if path == WORKER_PATH:
            return _javascript(start_response, _asset("worker.js"))
        if path == EVENTS_PATH:
            start_response(
                "200 OK",
                [
                    ("Content-Type", "text/event-stream"),
                    ("Cache-Control", "no-store"),
                    ("X-Accel-Buffering", "no"),
                    # The browser reconnects on a connection of its own when
                    # the stream ends; keeping this one would hold up a drain.
                    ("Connection", "close"),
                ],
            )
            return self.hub.stream()
        if path == TRIGGER_PATH:
            environ["runserver_plus.quiet"] = False
            return self._trigger(environ, start_response)
        environ["runserver_plus.quiet"] = False
        return None

    def _trigger(
        self, environ: WSGIEnviron, start_response: StartResponse
    ) -> Iterable[bytes]:
        """``POST /__runserver_plus__/reload`` from this machine: reload browsers
        (``?css`` swaps stylesheets only), for asset builders and scripts."""
        if environ.get("REQUEST_METHOD") != "POST":
            return _plain(start_response, "405 Method Not Allowed", "Use POST.\n")
        if not _is_loopback(environ.get("REMOTE_ADDR", "")):
            return _plain(start_response, "403 Forbidden", "Only from this machine.\n")
        css = "css" in environ.get("QUERY_STRING", "").split("&")
        count = self.hub.broadcast({"type": "css" if css else "reload"})
        return _plain(start_response, "200 OK", f"Reloading {count} stream(s).\n")


def _is_html(headers: list[tuple[str, str]]) -> bool:
    content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
    encoded = any(
        k.lower() == "content-encoding" and v.strip().lower() not in ("", "identity")
        for k, v in headers
    )
    return content_type.split(";")[0].strip().lower() == "text/html" and not encoded


def _refuse_write(data: bytes) -> None:
    raise RuntimeError("write() is not supported for HTML responses under livereload")


def _javascript(start_response: StartResponse, body: bytes) -> list[bytes]:
    return respond(
        start_response, "200 OK", "text/javascript; charset=utf-8", body, "no-cache"
    )


def _plain(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    return respond(start_response, status, "text/plain; charset=utf-8", text.encode())

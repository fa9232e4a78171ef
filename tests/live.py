"""The server in-process on 127.0.0.1:0, and a raw HTTP/1.1 client for the tests."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import queue
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from runserver_plus.config import ServerConfig
from runserver_plus.server.server import Server
from runserver_plus.server.sockets import bind_socket
from runserver_plus.server.wsgi import WSGIApp, WSGIEnviron
from tests.helpers import wait_until

TIMEOUT = 10.0  # s, for every socket operation of a test client


class Serving(Protocol):
    """What both drivers' servers offer a test (``Server``, ``AsgiServer``)."""

    @property
    def port(self) -> int: ...
    def serve_forever(self) -> None: ...
    def shutdown(self) -> None: ...
    def drain(self, timeout: float) -> bool: ...


ServerT = TypeVar("ServerT", bound=Serving)


@dataclasses.dataclass
class Live(Generic[ServerT]):
    """A server of either driver, serving in ``thread`` (``serving``)."""

    server: ServerT
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.server.port

    def connect(self, timeout: float = TIMEOUT) -> RawClient:
        return RawClient(socket.create_connection(("127.0.0.1", self.port), timeout))


LiveServer = Live[Server]


#: Which driver ``serve_app`` runs the WSGI app on: the threaded server, or the
#: asyncio one behind asgiref's WSGI-to-ASGI adapter. The ``server_mode``
#: fixture sets it, so a module's tests run in both modes.
SERVER_MODE: contextvars.ContextVar[str] = contextvars.ContextVar(
    "SERVER_MODE", default="wsgi"
)


@contextlib.contextmanager
def serve_app(app: WSGIApp, **config: Any) -> Iterator[LiveServer]:
    """Run ``app`` on a real socket in a thread; stop and drain on exit."""
    if SERVER_MODE.get() == "asgi":
        from asgiref.wsgi import WsgiToAsgi

        from tests.live_asgi import serve_asgi

        asgi_app = WsgiToAsgi(app)  # type: ignore[no-untyped-call]  # asgiref: untyped
        with serve_asgi(_http_only(asgi_app), **config) as live:
            yield live  # type: ignore[misc]
        return
    settings = ServerConfig(addr="127.0.0.1", port=0, **config)
    sock = bind_socket("127.0.0.1", 0, ipv6=False, backlog=settings.backlog)
    with serving(Server(sock, app, settings)) as live:
        yield live


@contextlib.contextmanager
def serving(server: ServerT) -> Iterator[Live[ServerT]]:
    """Run ``server`` in a thread; on exit stop it accepting, then drain it,
    and fail the test if either does not end in time."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Live(server, thread)
    finally:
        server.shutdown()
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "the server did not stop accepting"
        assert server.drain(TIMEOUT), "connections were still busy after the drain"


def _http_only(app: Any) -> Any:
    """The adapted app, refusing lifespan as Django does."""

    async def http_only(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"cannot handle {scope['type']}")
        await app(scope, receive, send)

    return http_only


@dataclasses.dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return ",".join(values) if values else None


class RawClient:
    """Sends exact bytes and parses responses by hand, to see what goes on the wire."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed before {marker!r}; got {self.buffer!r}")
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    def _read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                got = len(self.buffer)
                raise ConnectionError(f"closed after {got} of {size} bytes")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_response(self, *, head_request: bool = False) -> Response:
        raw_head = self._read_until(b"\r\n\r\n")
        status_line, *lines = raw_head.decode("latin-1").split("\r\n")
        version, code, reason = [*status_line.split(" ", 2), ""][:3]
        assert version == "HTTP/1.1", status_line
        headers = [tuple(line.split(": ", 1)) for line in lines]
        response = Response(int(code), reason, headers, b"", raw_head)  # type: ignore[arg-type]
        if head_request or response.status in (204, 304) or response.status < 200:
            return response
        if (response.header("Transfer-Encoding") or "").lower() == "chunked":
            response.body = self._read_chunked()
        elif (length := response.header("Content-Length")) is not None:
            response.body = self._read_exact(int(length))
        else:
            while self._fill():
                pass
            response.body, self.buffer = self.buffer, b""
        return response

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self._read_until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                self._read_until(b"\r\n")
                return body
            body += self._read_exact(size)
            assert self._read_exact(2) == b"\r\n"

    def read_until_closed(self) -> bytes:
        """Every byte up to the server's close (EOF), raw; buffered bytes first."""
        while self._fill():
            pass
        data, self.buffer = self.buffer, b""
        return data

    def is_closed(self, timeout: float = TIMEOUT) -> bool:
        """True when the server closed the connection (EOF) within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1)
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(TIMEOUT)
        if data:
            self.buffer += data
            return False
        return True

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> Response:
        lines = [f"{method} {path} HTTP/1.1", "Host: testserver"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        return self.read_response(head_request=method == "HEAD")


class Gate:
    """A point where application threads stop until the test opens it.

    Used as a context manager it opens on exit, so a failing test never leaves
    a request blocked for the drain to wait on.
    """

    def __init__(self) -> None:
        self.entered: queue.Queue[str] = queue.Queue()
        self.released = threading.Event()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.open()

    def wait_here(self, name: str = "") -> bool:
        """Called by the app: announce arrival, then block until opened."""
        self.entered.put(name)
        return self.released.wait(TIMEOUT)

    def wait_entered(self, count: int = 1, timeout: float = TIMEOUT) -> list[str]:
        """Names of the next ``count`` arrivals; ``queue.Empty`` past the deadline."""
        return [self.entered.get(timeout=timeout) for _ in range(count)]

    def open(self) -> None:
        self.released.set()


class Recorder:
    """An app that keeps each environ (with the body it read in ``test.body``)
    and answers ``answer(environ)``: by default the request's path."""

    def __init__(self) -> None:
        self.environs: list[dict[str, Any]] = []

    def answer(self, environ: WSGIEnviron) -> bytes:
        return str(environ["PATH_INFO"]).encode("latin-1")

    def __call__(self, environ: WSGIEnviron, start_response: Any) -> Iterable[bytes]:
        environ["test.body"] = environ["wsgi.input"].read()
        self.environs.append(environ)
        body = self.answer(environ)
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    @property
    def paths(self) -> list[str]:
        return [environ["PATH_INFO"] for environ in self.environs]

    def get(self, client: RawClient, raw: bytes) -> dict[str, Any]:
        """Send one request and return the environ the app saw."""
        client.send(raw)
        assert client.read_response().status == 200
        return self.environs[-1]


class LogRecorder(logging.Handler):
    """Keeps the records one logger emits, for assertions from the test thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [record.getMessage() for record in list(self.records)]

    def wait_for(
        self, predicate: Callable[[logging.LogRecord], bool], timeout: float = TIMEOUT
    ) -> logging.LogRecord:
        """The first record matching ``predicate``, waiting up to ``timeout``."""

        def first() -> logging.LogRecord | None:
            return next((r for r in list(self.records) if predicate(r)), None)

        try:
            found = wait_until(first, timeout, "no matching log record")
        except AssertionError as error:
            raise AssertionError(f"{error}; records: {self.messages()!r}") from None
        assert found is not None
        return found

    def wait_message(self, text: str, timeout: float = TIMEOUT) -> logging.LogRecord:
        """The first record whose message contains ``text``."""
        return self.wait_for(lambda r: text in r.getMessage(), timeout)


@contextlib.contextmanager
def record_server_log() -> Iterator[LogRecorder]:
    """Attach a recorder to ``django.server``, which Django sets to not propagate."""
    logger = logging.getLogger("django.server")
    recorder = LogRecorder()
    old_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(recorder)
    try:
        yield recorder
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(old_level)

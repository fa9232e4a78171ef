"""One client connection: read requests, answer them, keep alive, time out."""

from __future__ import annotations

import contextlib
import dataclasses
import http
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from typing import IO, Any

import h11

from runserver_plus.server import log
from runserver_plus.server.request import (
    NO_BODY,
    NoBody,
    ProtocolError,
    RequestBody,
    RequestHead,
    decode_chunked,
    h11_reason,
    parse_head,
    take_head,
)
from runserver_plus.server.response import (
    ClientGone,
    ClientWentAway,
    FileSpan,
    Response,
    closing_response,
)
from runserver_plus.server.sockets import set_io_timeout
from runserver_plus.server.wsgi import WSGIApp, WSGIEnviron, build_environ

#: Unread request body we still read to keep a keep-alive connection in sync.
MAX_DRAIN = 1024 * 1024  # bytes
#: Largest piece handed to one sendall(), so a send timeout measures progress.
MAX_SEND = 1024 * 1024  # bytes
RECV_SIZE = 65536  # bytes
#: How long a connection accepted just before a stop may take to send its
#: first request: the client did nothing wrong, so it still gets an answer.
FRESH_GRACE = 0.5  # s
#: Longest request line shown in the log (a 414 can be 64 KiB long).
LOGGED_LINE = 1000  # characters
#: recv() flag for a read that must not wait (the event loop's); 0 where the
#: platform has none, as on Windows: the loop reads only readable sockets.
_DONT_WAIT = getattr(socket, "MSG_DONTWAIT", 0)


@dataclasses.dataclass(frozen=True)
class ConnectionSettings:
    """What a connection needs from the server: limits and environ constants."""

    base_environ: WSGIEnviron
    idle_timeout: float  # s, between requests on a kept-alive connection
    read_timeout: float  # s, per read while a request is arriving or sent
    keep_alive: bool  # False with --nothreading: one request per connection


class Connection:
    """Serve the requests of one accepted socket until it closes or the server stops."""

    def __init__(
        self,
        sock: socket.socket,
        peer: Any,
        app: WSGIApp,
        settings: ConnectionSettings,
    ) -> None:
        self.sock = sock
        self.peer = peer
        self.app = app
        self.settings = settings
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._idle = True
        self._closing = False
        self._served = 0  # requests answered so far
        #: The receive timeout in force. The send timeout never changes: it
        #: is set once, as each change costs system calls.
        self._timeout: float | None = None
        set_io_timeout(sock, settings.read_timeout, recv=False)

    # --- life cycle, seen from the server ---------------------------------

    def close_if_idle(self) -> None:
        """Ask the connection to stop; wake it at once if it waits between
        requests. One that has not sent its first request yet gets a moment."""
        with self._lock:
            self._closing = True
            if not self._idle:
                return
            if self._served:
                _shutdown(self.sock)
                return
        timer = threading.Timer(FRESH_GRACE, self._shutdown_if_idle)
        timer.daemon = True
        timer.start()

    def _shutdown_if_idle(self) -> None:
        with self._lock:
            if self._idle:
                _shutdown(self.sock)

    def abort(self) -> None:
        """Break off whatever the connection is doing (the drain bound is over)."""
        with self._lock:
            self._closing = True
        _shutdown(self.sock)

    def serve(self) -> None:
        """Serve requests with blocking reads until the connection ends; close it."""
        try:
            while (head := self._next_head()) is not None and self.answer(head):
                pass
        except (OSError, ClientGone) as error:
            _client_failed(error, self.peer)
        finally:
            self.sock.close()

    def leave_loop(self) -> None:
        """Mark the connection as waiting for its next request: it leaves the
        event loop for a thread of its own, which the drain may find idle."""
        with self._lock:
            self._idle = not self._buffer

    def _next_head(self) -> bytes | None:
        try:
            return self._read_head()
        except ProtocolError as error:
            self.reject(error)
            return None

    # --- reading ------------------------------------------------------------

    def _recv(self, timeout: float) -> bytes:
        if timeout != self._timeout:  # idle between requests, or reading one
            set_io_timeout(self.sock, timeout, send=False)
            self._timeout = timeout
        try:
            return self.sock.recv(RECV_SIZE)
        except (BlockingIOError, TimeoutError) as error:
            raise ClientGone("timed out") from error

    def _recv_body(self) -> bytes:
        """Bytes while a body arrives; ``ClientGone`` on EOF or timeout."""
        data = self._recv(self.settings.read_timeout)
        if not data:
            raise ClientGone("closed mid-body")
        return data

    def take_head(self) -> bytes | None:
        """The next request's head if it has arrived whole, else None;
        ``ProtocolError`` (414, 431) when it is too long to wait for."""
        return take_head(self._buffer)

    @property
    def served(self) -> int:
        """How many requests the connection has answered."""
        return self._served

    @property
    def has_partial_request(self) -> bool:
        """Whether bytes of a request that has not arrived whole are buffered."""
        return bool(self._buffer)

    def receive_ready(self, *, wait: bool = True) -> bool:
        """Take what the client sent; False when it closed, reset or spoke TLS.

        For a socket the event loop saw readable, which answers at once.
        ``wait=False`` for one that may not be: where the platform cannot read
        without waiting (Windows), nothing is read then.
        """
        if not wait and not _DONT_WAIT:
            return True
        try:
            data = self.sock.recv(RECV_SIZE, _DONT_WAIT)
        except BlockingIOError:
            return True  # a spurious wake-up: nothing to read after all
        except OSError:
            return False  # reset by the client
        return self._received(data)

    def _received(self, data: bytes) -> bool:
        if not data:
            return False
        if not self._buffer and data.startswith(log.TLS_HANDSHAKE_PREFIX):
            log.log_tls_attempt(self.sock)
            return False
        self._buffer += data
        self._idle = False
        return True

    def _read_head(self) -> bytes | None:
        """The next request's head, or None when the client is done with us."""
        while True:
            head = self.take_head()
            if head is not None:
                return head
            buffer = self._buffer
            with self._lock:
                if self._closing and self._served and not buffer:
                    return None
                self._idle = not buffer
            timeout = (
                self.settings.read_timeout if buffer else self.settings.idle_timeout
            )
            try:
                data = self._recv(timeout)
            except ClientGone:
                if buffer:
                    raise ProtocolError(408, "Request Timeout") from None
                return None
            finally:
                with self._lock:
                    self._idle = False
            if not self._received(data):
                return None

    # --- one request --------------------------------------------------------

    def answer(self, head: bytes) -> bool:
        """Serve the request with this head; True when the connection may carry
        another. A client that goes away costs at most one quiet log line."""
        try:
            return self._answer(head)
        except (OSError, ClientGone) as error:
            _client_failed(error, self.peer)
        except Exception:  # noqa: BLE001 - a bug, or a log filter that raised
            # This connection closes; the server, and its other clients, go on.
            sys.stderr.write(f"Exception while serving {self.peer}:\n")
            traceback.print_exc(file=sys.stderr)
        return False

    def reject(self, error: ProtocolError) -> None:
        """Answer what is buffered with the error the server found in it; the
        connection is to be closed afterwards."""
        self._send_error(error, _first_line(bytes(self._buffer)), 0.0)

    def _answer(self, head: bytes) -> bool:
        started = time.perf_counter()
        request_line = _first_line(head)
        try:
            request, conn = parse_head(head)
        except ProtocolError as error:
            self._send_error(error, request_line, started)
            return False
        reader: RequestBody | NoBody
        body: IO[bytes] | RequestBody | NoBody
        length = None
        if conn is None:  # no body: what follows the head stays in the buffer
            reader = body = NO_BODY
        else:
            chunked = any(name == b"transfer-encoding" for name, _ in request.headers)
            reader = body = RequestBody(self._recv_body, conn, chunked=chunked)
            if self._buffer:
                # Only when there is something: h11 takes b"" for the client
                # having closed the connection.
                reader.receive(bytes(self._buffer))
                self._buffer.clear()
            if conn.they_are_waiting_for_100_continue:
                self._sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            try:
                if chunked:
                    body, length = decode_chunked(reader)
            except h11.RemoteProtocolError as error:
                self._send_error(
                    ProtocolError(400, h11_reason(error)), request_line, started
                )
                return False
            except ProtocolError as error:
                self._send_error(error, request_line, started)
                return False
        response = Response(
            self,
            head=request.method == b"HEAD",
            http11=request.http_version != b"1.0",
            keep_alive=self._may_keep_alive(request),
        )
        try:
            environ = build_environ(self.settings.base_environ, request, body, length)
            response.run(self.app, environ)
        finally:
            body.close()
        if not response.completed:
            return False  # the response could not be finished: close to show it
        if not environ.get("runserver_plus.quiet"):
            log.log_request(
                request_line,
                response.status,
                response.sent,
                time.perf_counter() - started,
                self.sock,
                note=environ.get(log.ACCESS_NOTE),
            )
        self._served += 1
        if not response.keep_alive:
            return False
        if conn is None:
            return True
        try:
            in_sync = reader.drain(MAX_DRAIN)
        except h11.RemoteProtocolError:
            return False
        if not in_sync or conn.their_state not in (h11.DONE, h11.MUST_CLOSE):
            return False
        self._buffer += conn.trailing_data[0]
        return True

    def _may_keep_alive(self, request: RequestHead) -> bool:
        """Persistent unless the client, the server mode or a stop says no."""
        if self._closing or not self.settings.keep_alive:
            return False
        values = [value for name, value in request.headers if name == b"connection"]
        if not values:  # the common case
            return request.http_version != b"1.0"
        tokens = {
            token.strip().lower() for value in values for token in value.split(b",")
        }
        if request.http_version != b"1.0":
            return b"close" not in tokens
        return b"keep-alive" in tokens  # HTTP/1.0 asks for it, as Django allows

    def _send_error(
        self, error: ProtocolError, request_line: str, started: float
    ) -> None:
        """Answer a request the server rejects itself, then close; without the
        body when the request line, however malformed, asks for HEAD."""
        log.log_protocol_error(error.status, error.reason, self.sock)
        phrase = http.HTTPStatus(error.status).phrase
        body = f"{error.status} {phrase}\n\n{error.reason}\n".encode()
        head = request_line.startswith("HEAD ")
        try:
            self._sendall(
                closing_response(
                    error.status, "text/plain; charset=utf-8", body, head=head
                )
            )
        except ClientGone:
            return
        duration = time.perf_counter() - started if started else 0.0
        log.log_request(request_line, error.status, None, duration, self.sock)

    # --- writing --------------------------------------------------------------

    def send(self, parts: Iterable[bytes | FileSpan]) -> None:
        """Write the parts in order, files with ``sendfile``; one write for the
        bytes between files. ``ClientWentAway`` when the client is gone."""
        pending: list[bytes] = []
        for part in parts:
            if isinstance(part, FileSpan):
                if not part.count:
                    continue
                self._sendall(b"".join(pending))
                pending = []
                # sendfile() on a blocking socket would wait for a stalled
                # client forever: bound it the slower way.
                self.sock.settimeout(self.settings.read_timeout)
                try:
                    sent = self.sock.sendfile(part.file, part.offset, part.count)
                except OSError as error:
                    raise ClientWentAway(str(error)) from error
                finally:
                    self.sock.settimeout(None)
                if sent != part.count:
                    raise ClientWentAway("the file is shorter than announced")
            elif part:
                pending.append(part)
        self._sendall(b"".join(pending))

    def _sendall(self, data: bytes) -> None:
        try:
            if len(data) <= MAX_SEND:
                if data:
                    self.sock.sendall(data)
                return
            view = memoryview(data)
            for start in range(0, len(view), MAX_SEND):
                self.sock.sendall(view[start : start + MAX_SEND])
        except OSError as error:
            raise ClientWentAway(str(error)) from error


def _first_line(data: bytes) -> str:
    """The request line as the log shows it: raw bytes read as latin-1."""
    end = data.find(b"\n")
    line = (data if end < 0 else data[:end]).rstrip(b"\r").decode("latin-1")
    return line if len(line) <= LOGGED_LINE else line[:LOGGED_LINE] + "..."


_BROKEN_OFF = (
    ClientWentAway,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)


def _client_failed(error: OSError | ClientGone, peer: Any) -> None:
    """One quiet line when the client broke the connection off; nothing for a
    timeout or a socket the server shut down itself."""
    if isinstance(error, _BROKEN_OFF):
        log.log_broken_pipe(peer)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the client or by us
        sock.shutdown(socket.SHUT_RDWR)

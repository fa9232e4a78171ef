"""One client connection: read requests, answer them, keep alive, time out.

The threaded and serial modes' driver around the sans-I/O core (core.py,
request.py, body.py), in the order a request goes through it; the socket's
reads and writes, with TLS, are its transport's (transport.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import ssl
import sys
import time
import traceback
from collections.abc import Iterable
from typing import IO, Any

import h11

from runserver_plus.server import log
from runserver_plus.server.body import (
    NO_BODY,
    NoBody,
    RequestBody,
    decode_chunked,
)
from runserver_plus.server.core import (
    RequestBuffer,
    error_response,
    first_line,
    keep_alive_asked,
    starts_with_tls,
)
from runserver_plus.server.errors import ClientGone, ClientWentAway, ProtocolError
from runserver_plus.server.linger import Lingerer
from runserver_plus.server.request import (
    RequestHead,
    h11_reason,
    parse_head,
)
from runserver_plus.server.response import FileSpan, Response
from runserver_plus.server.state import StopClock
from runserver_plus.server.tls import redirect_to_https
from runserver_plus.server.transport import Transport
from runserver_plus.server.wsgi import WSGIApp, WSGIEnviron, build_environ

#: Unread request body we still read to keep a keep-alive connection in sync.
MAX_DRAIN = 1024 * 1024  # bytes


@dataclasses.dataclass(frozen=True)
class ConnectionSettings:
    """What a connection needs from the server: limits, environ constants,
    and the server's stop clock and lingering closer."""

    base_environ: WSGIEnviron
    idle_timeout: float  # s, between requests on a kept-alive connection
    read_timeout: float  # s, per read while a request is arriving or sent
    keep_alive: bool  # False with --nothreading: one request per connection
    stop: StopClock = dataclasses.field(default_factory=StopClock)
    lingerer: Lingerer = dataclasses.field(default_factory=Lingerer)
    #: The HTTPS port's context: TLS for a connection that starts with a
    #: handshake, a redirect to https for one that starts in plain HTTP.
    tls: ssl.SSLContext | None = None


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
        self._buffer = RequestBuffer()
        self._aborted = False
        self._transport = Transport(
            sock, send_timeout=settings.read_timeout, tls=settings.tls
        )

    # --- life cycle, seen from the server ---------------------------------

    def abort(self) -> None:
        """Break off whatever the connection is doing (the drain bound is over).

        The only time another thread touches the socket: a connection that
        waits for its next request ends by itself at the drain's deadline.
        """
        self._aborted = True
        _shutdown(self.sock)

    def serve(self) -> None:
        """Serve requests with blocking reads until the connection ends; close it."""
        try:
            while (head := self._next_head()) is not None and self.answer(head):
                pass
        except (OSError, ClientGone) as error:
            _client_failed(error, self.peer)
        finally:
            self.close()

    def close(self) -> None:
        """Close gracefully (see ``Lingerer``); the connection is done with."""
        if not self._aborted:
            self._transport.end_tls()
        self.settings.lingerer.close(self.sock)

    def _next_head(self) -> bytes | None:
        try:
            return self._read_head()
        except ProtocolError as error:
            self.reject(error)
            return None

    # --- reading ------------------------------------------------------------

    def _recv_body(self) -> bytes:
        """Bytes while a body arrives; ``ClientGone`` on EOF or timeout."""
        data = self._transport.recv(self.settings.read_timeout)
        if not data:
            raise ClientGone("closed mid-body")
        return data

    def take_head(self) -> bytes | None:
        """The next request's head if it has arrived whole (see ``RequestBuffer``)."""
        return self._buffer.take_head()

    @property
    def has_partial_request(self) -> bool:
        """Whether bytes of a request that has not arrived whole are buffered,
        or, on the HTTPS port, the TLS handshake is not over: either way the
        client gets the read timeout, not the idle one."""
        return bool(self._buffer) or self._transport.handshaking

    def receive_ready(self) -> bool:
        """Take what the client sent; False when it closed, reset or spoke TLS.

        For a socket the event loop saw readable, which answers at once.
        """
        data = self._transport.recv_now()
        if data is None:
            return False
        return not data or self._received(data)  # b"": TLS under way, or nothing

    def _received(self, data: bytes) -> bool:
        if not data:
            return False
        if not self._buffer and starts_with_tls(data):
            log.log_tls_attempt(self.sock)
            return False
        self._buffer.feed(data)
        return True

    def _read_head(self) -> bytes | None:
        """The next request's head, or None when the client is done with us."""
        while True:
            head = self.take_head()
            if head is not None:
                return head
            buffer = self._buffer
            if self.has_partial_request:  # TLS handshakes included
                timeout = self.settings.read_timeout
            else:
                timeout = self._idle_wait()
                if timeout <= 0:
                    return None  # the drain is over: close
            try:
                data = self._transport.recv(timeout)
            except ClientGone:
                if buffer:
                    raise ProtocolError(408, "Request Timeout") from None
                return None
            if not self._received(data):
                return None

    def _idle_wait(self) -> float:
        """How long to wait for the next request (``StopClock.idle_wait``)."""
        return self.settings.stop.idle_wait(self.settings.idle_timeout)

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
        self._send_error(error, self._buffer.first_line(), 0.0)

    def _answer(self, head: bytes) -> bool:
        started = time.perf_counter()
        request_line = first_line(head)
        try:
            request, conn = parse_head(head)
        except ProtocolError as error:
            self._send_error(error, request_line, started)
            return False
        if self._transport.plain_on_tls_port:
            self._send_redirect(request, request_line, started)
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
                reader.receive(self._buffer.take_all())
            if conn.they_are_waiting_for_100_continue:
                self._transport.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
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
        self._buffer.feed(conn.trailing_data[0])
        return True

    def _may_keep_alive(self, request: RequestHead) -> bool:
        """Persistent unless the client, the server mode or a stop says no."""
        return self.keeps_alive() and keep_alive_asked(request)

    def _send_redirect(
        self, request: RequestHead, request_line: str, started: float
    ) -> None:
        """Plain HTTP on the HTTPS port: 308 to the same URL in https."""
        environ = self.settings.base_environ
        default_host = f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}"
        try:
            self._transport.sendall(redirect_to_https(request, default_host))
        except ClientGone:
            return
        # "-" for the size, as for the other answers the server makes itself.
        log.log_request(
            request_line, 308, None, time.perf_counter() - started, self.sock
        )

    def _send_error(
        self, error: ProtocolError, request_line: str, started: float
    ) -> None:
        """Answer a request the server rejects itself, then close; without the
        body when the request line, however malformed, asks for HEAD."""
        if self._transport.handshaking:
            return  # no HTTP yet: a TLS client that stalled in its handshake
        log.log_protocol_error(error.status, error.reason, self.sock)
        try:
            self._transport.sendall(error_response(error, request_line))
        except ClientGone:
            return
        duration = time.perf_counter() - started if started else 0.0
        log.log_request(request_line, error.status, None, duration, self.sock)

    # --- writing --------------------------------------------------------------

    def keeps_alive(self) -> bool:
        """Whether the server may keep the connection for another request: not
        once it stops. Asked again when the response head is written, so a
        response that began before a stop still says ``Connection: close``."""
        return self.settings.keep_alive and not (
            self._aborted or self.settings.stop.stopping
        )

    def send(self, parts: Iterable[bytes | FileSpan]) -> None:
        """Write the response's parts (``Transport.send``)."""
        self._transport.send(parts)


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

"""One client connection: read requests, answer them, keep alive, time out.

Over 350 lines: this is the threaded and serial modes' driver around the
sans-I/O core (core.py, request.py, body.py): every read and write of a
connection, with its timeouts, the drain's deadline and TLS (tls.py), is
here, in the order a request goes through them.
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
from runserver_plus.server.sockets import set_io_timeout
from runserver_plus.server.state import StopClock
from runserver_plus.server.tls import (
    HANDSHAKE_RECORD,
    TLSLayer,
    redirect_to_https,
)
from runserver_plus.server.wsgi import WSGIApp, WSGIEnviron, build_environ

#: Unread request body we still read to keep a keep-alive connection in sync.
MAX_DRAIN = 1024 * 1024  # bytes
#: Largest piece handed to one sendall(), so a send timeout measures progress.
MAX_SEND = 1024 * 1024  # bytes
RECV_SIZE = 65536  # bytes
#: recv() flag for a read that must not wait (the event loop's); 0 where the
#: platform has none, as on Windows: the loop reads only readable sockets.
_DONT_WAIT = getattr(socket, "MSG_DONTWAIT", 0)


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
        #: On the HTTPS port: whether the first bytes are still to decide
        #: between TLS and plain HTTP (which is only redirected).
        self._sorting = settings.tls is not None
        self._tls: TLSLayer | None = None
        self._redirect = False
        #: The receive timeout in force. The send timeout never changes: it
        #: is set once, as each change costs system calls.
        self._timeout: float | None = None
        set_io_timeout(sock, settings.read_timeout, recv=False)

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
        if self._tls is not None and not self._aborted:
            # TLS's own end of stream first: without it, a response whose end
            # is the close reads as truncated (curl and OpenSSL 3 say so).
            with contextlib.suppress(OSError, ClientGone):
                self._send_raw(self._tls.close_notify())
        self.settings.lingerer.close(self.sock)

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
        while True:
            try:
                raw = self.sock.recv(RECV_SIZE)
            except (BlockingIOError, TimeoutError) as error:
                raise ClientGone("timed out") from error
            data = self._take_in(raw)
            if data is None:
                return b""  # the client closed, or its TLS failed
            if data or not raw:
                return data
            # TLS: part of the handshake or of a record; read on.

    def _take_in(self, raw: bytes) -> bytes | None:
        """The request bytes in what the socket gave: ``raw`` itself in plain
        HTTP; decrypted on a TLS connection (``b""`` while the handshake goes
        on; None when the client closed TLS or it failed)."""
        if self._sorting and raw:
            self._sorting = False
            if raw[0] == HANDSHAKE_RECORD:
                assert self.settings.tls is not None
                self._tls = TLSLayer(self.settings.tls)
            else:
                self._redirect = True
        tls = self._tls
        if tls is None:
            return raw
        try:
            data = tls.receive(raw)
        except ssl.SSLError:
            data = None  # a client that refused our certificate, or noise
        reply = tls.outgoing()
        if reply:
            try:
                self._send_raw(reply)
            except ClientWentAway:
                return None
        return data

    def _recv_body(self) -> bytes:
        """Bytes while a body arrives; ``ClientGone`` on EOF or timeout."""
        data = self._recv(self.settings.read_timeout)
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
        return bool(self._buffer) or self._handshaking

    @property
    def _handshaking(self) -> bool:
        return self._sorting or (self._tls is not None and not self._tls.handshaken)

    def receive_ready(self) -> bool:
        """Take what the client sent; False when it closed, reset or spoke TLS.

        For a socket the event loop saw readable, which answers at once.
        """
        try:
            raw = self.sock.recv(RECV_SIZE, _DONT_WAIT)
        except BlockingIOError:
            return True  # a spurious wake-up: nothing to read after all
        except OSError:
            return False  # reset by the client
        data = self._take_in(raw)
        if data is None:
            return False
        if raw and not data:  # TLS: the handshake goes on, a record half here
            return True
        return self._received(data)

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
                data = self._recv(timeout)
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
        if self._redirect:
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
            self._sendall(redirect_to_https(request, default_host))
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
        if self._handshaking:
            return  # no HTTP yet: a TLS client that stalled in its handshake
        log.log_protocol_error(error.status, error.reason, self.sock)
        try:
            self._sendall(error_response(error, request_line))
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
        """Write the parts in order, files with ``sendfile``; one write for the
        bytes between files. ``ClientWentAway`` when the client is gone."""
        pending: list[bytes] = []
        for part in parts:
            if isinstance(part, FileSpan):
                if not part.count:
                    continue
                self._sendall(b"".join(pending))
                pending = []
                if self._tls is not None:
                    self._send_file_through_tls(part)
                    continue
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

    def _send_file_through_tls(self, part: FileSpan) -> None:
        """``sendfile`` cannot encrypt: read the file and write it in pieces."""
        part.file.seek(part.offset)
        left = part.count
        while left:
            piece = part.file.read(min(left, MAX_SEND))
            if not piece:
                raise ClientWentAway("the file is shorter than announced")
            self._sendall(piece)
            left -= len(piece)

    def _sendall(self, data: bytes) -> None:
        if self._tls is not None:
            data = self._tls.encrypt(data) if data else b""
        self._send_raw(data)

    def _send_raw(self, data: bytes) -> None:
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

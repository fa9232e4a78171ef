"""One client connection: h11 framing, running the app, writing the responses."""

from __future__ import annotations

import contextlib
import dataclasses
import http
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from email.utils import formatdate
from typing import IO, Any

import h11

from runserver_plus import output
from runserver_plus.server.wsgi import (
    ExcInfo,
    FileWrapper,
    WSGIApp,
    WSGIEnviron,
    build_environ,
    parse_status,
    response_headers,
)

# Limits, with the statuses RFC 9112 and RFC 6585 give them.
MAX_REQUEST_LINE = 65536  # bytes; longer -> 414, as Django's server
MAX_HEAD = 256 * 1024  # bytes of request line + headers; more -> 431
MAX_HEADERS = 100  # header lines; more -> 431, as Django's server
#: Unread request body we still read to keep a keep-alive connection in sync.
MAX_DRAIN = 1024 * 1024  # bytes
#: Chunked request bodies larger than this go to a temporary file.
SPOOL_IN_MEMORY = 1024 * 1024  # bytes
#: Largest piece handed to one sendall(), so a send timeout measures progress.
MAX_SEND = 1024 * 1024  # bytes
RECV_SIZE = 65536  # bytes

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_OBS_FOLD = re.compile(rb"(?:^|\n)[ \t]")
_HTTP_VERSION = re.compile(rb"HTTP/([0-9]+)\.[0-9]+")
_NO_BODY_STATUSES = frozenset({204, 304})

_APP_ERROR_BODY = b"A server error occurred.  Please contact the administrator."


class ClientGone(Exception):
    """The client closed or reset the connection, or stopped sending in time."""


class ClientWentAway(ClientGone):
    """Writing to the client failed: it left while we were answering."""


class ProtocolError(Exception):
    """A request the server answers itself with an error status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class ConnectionSettings:
    """What a connection needs from the server: limits and environ constants."""

    base_environ: WSGIEnviron
    idle_timeout: float  # s, between requests on a kept-alive connection
    read_timeout: float  # s, per read while a request is arriving or sent
    keep_alive: bool  # False with --nothreading: one request per connection


_date_cache: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The current ``Date`` header value, formatted at most once a second."""
    global _date_cache  # noqa: PLW0603 - a per-second cache shared by all threads
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode("ascii"))
    return _date_cache[1]


class _FileSpan:
    """A ``Data`` payload h11 passes through untouched, for ``sendfile``."""

    def __init__(self, file: IO[bytes], offset: int, count: int) -> None:
        self.file = file
        self.offset = offset
        self.count = count

    def __len__(self) -> int:
        return self.count


class RequestBody:
    """``wsgi.input`` for a Content-Length body, read from the socket on demand."""

    def __init__(self, connection: Connection, conn: h11.Connection) -> None:
        self._connection = connection
        self._conn = conn
        self._buffer = b""
        self._done = False
        self.broken = False

    def _next_chunk(self) -> bytes:
        while not self._done:
            event = self._conn.next_event()
            if isinstance(event, h11.Data):
                return bytes(event.data)
            if isinstance(event, h11.EndOfMessage):
                self._done = True
            elif event is h11.NEED_DATA:
                try:
                    self._conn.receive_data(self._connection.recv_body())
                except ClientGone:
                    # As a short read, like Django's server: the app sees
                    # less than announced and the connection is not reused.
                    self._done = self.broken = True
            else:  # pragma: no cover - h11 yields nothing else for a body
                raise ClientGone(f"unexpected {event!r}")
        return b""

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._buffer]
            while chunk := self._next_chunk():
                parts.append(chunk)
            self._buffer = b""
            return b"".join(parts)
        while len(self._buffer) < size and (chunk := self._next_chunk()):
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        limit = None if size is None or size < 0 else size
        while b"\n" not in self._buffer and (
            limit is None or len(self._buffer) < limit
        ):
            chunk = self._next_chunk()
            if not chunk:
                break
            self._buffer += chunk
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        if limit is not None:
            end = min(end, limit)
        line, self._buffer = self._buffer[:end], self._buffer[end:]
        return line

    def close(self) -> None:
        """Nothing to release: the connection owns the socket."""

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterable[bytes]:
        return iter(self.readline, b"")

    def drain(self, limit: int) -> bool:
        """Read and drop the rest of the body; False if more than ``limit`` bytes."""
        seen = len(self._buffer)
        self._buffer = b""
        while seen <= limit and (chunk := self._next_chunk()):
            seen += len(chunk)
        return self._done and not self.broken


def _decode_chunked(body: RequestBody) -> tuple[IO[bytes], int | None]:
    """Read a whole chunked body so the app sees a plain one with a length."""
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - closed with the request
    try:
        total = 0
        while chunk := body.read(RECV_SIZE):
            spool.write(chunk)
            total += len(chunk)
        if body.broken:
            # The length is ours to announce, so a cut body would look whole.
            raise ClientGone("chunked body cut short")
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool, total


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

    # --- life cycle, seen from the server ---------------------------------

    def close_if_idle(self) -> None:
        """Ask the connection to stop; wake it at once if it waits for a request."""
        with self._lock:
            self._closing = True
            if self._idle:
                _shutdown(self.sock)

    def abort(self) -> None:
        """Break off whatever the connection is doing (the drain bound is over)."""
        with self._lock:
            self._closing = True
        _shutdown(self.sock)

    def serve(self) -> None:
        try:
            while self._serve_one():
                pass
        except ClientWentAway:
            output.log_broken_pipe(self.peer)
        except ClientGone:
            pass
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            output.log_broken_pipe(self.peer)
        except OSError:
            pass  # the socket was shut down by abort(), or timed out
        finally:
            self.sock.close()

    # --- reading ------------------------------------------------------------

    def _recv(self, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(RECV_SIZE)
        except TimeoutError as error:
            raise ClientGone("timed out") from error

    def recv_body(self) -> bytes:
        """Bytes for h11 while a body arrives; ``ClientGone`` on EOF or timeout."""
        data = self._recv(self.settings.read_timeout)
        if not data:
            raise ClientGone("closed mid-body")
        return data

    def _read_head(self) -> bytes | None:
        """The next request's head, or None when the client is done with us."""
        buffer = self._buffer
        while True:
            while buffer[:2] == b"\r\n" or buffer[:1] == b"\n":
                del buffer[: 2 if buffer[:1] == b"\r" else 1]  # RFC 9112 §2.2
            match = _HEAD_END.search(buffer)
            if match:
                head = bytes(buffer[: match.end()])
                del buffer[: match.end()]
                return head
            if buffer.find(b"\n") < 0 and len(buffer) > MAX_REQUEST_LINE:
                raise ProtocolError(414, "Request-URI Too Long")
            if len(buffer) > MAX_HEAD:
                raise ProtocolError(431, "Request header fields too large")
            with self._lock:
                if self._closing and not buffer:
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
            if not data:
                return None
            if not buffer and data.startswith(output.TLS_HANDSHAKE_PREFIX):
                output.log_tls_attempt(self.sock)
                return None
            buffer += data

    @staticmethod
    def _parse(head: bytes) -> tuple[h11.Request, h11.Connection]:
        line_end = head.find(b"\n")
        request_line = head[:line_end].rstrip(b"\r")
        if len(request_line) > MAX_REQUEST_LINE:
            raise ProtocolError(414, "Request-URI Too Long")
        parts = request_line.split(b" ")
        version = _HTTP_VERSION.fullmatch(parts[2]) if len(parts) == 3 else None
        if version is not None and version[1] != b"1":
            # RFC 9110 §2.5: only another major version is unsupported (a
            # 1.x is served as 1.1). Worded as Django's server words it.
            number = parts[2][5:].decode("ascii")
            raise ProtocolError(505, f"Invalid HTTP version ({number})")
        fields = head[line_end + 1 :]
        if _OBS_FOLD.search(fields.rstrip(b"\r\n")):
            raise ProtocolError(400, "Obsolete line folding in a header")
        if fields.count(b"\n") - 1 > MAX_HEADERS:
            raise ProtocolError(431, "Too many headers")
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=len(head) + 1)
        conn.receive_data(head)
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as error:
            raise ProtocolError(error.error_status_hint, _reason(error)) from None
        if not isinstance(event, h11.Request):
            raise ProtocolError(400, "Bad request syntax")
        names = {name for name, _ in event.headers}
        if b"transfer-encoding" in names and b"content-length" in names:
            raise ProtocolError(400, "Content-Length with Transfer-Encoding")
        return event, conn

    # --- one request --------------------------------------------------------

    def _serve_one(self) -> bool:
        """Serve one request; True when the connection may carry another."""
        try:
            head = self._read_head()
        except ProtocolError as error:
            self._send_error(error, _first_line(bytes(self._buffer)), 0.0)
            return False
        if head is None:
            return False
        started = time.perf_counter()
        request_line = _first_line(head)
        try:
            request, conn = self._parse(head)
        except ProtocolError as error:
            self._send_error(error, request_line, started)
            return False
        if self._buffer:
            # Only when there is something: h11 takes b"" for the client
            # having closed the connection.
            conn.receive_data(bytes(self._buffer))
            self._buffer.clear()
        self.sock.settimeout(self.settings.read_timeout)
        if conn.they_are_waiting_for_100_continue:
            self.sock.sendall(
                conn.send(
                    h11.InformationalResponse(
                        status_code=100, headers=[], reason=b"Continue"
                    )
                )
            )
        reader = RequestBody(self, conn)
        chunked = any(name == b"transfer-encoding" for name, _ in request.headers)
        try:
            body, length = _decode_chunked(reader) if chunked else (reader, None)
        except h11.RemoteProtocolError as error:
            self._send_error(ProtocolError(400, _reason(error)), request_line, started)
            return False
        try:
            environ = build_environ(self.settings.base_environ, request, body, length)
            response = _Response(self, conn, request.method == b"HEAD")
            response.run(self.app, environ)
        finally:
            body.close()
        if not response.completed:
            return False  # the response could not be finished: close to show it
        if not environ.get("runserver_plus.quiet"):
            output.log_request(
                request_line,
                response.status,
                response.sent,
                time.perf_counter() - started,
                self.sock,
            )
        if conn.our_state is not h11.DONE:
            return False
        try:
            in_sync = reader.drain(MAX_DRAIN)
        except h11.RemoteProtocolError:
            return False
        if not in_sync or conn.their_state is not h11.DONE:
            return False
        self._buffer += conn.trailing_data[0]
        return True

    def wants_close(self) -> bool:
        return self._closing or not self.settings.keep_alive

    def _send_error(
        self, error: ProtocolError, request_line: str, started: float
    ) -> None:
        """Answer a request the server rejects itself, then close."""
        output.log_protocol_error(error.status, error.reason, self.sock)
        phrase = http.HTTPStatus(error.status).phrase
        body = f"{error.status} {phrase}\n\n{error.reason}\n".encode()
        head = (
            f"HTTP/1.1 {error.status} {phrase}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n"
        ).encode("ascii")
        head += b"Date: " + http_date() + b"\r\n\r\n"
        try:
            self.sock.settimeout(self.settings.read_timeout)
            self.sock.sendall(head + body)
        except OSError:
            return
        duration = time.perf_counter() - started if started else 0.0
        output.log_request(request_line, error.status, None, duration, self.sock)

    def send(self, parts: Iterable[Any]) -> None:
        """Write h11 output; ``_FileSpan`` pieces go out with ``sendfile``."""
        try:
            self._send(parts)
        except OSError as error:
            raise ClientWentAway(str(error)) from error

    def _send(self, parts: Iterable[Any]) -> None:
        pending: list[bytes] = []
        for part in parts:
            if isinstance(part, _FileSpan):
                if not part.count:
                    continue
                self._sendall(b"".join(pending))
                pending = []
                sent = self.sock.sendfile(part.file, part.offset, part.count)
                if sent != part.count:
                    raise ClientGone("file shorter than announced")
            else:
                pending.append(part)
        self._sendall(b"".join(pending))

    def _sendall(self, data: bytes) -> None:
        if len(data) <= MAX_SEND:
            if data:
                self.sock.sendall(data)
            return
        view = memoryview(data)
        for start in range(0, len(view), MAX_SEND):
            self.sock.sendall(view[start : start + MAX_SEND])


class _Response:
    """Runs the WSGI app for one request and writes what it returns."""

    def __init__(
        self, connection: Connection, conn: h11.Connection, head: bool
    ) -> None:
        self.connection = connection
        self.conn = conn
        self.head = head
        self.status = 0
        self.sent = 0
        self.completed = False
        self._reason = b""
        self._headers: list[tuple[str, str]] | None = None
        self._head_bytes: bytes | None = None  # encoded, not yet written
        self._head_sent = False
        self._no_body = False

    # WSGI callables --------------------------------------------------------

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self._head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self._headers is not None:
            raise AssertionError("start_response() called twice without exc_info")
        self.status, self._reason = parse_status(status)
        self._headers = list(headers)
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy ``write()`` callable of PEP 3333."""
        self._body([data])

    # Running ---------------------------------------------------------------

    def run(self, app: WSGIApp, environ: WSGIEnviron) -> None:
        try:
            result = app(environ, self.start_response)
        except Exception:  # noqa: BLE001 - any app error becomes a 500
            output.log_app_exception(self._line(environ))
            self._error_500()
            return
        try:
            self._send_result(result, environ)
        except ClientGone:
            raise
        except Exception:  # noqa: BLE001 - a failure midway must not kill the server
            output.log_app_exception(self._line(environ))
            if not self._head_sent:
                self._error_500()
            # else: not completed, so the connection closes and the client
            # sees a short or unterminated body instead of a silent truncation
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    @staticmethod
    def _line(environ: WSGIEnviron) -> str:
        query = environ["QUERY_STRING"]
        return f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}" + (
            f"?{query}" if query else ""
        )

    def _send_result(self, result: Iterable[bytes], environ: WSGIEnviron) -> None:
        if isinstance(result, FileWrapper) and not self.head:
            span = result.sendfile_span()
            if span is not None:
                self._send_file(result, *span)
                return
        if (
            isinstance(result, (list, tuple))
            and len(result) == 1
            and self._headers is not None
            and not any(name.lower() == "content-length" for name, _ in self._headers)
        ):
            # As wsgiref: a one-piece body has a known length, so the
            # connection can be kept alive.
            self._headers.append(("Content-Length", str(len(result[0]))))
        self._body(result)
        self._finish()

    def _prepare_head(self) -> None:
        if self._headers is None:
            raise AssertionError("the application did not call start_response()")
        headers, app_close = response_headers(self._headers, http_date())
        if app_close or self.connection.wants_close():
            headers.append((b"Connection", b"close"))
        self._no_body = (
            self.head or self.status in _NO_BODY_STATUSES or self.status < 200
        )
        if self.status < 200:
            raise AssertionError(f"WSGI applications cannot send status {self.status}")
        event = h11.Response(
            status_code=self.status, headers=headers, reason=self._reason
        )
        self._head_bytes = self.conn.send(event)

    def _body(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            if self._head_bytes is None and not self._head_sent:
                self._prepare_head()
            if not chunk or self._no_body:
                continue
            data = self.conn.send(h11.Data(data=chunk))
            if not self._head_sent:
                data = self._take_head() + data
            self.connection.send([data])
            self.sent += len(chunk)

    def _take_head(self) -> bytes:
        head, self._head_bytes, self._head_sent = self._head_bytes or b"", None, True
        return head

    def _finish(self) -> None:
        if self._head_bytes is None and not self._head_sent:
            self._prepare_head()
        tail = self.conn.send(h11.EndOfMessage())
        if not self._head_sent:
            tail = self._take_head() + tail
        self.connection.send([tail])
        self.completed = True

    def _send_file(self, wrapper: FileWrapper, offset: int, length: int | None) -> None:
        if self._headers is None:
            raise AssertionError("the application did not call start_response()")
        declared = next(
            (int(v) for n, v in self._headers if n.lower() == "content-length"), None
        )
        if length is None:
            length = declared if declared is not None else _remaining(wrapper, offset)
        if declared is None:
            self._headers.append(("Content-Length", str(length)))
        self._prepare_head()
        if self._no_body:
            self._finish()
            return
        # h11 hands a payload with a __len__ back untouched (its documented
        # way to do zero-copy sends), framed for content-length or chunked.
        span = _FileSpan(wrapper.filelike, offset, length)
        parts = self.conn.send_with_data_passthrough(h11.Data(data=span))  # type: ignore[arg-type]
        self.connection.send([self._take_head(), *(parts or ())])
        self.sent += length
        self._finish()

    def _error_500(self) -> None:
        """Answer 500 for an app that failed before any byte went out.

        Written by hand with ``Connection: close``: h11 may already hold an
        encoded head it cannot take back, and a crashed app may have left the
        request body half read.
        """
        self.status, self.sent = 500, len(_APP_ERROR_BODY)
        head = (
            "HTTP/1.1 500 Internal Server Error\r\n"
            "Content-Type: text/plain\r\n"
            f"Content-Length: {len(_APP_ERROR_BODY)}\r\n"
            "Connection: close\r\n"
        ).encode("ascii")
        self.connection.send(
            [
                head,
                b"Date: ",
                http_date(),
                b"\r\n\r\n",
                b"" if self.head else _APP_ERROR_BODY,
            ]
        )
        if self.head:
            self.sent = 0
        self.completed = True


_H11_REPR = re.compile(r": bytearray\(b.*\)$", re.DOTALL)


def _reason(error: h11.RemoteProtocolError) -> str:
    """h11's message without the raw bytes it quotes (the log shows the line)."""
    return _H11_REPR.sub("", str(error))


#: Longest request line shown in the log (a 414 can be 64 KiB long).
_LOGGED_LINE = 1000  # characters


def _first_line(data: bytes) -> str:
    """The request line as the log shows it: raw bytes read as latin-1."""
    line = data.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
    return line if len(line) <= _LOGGED_LINE else line[:_LOGGED_LINE] + "..."


def _remaining(wrapper: FileWrapper, offset: int) -> int:
    import os  # noqa: PLC0415

    return max(0, os.fstat(wrapper.filelike.fileno()).st_size - offset)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the client or by us
        sock.shutdown(socket.SHUT_RDWR)

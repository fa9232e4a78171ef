"""One client connection under asyncio: read heads, run a cycle each, keep alive.

Over 350 lines: this is the asyncio driver's counterpart of connection.py
around the same sans-I/O core (core.py, request.py, body.py): every read and
write of a connection, with its timeouts, the drain's deadline and the
lingering close, in the order a request goes through them; the response
itself is asgi_cycle.py's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import IO, Any, cast

import h11

from runserver_plus.server import log
from runserver_plus.server.asgi_cycle import HttpCycle
from runserver_plus.server.asgi_scope import (
    QUIET,
    ASGIApp,
    address,
    http_scope,
)
from runserver_plus.server.asgi_tls import close_tls
from runserver_plus.server.body import READ_SIZE, SPOOL_IN_MEMORY, ChunkSizeLines
from runserver_plus.server.core import (
    error_response,
    first_line,
    keep_alive_asked,
    starts_with_tls,
    take_head,
)
from runserver_plus.server.errors import ClientGone, ProtocolError
from runserver_plus.server.linger import Lingerer
from runserver_plus.server.request import (
    RequestHead,
    h11_reason,
    is_websocket_upgrade,
    parse_head,
)
from runserver_plus.server.state import StopClock
from runserver_plus.server.tls import redirect_to_https

#: Unread request body we still read to keep a keep-alive connection in sync.
MAX_DRAIN = 1024 * 1024  # bytes
#: Above this many bytes waiting to be sent, a write waits for the client.
WRITE_HIGH_WATER = 256 * 1024  # bytes

#: Takes over a connection whose request asks for a WebSocket; returns when done.
UpgradeHandler = Callable[["HttpConnection", bytes, RequestHead], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class HttpSettings:
    """What every connection needs from the server."""

    app: ASGIApp
    idle_timeout: float  # s, between requests on a kept-alive connection
    read_timeout: float  # s, per read while a request arrives, per write
    #: What the application's lifespan startup stored, copied into each scope.
    state: dict[str, Any]
    #: Serves WebSocket upgrades; None answers them as plain HTTP requests.
    websocket: UpgradeHandler | None = None
    #: The server's stop: until when open connections may wait for a request.
    stop: StopClock = dataclasses.field(default_factory=StopClock)
    #: Closes connections without resetting what is in flight.
    lingerer: Lingerer = dataclasses.field(default_factory=Lingerer)
    #: On the HTTPS port, where a plain-HTTP request is redirected when it has
    #: no Host (``host:port``); None on a plain-HTTP port.
    https_authority: str | None = None


class HttpConnection:
    """Serve one accepted connection's requests until it closes or the server stops.

    The drain is the threaded driver's (server.py's ``Server``): once the
    server stops, every response says ``Connection: close``; a connection
    waiting for its next request waits until the drain's deadline, not
    longer, and one that sends a request meanwhile gets it answered; every
    close is a lingering one (``Lingerer``).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        settings: HttpSettings,
    ) -> None:
        self.reader = reader
        self.writer = writer
        # Read and write: the transport of a stream connection is both.
        self.transport = cast("asyncio.Transport", writer.transport)
        self.settings = settings
        self.sock = writer.get_extra_info("socket")
        self.server = address(writer.get_extra_info("sockname"))
        self.client = address(writer.get_extra_info("peername"))
        #: Whether the connection is TLS (asyncio's SSL transport under the streams).
        self.secure = writer.get_extra_info("ssl_object") is not None
        self.buffer = bytearray()
        self.idle = True  # waiting for a request, nothing of it buffered
        self.served = 0
        self._aborted = False
        self._timed_out = False
        #: Ends the read in progress (``read()``'s timeout).
        self._timer: asyncio.TimerHandle | None = None
        #: Called when the server stops, for a connection that upgraded.
        self.on_stop: Callable[[], None] | None = None

    # --- life cycle, seen from the server -----------------------------------------

    def stop(self) -> None:
        """The server stops (its ``StopClock`` says until when): an upgraded
        connection is told; one waiting for a request waits until the drain's
        deadline at most."""
        if self.on_stop is not None:
            self.on_stop()
        elif self.idle and self._timer is not None:
            self._timer.cancel()
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(0.0, self._idle_wait()), self._time_out)

    def abort(self) -> None:
        """Break off whatever the connection does (the drain bound is over)."""
        self._aborted = True
        self.transport.abort()

    def keeps_alive(self) -> bool:
        """Whether the connection may carry another request: not once the
        server stops. Asked again when a response head is built, so a
        response that began before a stop still says ``Connection: close``."""
        return not (self._aborted or self.settings.stop.stopping)

    async def serve(self) -> None:
        try:
            while True:
                try:
                    head = await self._read_head()
                except ProtocolError as error:
                    await self._send_error(error, first_line(bytes(self.buffer)), 0.0)
                    break
                if head is None or not await self._answer(head):
                    break
        except (OSError, ClientGone) as error:
            if isinstance(error, (BrokenPipeError, ConnectionResetError)):
                log.log_broken_pipe(self.client)
        finally:
            await self._close()

    async def _close(self) -> None:
        """Close gracefully: what was written goes out, then the socket is
        closed by the ``Lingerer``, which sends a FIN and reads away what the
        client still sends (a plain close would reset the connection and
        could destroy the last response before the client read it). TLS
        closes with close_notify instead (``close_tls``)."""
        transport = self.transport
        if transport.is_closing():
            return  # aborted, or reset by the client
        if self.secure:
            # TLS ends with close_notify, which asyncio's TLS transport sends
            # and waits for (bounded there); no lingering close under it.
            await close_tls(self.writer)
            return
        transport.pause_reading()
        try:
            transport.set_write_buffer_limits(high=0)  # drain() waits for all
            await asyncio.wait_for(self.writer.drain(), self.settings.read_timeout)
            sock = self.sock.dup()
        except (OSError, asyncio.TimeoutError):
            transport.abort()
            return
        # The transport lets its descriptor go; the duplicate holds the
        # connection open until the lingering close ends it.
        transport.abort()
        self.settings.lingerer.close(sock)

    # --- I/O ----------------------------------------------------------------------

    async def read(self, timeout: float) -> bytes:
        """The next bytes from the client; b"" when it closed or ``timeout`` passed
        (then ``timed_out`` is set). A timer, not ``wait_for``: no task per read."""
        self._timer = asyncio.get_running_loop().call_later(timeout, self._time_out)
        try:
            return await self.reader.read(READ_SIZE)
        except OSError:
            return b""  # reset by the client
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _time_out(self) -> None:
        self._timed_out = True
        # What arrives from now on stays in the socket for the lingering
        # close to discard: a reader at its end must not be fed.
        self.transport.pause_reading()
        self.reader.feed_eof()

    async def read_body(self) -> bytes:
        """Bytes of a request body; b"" when the client closed or stalled."""
        return await self.read(self.settings.read_timeout)

    async def write(self, data: bytes) -> None:
        """Write ``data``; wait for the client when much is unsent. ``OSError``
        when the client is gone or reads nothing for the read timeout."""
        if self.transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        if data:
            self.writer.write(data)
        if self.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            try:
                await asyncio.wait_for(self.writer.drain(), self.settings.read_timeout)
            except asyncio.TimeoutError:
                self.transport.abort()
                raise ConnectionResetError("the client stopped reading") from None

    async def _read_head(self) -> bytes | None:
        """The next request's head, or None when the client is done with us."""
        while True:
            head = take_head(self.buffer)
            if head is not None:
                return head
            if self.buffer:
                timeout = self.settings.read_timeout
            else:
                timeout = self._idle_wait()
                if timeout <= 0:
                    return None  # the drain is over: close
            self.idle = not self.buffer
            try:
                data = await self.read(timeout)
            finally:
                self.idle = False
            if not data:
                if self._timed_out and self.buffer:
                    raise ProtocolError(408, "Request Timeout")
                return None
            if not self.buffer and starts_with_tls(data):
                log.log_tls_attempt(self.sock)
                return None
            self.buffer += data

    # --- one request --------------------------------------------------------------

    async def _answer(self, head: bytes) -> bool:
        """Serve the request with this head; True when the connection may carry
        another."""
        started = time.perf_counter()
        request_line = first_line(head)
        try:
            request, body = parse_head(head)
        except ProtocolError as error:
            await self._send_error(error, request_line, started)
            return False
        authority = self.settings.https_authority
        if authority is not None and not self.secure:
            await self._send_redirect(
                redirect_to_https(request, authority), request_line, started
            )
            return False
        if self.settings.websocket is not None and is_websocket_upgrade(request):
            await self.settings.websocket(self, head, request)
            return False
        spool: IO[bytes] | None = None
        length = None
        if body is not None:
            if self.buffer:
                # Only when there is something: h11 takes b"" for a close.
                body.receive_data(bytes(self.buffer))
                self.buffer.clear()
            if any(name == b"transfer-encoding" for name, _ in request.headers):
                try:
                    spool, length = await self._decode_chunked(body)
                except h11.RemoteProtocolError as error:
                    error400 = ProtocolError(400, h11_reason(error))
                    await self._send_error(error400, request_line, started)
                    return False
                except ProtocolError as error:
                    await self._send_error(error, request_line, started)
                    return False
                if spool is None:
                    return False  # the client left mid-body
        cycle = HttpCycle(
            self,
            request_line=request_line,
            method=request.method,
            http11=request.http_version != b"1.0",
            keep_alive=self._may_keep_alive(request),
            body=None if spool is not None else body,
            spool=spool,
        )
        scope = http_scope(
            request,
            server=self.server,
            client=self.client,
            content_length=length,
            scheme="https" if self.secure else "http",
            state=self.settings.state,
        )
        await cycle.run(self.settings.app, scope)
        if not cycle.complete:
            return False
        if not scope.get(QUIET):
            duration = time.perf_counter() - started
            log.log_request(
                request_line,
                cycle.status,
                cycle.sent,
                duration,
                self.sock,
                note=scope.get(log.ACCESS_NOTE),
            )
        self.served += 1
        if not cycle.keep_alive:
            return False
        if body is not None and spool is None and not cycle.body_done:
            return await self._skip_body(cycle)
        return True

    async def _decode_chunked(
        self, body: h11.Connection
    ) -> tuple[IO[bytes] | None, int]:
        """Read a whole chunked body into a spool; (None, 0) if the client left."""
        size_lines = ChunkSizeLines()
        size_lines.received(body.trailing_data[0])
        spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - the cycle closes it
        total = 0
        try:
            if body.they_are_waiting_for_100_continue:
                await self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            while True:
                event = body.next_event()
                if isinstance(event, (h11.Data, h11.EndOfMessage)):
                    size_lines.consumed(event)
                if isinstance(event, h11.Data):
                    spool.write(event.data)
                    total += len(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self.buffer += body.trailing_data[0]
                    break
                else:
                    data = await self.read_body()
                    if not data:
                        spool.close()
                        return None, 0
                    body.receive_data(data)
                    size_lines.received(data)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool, total

    async def _skip_body(self, cycle: HttpCycle) -> bool:
        """Read and drop what the application left of the body (up to
        ``MAX_DRAIN``), so the next request is found; False if that fails."""
        seen = 0
        while not cycle.body_done and seen <= MAX_DRAIN:
            message = await cycle.receive()
            if message["type"] != "http.request":
                return False
            seen += len(message["body"])
        return cycle.body_done and not cycle.disconnected

    def _may_keep_alive(self, request: RequestHead) -> bool:
        """Persistent unless the client or a stop says no."""
        return self.keeps_alive() and keep_alive_asked(request)

    def _idle_wait(self) -> float:
        """How long to wait for the next request (``StopClock.idle_wait``)."""
        return self.settings.stop.idle_wait(self.settings.idle_timeout)

    async def _send_redirect(
        self, response: bytes, request_line: str, started: float
    ) -> None:
        """Plain HTTP on the HTTPS port: the 308 to https, then close."""
        try:
            await self.write(response)
        except OSError:
            return
        # "-" for the size, as for the other answers the server makes itself.
        duration = time.perf_counter() - started
        log.log_request(request_line, 308, None, duration, self.sock)

    async def _send_error(
        self, error: ProtocolError, request_line: str, started: float
    ) -> None:
        """Answer a request the server rejects itself, then close; without the
        body when the request line, however malformed, asks for HEAD."""
        log.log_protocol_error(error.status, error.reason, self.sock)
        try:
            await self.write(error_response(error, request_line))
        except OSError:
            return
        duration = time.perf_counter() - started if started else 0.0
        log.log_request(request_line, error.status, None, duration, self.sock)

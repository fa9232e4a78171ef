"""One HTTP request under ASGI: ``receive`` the body, ``send`` the framed response."""

from __future__ import annotations

import asyncio
import contextlib
import http
from typing import IO, Any, Protocol

import h11

from runserver_plus.server import log
from runserver_plus.server.asgi_scope import (
    ASGIApp,
    ClientDisconnected,
    Message,
    Scope,
)
from runserver_plus.server.body import READ_SIZE
from runserver_plus.server.request import MAX_HEAD
from runserver_plus.server.response import closing_response, frame
from runserver_plus.server.wsgi import response_headers


class ConnectionIO(Protocol):
    """What a cycle needs from its connection (asgi_http's ``HttpConnection``,
    passed down: this module does not import that one)."""

    reader: asyncio.StreamReader
    #: Bytes read past the request: the next, pipelined, request's.
    buffer: bytearray
    client: tuple[str, int] | None

    async def write(self, data: bytes) -> None:
        """Write ``data``; ``OSError`` when the client is gone."""

    async def read_body(self) -> bytes:
        """Bytes of the body; b"" when the client closed or stalled."""

    def keeps_alive(self) -> bool:
        """Whether the connection may carry another request (not once the
        server stops)."""


#: How long an application may go on streaming to a client that left without
#: reading ``http.disconnect`` before it is cancelled (Django < 5 never reads it).
DISCONNECT_GRACE = 0.5  # s

_NO_BODY_STATUSES = frozenset({204, 304})
_APP_ERROR_BODY = b"A server error occurred.  Please contact the administrator."
_CHUNKED_END = b"0\r\n\r\n"
_DISCONNECT: Message = {"type": "http.disconnect"}


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


class HttpCycle:
    """Runs the application for one request.

    The body reaches the application as it arrives (a chunked one was decoded
    into ``spool`` first, so the application sees its length). Once the body
    is read, or the response streams, the client is watched: when it leaves,
    ``receive()`` returns ``http.disconnect``, ``send()`` raises
    ``ClientDisconnected``, and an application that does not listen is
    cancelled after ``DISCONNECT_GRACE``. Framing is the threaded server's:
    a Content-Length given or found (one-message bodies), chunked otherwise for
    HTTP/1.1, close-delimited for HTTP/1.0; HEAD, 204 and 304 carry no body.
    """

    def __init__(
        self,
        connection: ConnectionIO,
        *,
        request_line: str,
        method: bytes,
        http11: bool,
        keep_alive: bool,
        body: h11.Connection | None,
        spool: IO[bytes] | None = None,
    ) -> None:
        self.connection = connection
        self.request_line = request_line
        self.head_request = method == b"HEAD"
        self.http11 = http11
        #: Whether the connection may carry another request afterwards.
        self.keep_alive = keep_alive
        self.status = 0
        self.sent = 0  # body bytes written
        self.complete = False
        self.disconnected = False
        self._body = body
        self._spool = spool
        self.body_done = False  # the application was given the whole body
        self._pending: Any = None  # an h11 event read ahead
        self._continue_sent = False
        self._started = False
        self._headers: Any = ()
        self._head_sent = False
        self._length: int | None = None
        self._chunked = False
        self._no_body = False
        self._ended = asyncio.Event()  # the client left, or the response is done
        self._watcher: asyncio.Task[None] | None = None
        self._heard = False  # the application received http.disconnect
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False

    # --- running ----------------------------------------------------------------

    async def run(self, app: ASGIApp, scope: Scope) -> None:
        self._task = asyncio.current_task()
        try:
            await app(scope, self.receive, self.send)
        except asyncio.CancelledError:
            if not self._cancelled:
                raise
            uncancel = getattr(self._task, "uncancel", None)  # Python >= 3.11
            if uncancel is not None:
                uncancel()
        except Exception:  # noqa: BLE001 - any app error becomes a 500
            if self.disconnected:
                log.log_broken_pipe(self.connection.client)
            else:
                log.log_app_exception(self.request_line)
            await self._failed()
        else:
            if not self._started:
                log.server_logger.error(
                    "%s: the application returned without starting a response.",
                    log.escape(self.request_line),
                )
                await self._failed()
            elif not self.complete:
                self.keep_alive = False  # an unterminated body shows the failure
        finally:
            if self._watcher is not None:
                self._watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watcher
            if self._spool is not None:
                self._spool.close()

    async def _failed(self) -> None:
        """500 if nothing went out yet; either way the connection closes."""
        self.keep_alive = False
        if self._head_sent or self.disconnected:
            return
        response = closing_response(
            500, "text/plain", _APP_ERROR_BODY, head=self.head_request
        )
        self.status, self._head_sent = 500, True
        self.sent = 0 if self.head_request else len(_APP_ERROR_BODY)
        with contextlib.suppress(OSError):
            await self.connection.write(response)
            self.complete = True

    # --- receive ------------------------------------------------------------------

    async def receive(self) -> Message:
        if not self.body_done:
            return await self._next_body()
        if not self.disconnected and not self.complete:
            self._watch()
            await self._ended.wait()
        self._heard = True
        return _DISCONNECT

    async def _next_body(self) -> Message:
        if self._spool is not None:
            data = self._spool.read(READ_SIZE)
            self.body_done = len(data) < READ_SIZE
            more = not self.body_done
            return {"type": "http.request", "body": data, "more_body": more}
        conn = self._body
        if conn is None:  # a request without a body
            self.body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if conn.they_are_waiting_for_100_continue and not self._continue_sent:
            self._continue_sent = True
            await self.connection.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while True:
            event = self._pending or conn.next_event()
            self._pending = None
            if isinstance(event, h11.Data):
                following = conn.next_event()
                if isinstance(following, h11.EndOfMessage):
                    self._end_of_body()
                else:
                    self._pending = following
                data = bytes(event.data)
                more = not self.body_done
                return {"type": "http.request", "body": data, "more_body": more}
            if isinstance(event, h11.EndOfMessage):
                self._end_of_body()
                return {"type": "http.request", "body": b"", "more_body": False}
            data = await self.connection.read_body()
            if not data:  # closed, reset or timed out mid-body
                self._client_left()
                self.body_done = True
                return _DISCONNECT
            conn.receive_data(data)

    def _end_of_body(self) -> None:
        assert self._body is not None
        self.body_done = True
        # What the client sent after the body: a pipelined request.
        self.connection.buffer += self._body.trailing_data[0]

    def _watch(self) -> None:
        """Read on from the client while the application runs, to see it leave."""
        if self._watcher is None and not self.disconnected:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_client())

    async def _watch_client(self) -> None:
        reader = self.connection.reader
        try:
            while len(self.connection.buffer) <= MAX_HEAD:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                self.connection.buffer += data  # a pipelined request
            else:
                return  # enough read ahead: the next request waits its turn
        except OSError:
            pass  # reset by the client: it left
        self._client_left()

    def _client_left(self) -> None:
        self.disconnected = True
        self.keep_alive = False
        self._ended.set()
        if not self.complete:
            loop = asyncio.get_running_loop()
            loop.call_later(DISCONNECT_GRACE, self._cancel_unheard)

    def _cancel_unheard(self) -> None:
        if self._heard or self.complete or self._task is None or self._task.done():
            return
        self._cancelled = True
        self._task.cancel()

    # --- send -----------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self._started:
                raise RuntimeError("http.response.start was sent twice")
            status = int(message["status"])
            if not 200 <= status <= 999:
                raise RuntimeError(f"ASGI applications cannot send status {status}")
            self._started = True
            self.status = status
            self._headers = message.get("headers", ())
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r} for HTTP")
        if not self._started:
            raise RuntimeError("http.response.body before http.response.start")
        if self.complete:
            raise RuntimeError("http.response.body after the response ended")
        if self.disconnected:
            raise ClientDisconnected("the client closed the connection")
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        parts = []
        first = not self._head_sent
        if first:
            parts.append(self._build_head(body, more=more))
        if body and not self._no_body:
            if self._length is not None and self.sent + len(body) > self._length:
                raise RuntimeError(
                    f"the response body is longer than its Content-Length "
                    f"({self._length})"
                )
            parts.append(b"%x\r\n%s\r\n" % (len(body), body) if self._chunked else body)
            self.sent += len(body)
        if not more:
            short = self._length is not None and self.sent < self._length
            if short and not self._no_body:
                raise RuntimeError(
                    f"the response body is shorter than its Content-Length "
                    f"({self._length})"
                )
            if self._chunked:
                parts.append(_CHUNKED_END)
        # Only now: a message refused above leaves the head unsent, so the
        # failure can still be answered with a 500.
        self._head_sent = True
        if first and more and (self._body is None or self.body_done):
            self._watch()  # nothing more of the request is on the wire
        try:
            await self.connection.write(b"".join(parts))
        except OSError:
            self._client_left()
            raise ClientDisconnected("the client closed the connection") from None
        if not more:
            self.complete = True
            self._ended.set()

    def _build_head(self, body: bytes, *, more: bool) -> bytes:
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self._headers]
        lines, app_close, self._length = response_headers(headers)
        status = self.status
        self._no_body = self.head_request or status in _NO_BODY_STATUSES
        if self._length is None and not more and status not in _NO_BODY_STATUSES:
            # The whole body in one message: its length is known.
            self._length = len(body)
            lines += b"Content-Length: %d\r\n" % self._length
        if app_close or not self.connection.keeps_alive():
            self.keep_alive = False
        framing, self._chunked, self.keep_alive = frame(
            sized=self._no_body or self._length is not None,
            http11=self.http11,
            keep_alive=self.keep_alive,
        )
        return b"HTTP/1.1 %d %s\r\n%s%s\r\n" % (status, _reason(status), lines, framing)

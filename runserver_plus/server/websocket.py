"""WebSockets under ASGI (RFC 6455), framed by wsproto: handshake, messages, close."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from runserver_plus.server import log
from runserver_plus.server.asgi_http import HttpConnection
from runserver_plus.server.asgi_scope import (
    ASGI_VERSION,
    ASGIApp,
    ClientDisconnected,
    Message,
    decode_path,
    request_headers,
)
from runserver_plus.server.body import READ_SIZE
from runserver_plus.server.request import RequestHead
from runserver_plus.server.response import closing_response
from runserver_plus.server.wsgi import split_target

# Close codes (RFC 6455 §7.4.1).
NORMAL = 1000
ABNORMAL = 1006  # never sent: the connection ended without a close frame
TOO_BIG = 1009
INTERNAL_ERROR = 1011
SERVICE_RESTART = 1012

#: How long the client may take to answer our close frame before we hang up.
CLOSE_TIMEOUT = 1.0  # s


class WebSocketHandler:
    """Takes over an HTTP connection whose request asks for a WebSocket."""

    def __init__(self, app: ASGIApp, max_message: int, state: dict[str, Any]) -> None:
        self.app = app
        self.max_message = max_message
        self.state = state

    async def __call__(
        self, connection: HttpConnection, head: bytes, request: RequestHead
    ) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        ws.receive_data(head + bytes(connection.buffer))
        connection.buffer.clear()
        try:
            handshake = next(iter(ws.events()), None)
        except RemoteProtocolError as error:
            handshake = None
            reason = str(error)
        else:
            reason = "not a WebSocket handshake"
        if not isinstance(handshake, Request):
            log.log_protocol_error(400, reason, connection.sock)
            body = f"400 Bad Request\n\n{reason}\n".encode()
            with contextlib.suppress(OSError):
                await connection.write(
                    closing_response(400, "text/plain; charset=utf-8", body)
                )
            return
        session = WebSocketSession(self, connection, ws, request, handshake)
        await session.run()


class WebSocketSession:
    """One WebSocket: the application's receive/send against wsproto's events."""

    def __init__(
        self,
        handler: WebSocketHandler,
        connection: HttpConnection,
        ws: WSConnection,
        request: RequestHead,
        handshake: Request,
    ) -> None:
        self.handler = handler
        self.connection = connection
        self.ws = ws
        raw_path, query = split_target(request.target)
        self.path = decode_path(raw_path)
        self.scope = {
            "type": "websocket",
            "asgi": ASGI_VERSION,
            "http_version": request.http_version.decode("ascii"),
            "scheme": "wss" if connection.secure else "ws",
            "path": self.path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": request_headers(request.headers, None),
            "client": connection.client,
            "server": connection.server,
            "subprotocols": list(handshake.subprotocols),
            "state": dict(handler.state),
        }
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.started = time.perf_counter()
        self.accepted = False
        self.closed = False  # a close frame went out, or the client left
        self.close_code = ABNORMAL
        self.received = False  # the application called receive()
        self._parts: list[bytes | str] = []
        self._size = 0
        self._client_closed = asyncio.Event()
        self._closing: asyncio.Task[None] | None = None

    # --- the session ---------------------------------------------------------------

    async def run(self) -> None:
        self.connection.on_stop = self.service_restart
        await self.inbox.put({"type": "websocket.connect"})
        reader = asyncio.get_running_loop().create_task(self._read_frames())
        try:
            await self._run_app()
        finally:
            if self.accepted and not self.closed:
                await self._close(NORMAL)
            if self.accepted:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._client_closed.wait(), CLOSE_TIMEOUT)
                self._log("WSDISCONNECT", 101, note=f"code {self.close_code}")
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _run_app(self) -> None:
        try:
            await self.handler.app(self.scope, self.receive, self.send)
        except Exception as error:  # noqa: BLE001 - the app's failure ends only this socket
            if self.accepted:
                log.log_app_exception(f"WEBSOCKET {self.path}")
                if not self.closed:
                    await self._close(INTERNAL_ERROR)
            elif not self.received and isinstance(error, ValueError):
                # Refused the scope type outright (Django's plain handler):
                # the reason, not a traceback.
                await self._reject(str(error))
            else:
                log.log_app_exception(f"WEBSOCKET {self.path}")
                await self._reject("")
        else:
            if not self.accepted and not self.closed:
                await self._reject("the application closed without accepting")

    def service_restart(self) -> None:
        """The server stops: close with 1012 so the client reconnects later."""
        if self.accepted and not self.closed:
            loop = asyncio.get_running_loop()
            self._closing = loop.create_task(self._close(SERVICE_RESTART))
            self.inbox.put_nowait(
                {"type": "websocket.disconnect", "code": SERVICE_RESTART}
            )

    # --- the application's side -------------------------------------------------------

    async def receive(self) -> Message:
        self.received = True
        return await self.inbox.get()

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            if self.accepted or self.closed:
                raise RuntimeError("websocket.accept out of turn")
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
            accept = AcceptConnection(
                subprotocol=message.get("subprotocol"), extra_headers=headers
            )
            await self._write(self.ws.send(accept))
            self.accepted = True
            self._log("WSCONNECT", 101)
            self.started = time.perf_counter()
        elif kind == "websocket.close":
            if not self.accepted:
                await self._reject("")
            elif not self.closed:
                await self._close(
                    int(message.get("code", NORMAL)), message.get("reason")
                )
        elif kind == "websocket.send":
            if not self.accepted:
                raise RuntimeError("websocket.send before websocket.accept")
            if self.closed:
                raise ClientDisconnected("the WebSocket is closed")
            text = message.get("text")
            event: TextMessage | BytesMessage = (
                TextMessage(data=str(text))
                if text is not None
                else BytesMessage(data=bytes(message.get("bytes") or b""))
            )
            await self._write(self.ws.send(event))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} for a WebSocket")

    # --- the client's side ------------------------------------------------------------

    async def _read_frames(self) -> None:
        reader = self.connection.reader
        while True:
            try:
                data = await reader.read(READ_SIZE)
            except OSError:
                data = b""
            self.ws.receive_data(data or None)
            try:
                for event in self.ws.events():
                    await self._handle(event)
            except RemoteProtocolError:
                await self._client_gone(1002)
                return
            if not data:
                await self._client_gone(ABNORMAL)
                return
            if self.ws.state is ConnectionState.CLOSED:
                return

    async def _handle(self, event: object) -> None:
        if isinstance(event, (TextMessage, BytesMessage)):
            await self._message_part(event)
        elif isinstance(event, Ping):
            await self._write(self.ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            self.close_code = event.code
            if self.ws.state is ConnectionState.REMOTE_CLOSING:
                await self._write(self.ws.send(event.response()))
            self.closed = True
            self._client_closed.set()
            await self.inbox.put({"type": "websocket.disconnect", "code": event.code})

    async def _message_part(self, event: TextMessage | BytesMessage) -> None:
        data = event.data
        self._size += len(data.encode("utf-8")) if isinstance(data, str) else len(data)
        if self._size > self.handler.max_message:
            self._parts, self._size = [], 0
            await self._close(TOO_BIG, "message too big")
            await self.inbox.put({"type": "websocket.disconnect", "code": TOO_BIG})
            return
        self._parts.append(data if isinstance(data, str) else bytes(data))
        if not event.message_finished:
            return
        parts, self._parts, self._size = self._parts, [], 0
        if isinstance(event, TextMessage):
            text = "".join(str(part) for part in parts)
            await self.inbox.put({"type": "websocket.receive", "text": text})
        else:
            joined = b"".join(part for part in parts if isinstance(part, bytes))
            await self.inbox.put({"type": "websocket.receive", "bytes": joined})

    async def _client_gone(self, code: int) -> None:
        if not self.closed:
            self.closed = True
            self.close_code = code
            await self.inbox.put({"type": "websocket.disconnect", "code": code})
        self._client_closed.set()

    # --- writing ----------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        try:
            await self.connection.write(data)
        except OSError:
            await self._client_gone(ABNORMAL)
            raise ClientDisconnected("the client closed the connection") from None

    async def _close(self, code: int, reason: str | None = None) -> None:
        if self.closed or self.ws.state is not ConnectionState.OPEN:
            return
        self.closed = True
        self.close_code = code
        with contextlib.suppress(OSError):
            await self.connection.write(
                self.ws.send(CloseConnection(code=code, reason=reason))
            )

    async def _reject(self, why: str) -> None:
        """Refuse the handshake with 403 (the app closed, or refused the scope)."""
        self.closed = True
        reject = RejectConnection(
            status_code=403, headers=[(b"content-length", b"0")], has_body=False
        )
        with contextlib.suppress(OSError):
            await self.connection.write(self.ws.send(reject))
        self._log("WSREJECT", 403, note=why)

    def _log(self, action: str, status: int, note: str = "") -> None:
        duration = time.perf_counter() - self.started
        line = f"{action} {self.path}"
        suffix = log.AccessNote(suffix=note) if note else None
        log.log_request(line, status, None, duration, self.connection.sock, note=suffix)

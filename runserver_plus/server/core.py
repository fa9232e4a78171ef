"""The HTTP/1.1 core, sans I/O: requests from received bytes, the server's answers.

No socket and no thread here: a driver (connection.py for the threaded and
serial modes) reads and writes, and hands this module the bytes. Parsing a
head and framing a body live beside it (request.py, body.py); writing an
application's response in response.py.
"""

from __future__ import annotations

import http

from runserver_plus.server.errors import ProtocolError
from runserver_plus.server.request import (
    HEAD_END,
    MAX_HEAD,
    MAX_REQUEST_LINE,
    RequestHead,
)
from runserver_plus.server.response import closing_response

#: Longest request line shown in the log (a 414 can be 64 KiB long).
LOGGED_LINE = 1000  # characters
#: How a TLS ClientHello begins: a handshake record (0x16) of version 3.x.
TLS_HANDSHAKE_PREFIX = b"\x16\x03"


class RequestBuffer:
    """What a client sent that no request has taken yet."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data = bytearray()

    def __bool__(self) -> bool:
        """Whether bytes of a request that has not been taken are buffered."""
        return bool(self._data)

    def feed(self, data: bytes) -> None:
        self._data += data

    def take_head(self) -> bytes | None:
        """The next request's head if it has arrived whole (see ``take_head``)."""
        return take_head(self._data)

    def take_all(self) -> bytes:
        """Everything buffered (the start of a body), leaving it empty."""
        data = bytes(self._data)
        self._data.clear()
        return data

    def first_line(self) -> str:
        return first_line(bytes(self._data))


def take_head(buffer: bytearray) -> bytes | None:
    """Remove and return the next request's head from ``buffer`` once it has
    arrived whole, else None; ``ProtocolError`` (414, 431) when it is too
    long to wait for. Empty lines before a request are skipped (RFC 9112
    §2.2). For the asyncio driver's buffer, and ``RequestBuffer``'s."""
    if not buffer:
        return None
    while buffer[:2] == b"\r\n" or buffer[:1] == b"\n":
        del buffer[: 2 if buffer[:1] == b"\r" else 1]
    match = HEAD_END.search(buffer)
    # A head over the limit is refused (below) even when the read that
    # took it over the limit also brought its end.
    if match and match.end() <= MAX_HEAD:
        head = bytes(buffer[: match.end()])
        del buffer[: match.end()]
        return head
    if buffer.find(b"\n") < 0 and len(buffer) > MAX_REQUEST_LINE:
        raise ProtocolError(414, "Request-URI Too Long")
    if len(buffer) > MAX_HEAD:
        raise ProtocolError(431, "Request header fields too large")
    return None


def starts_with_tls(data: bytes) -> bool:
    """Whether the first bytes of a connection are a TLS ClientHello."""
    return data.startswith(TLS_HANDSHAKE_PREFIX)


def first_line(data: bytes) -> str:
    """The request line as the log shows it: raw bytes read as latin-1."""
    end = data.find(b"\n")
    line = (data if end < 0 else data[:end]).rstrip(b"\r").decode("latin-1")
    return line if len(line) <= LOGGED_LINE else line[:LOGGED_LINE] + "..."


def keep_alive_asked(request: RequestHead) -> bool:
    """Whether the client asks to keep the connection after this request."""
    values = [value for name, value in request.headers if name == b"connection"]
    if not values:  # the common case
        return request.http_version != b"1.0"
    tokens = {token.strip().lower() for value in values for token in value.split(b",")}
    if request.http_version != b"1.0":
        return b"close" not in tokens
    return b"keep-alive" in tokens  # HTTP/1.0 asks for it, as Django allows


def error_response(error: ProtocolError, request_line: str) -> bytes:
    """The server's own answer to a request it refuses, closing the
    connection; without the body when the request line, however malformed,
    asks for HEAD."""
    phrase = http.HTTPStatus(error.status).phrase
    body = f"{error.status} {phrase}\n\n{error.reason}\n".encode()
    return closing_response(
        error.status,
        "text/plain; charset=utf-8",
        body,
        head=request_line.startswith("HEAD "),
    )

"""TLS on a connection, in memory: the first byte sorts TLS from plain HTTP."""

from __future__ import annotations

import contextlib
import http
import ssl

from runserver_plus.server.request import RequestHead
from runserver_plus.server.wsgi import http_date

#: A TLS connection starts with a handshake record (RFC 8446 §5.1); an
#: HTTP request starts with a method's letter.
HANDSHAKE_RECORD = 0x16
#: Plaintext read from the TLS layer at once (one TLS record holds 16 KiB).
READ_SIZE = 65536  # bytes


class TLSLayer:
    """The TLS side of one connection, as bytes in and bytes out.

    The socket stays a plain one: the event loop waits on it as on any other
    and the connection reads and writes it with its own timeouts. What
    arrives goes through ``receive()``; what the layer must send
    (handshake messages, then encrypted responses) comes from ``outgoing()``
    and ``encrypt()``. So the handshake never blocks: each part of it is
    taken as it arrives, and a client that stalls halfway only waits in the
    loop, with its deadline, like a request that arrives slowly.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.handshaken = False

    def receive(self, data: bytes) -> bytes | None:
        """The plaintext in ``data`` and what came before it: ``b""`` while
        the handshake goes on or a record is incomplete; None once the client
        closed (``data`` empty, or a close_notify). ``ssl.SSLError`` when the
        handshake fails or a record is broken."""
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()
        if not self.handshaken:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                return None if not data else b""
            except ssl.SSLEOFError:
                return None
            self.handshaken = True
        plaintext = bytearray()
        while True:
            try:
                piece = self._tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return bytes(plaintext) or None
            if not piece:
                return bytes(plaintext) or None
            plaintext += piece
        if not data and not plaintext:
            return None
        return bytes(plaintext)

    def outgoing(self) -> bytes:
        """What the layer has to send: handshake messages, session tickets."""
        return self._outgoing.read()

    def close_notify(self) -> bytes:
        """The alert that ends the TLS stream, to send before closing; empty
        when the handshake never ended (there is no stream to end)."""
        if not self.handshaken:
            return b""
        # unwrap() then waits for the client's close_notify: we do not.
        with contextlib.suppress(ssl.SSLWantReadError):
            self._tls.unwrap()
        return self._outgoing.read()

    def encrypt(self, data: bytes | memoryview) -> bytes:
        """``data`` as TLS records, with anything else the layer had to send."""
        self._tls.write(data)
        return self._outgoing.read()


def redirect_response(location: str, *, head: bool) -> bytes:
    """The ``308`` that sends a plain-HTTP request on the HTTPS port to
    ``location``; the connection closes after it."""
    body = f"This server speaks HTTPS: {location}\n".encode()
    return (
        (
            f"HTTP/1.1 308 {http.HTTPStatus(308).phrase}\r\n"
            f"Location: {location}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n"
        ).encode("latin-1")
        + b"Date: "
        + http_date()
        + b"\r\n\r\n"
        + (b"" if head else body)
    )


def redirect_to_https(request: RequestHead, default_host: str) -> bytes:
    """The answer to a plain-HTTP request on the HTTPS port: a ``308`` to the
    same URL in https (on ``default_host`` when the request has no Host)."""
    host = next((v for n, v in request.headers if n == b"host"), None)
    location = https_location(host, request.target, default_host)
    return redirect_response(location, head=request.method == b"HEAD")


def https_location(host: bytes | None, target: bytes, default_host: str) -> str:
    """The https URL of a plain-HTTP request: its Host (or ``default_host``)
    and its target; an absolute-form target keeps its authority."""
    if target.startswith((b"http://", b"HTTP://")):
        return "https://" + target[len(b"http://") :].decode("latin-1")
    authority = host.decode("latin-1") if host else default_host
    return f"https://{authority}{target.decode('latin-1')}"

"""The bytes of one accepted socket, in and out, plain or through TLS."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterable

from runserver_plus.server.errors import ClientGone, ClientWentAway
from runserver_plus.server.response import FileSpan
from runserver_plus.server.sockets import set_io_timeout
from runserver_plus.server.tls import HANDSHAKE_RECORD, TLSLayer

#: Largest piece handed to one sendall(), so a send timeout measures progress.
MAX_SEND = 1024 * 1024  # bytes
RECV_SIZE = 65536  # bytes
#: recv() flag for a read that must not wait (the event loop's); 0 where the
#: platform has none, as on Windows: the loop reads only readable sockets.
_DONT_WAIT = getattr(socket, "MSG_DONTWAIT", 0)


class Transport:
    """Reads and writes of one connection's socket, each bounded in time.

    On the HTTPS port (``tls`` given) the first bytes decide: a TLS
    handshake makes the connection a TLS one (``TLSLayer``), and every read
    is decrypted and every write encrypted here; plain HTTP is read as it
    comes and ``plain_on_tls_port`` says so, for the connection to redirect.
    Callers see the request's bytes and send the response's.
    """

    def __init__(
        self, sock: socket.socket, *, send_timeout: float, tls: ssl.SSLContext | None
    ) -> None:
        self.sock = sock
        self._context = tls
        #: On the HTTPS port: whether the first bytes are still to decide
        #: between TLS and plain HTTP (which is only redirected).
        self._sorting = tls is not None
        self._tls: TLSLayer | None = None
        self.plain_on_tls_port = False
        #: The receive timeout in force. The send timeout never changes: it
        #: is set once, as each change costs system calls.
        self._timeout: float | None = None
        self._send_timeout = send_timeout
        set_io_timeout(sock, send_timeout, recv=False)

    @property
    def handshaking(self) -> bool:
        """Whether no HTTP can have arrived yet: the first bytes of the HTTPS
        port, or a TLS handshake that is not over."""
        return self._sorting or (self._tls is not None and not self._tls.handshaken)

    # --- reading ------------------------------------------------------------

    def recv(self, timeout: float) -> bytes:
        """The request bytes that come within ``timeout`` s; ``b""`` when the
        client closed (or its TLS failed), ``ClientGone`` when nothing came."""
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
                return b""
            if data or not raw:
                return data
            # TLS: part of the handshake or of a record; read on.

    def recv_now(self) -> bytes | None:
        """What a readable socket holds, for the event loop: the request bytes
        (``b""`` when none yet, as halfway through a TLS record), or None when
        the client closed, reset or failed its TLS."""
        try:
            raw = self.sock.recv(RECV_SIZE, _DONT_WAIT)
        except BlockingIOError:
            return b""  # a spurious wake-up: nothing to read after all
        except OSError:
            return None  # reset by the client
        data = self._take_in(raw)
        if data is None or not raw:
            return None
        return data

    def _take_in(self, raw: bytes) -> bytes | None:
        """The request bytes in what the socket gave: ``raw`` itself in plain
        HTTP; decrypted on a TLS connection (``b""`` while the handshake goes
        on; None when the client closed TLS or it failed)."""
        if self._sorting and raw:
            self._sorting = False
            if raw[0] == HANDSHAKE_RECORD:
                assert self._context is not None
                self._tls = TLSLayer(self._context)
            else:
                self.plain_on_tls_port = True
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

    # --- writing --------------------------------------------------------------

    def send(self, parts: Iterable[bytes | FileSpan]) -> None:
        """Write the parts in order, files with ``sendfile``; one write for the
        bytes between files. ``ClientWentAway`` when the client is gone."""
        pending: list[bytes] = []
        for part in parts:
            if isinstance(part, FileSpan):
                if not part.count:
                    continue
                self.sendall(b"".join(pending))
                pending = []
                if self._tls is not None:
                    self._send_file_through_tls(part)
                    continue
                # sendfile() on a blocking socket would wait for a stalled
                # client forever: bound it the slower way.
                self.sock.settimeout(self._send_timeout)
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
        self.sendall(b"".join(pending))

    def sendall(self, data: bytes) -> None:
        """Write ``data`` (encrypted on a TLS connection); ``ClientWentAway``."""
        if self._tls is not None:
            data = self._tls.encrypt(data) if data else b""
        self._send_raw(data)

    def end_tls(self) -> None:
        """TLS's own end of stream, before the socket closes: without it, a
        response whose end is the close reads as truncated (curl and OpenSSL
        3 say so). Nothing on a plain connection, or if the client is gone."""
        if self._tls is not None:
            with contextlib.suppress(OSError, ClientGone):
                self._send_raw(self._tls.close_notify())

    def _send_file_through_tls(self, part: FileSpan) -> None:
        """``sendfile`` cannot encrypt: read the file and write it in pieces."""
        part.file.seek(part.offset)
        left = part.count
        while left:
            piece = part.file.read(min(left, MAX_SEND))
            if not piece:
                raise ClientWentAway("the file is shorter than announced")
            self.sendall(piece)
            left -= len(piece)

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

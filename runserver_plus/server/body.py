"""A request body as it arrives: h11's framing, checked where h11 is lenient."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO

import h11

from runserver_plus.server.errors import ClientGone, ProtocolError

#: Chunked request bodies larger than this go to a temporary file.
SPOOL_IN_MEMORY = 1024 * 1024  # bytes
READ_SIZE = 65536  # bytes


class ChunkSizeLines:
    """Refuses whitespace at the end of a chunk-size line, which h11 accepts.

    RFC 9112 §7.1 has none there, servers disagree about it, and such a
    disagreement over where a chunk ends is how requests get smuggled.
    This keeps the bytes h11 was given and has not consumed: h11's events
    say how far it read, so each size line it accepted is found where h11
    found it, without parsing the framing a second time.
    """

    __slots__ = ("_at_size_line", "_crlf_first", "_raw")

    def __init__(self) -> None:
        self._raw = bytearray()
        self._at_size_line = True  # h11 reads a size line next
        self._crlf_first = False  # ... after the CRLF that ends a chunk's data

    def received(self, data: bytes) -> None:
        self._raw += data

    def consumed(self, event: h11.Data | h11.EndOfMessage) -> None:
        """h11 produced ``event``: check the size line it read, drop what it read."""
        end = 0
        if self._at_size_line:
            start = 2 if self._crlf_first else 0
            end = self._raw.find(b"\r\n", start) + 2
            if self._raw[end - 3] in b" \t":  # the last byte before the CRLF
                raise ProtocolError(400, "Whitespace at the end of a chunk-size line")
            self._at_size_line = False
        if isinstance(event, h11.Data):
            end += len(event.data)
            self._at_size_line = self._crlf_first = event.chunk_end
        del self._raw[:end]


class RequestBody:
    """``wsgi.input``: the body as h11 decodes it, read from the socket on demand.

    ``recv`` returns the next bytes from the client, raising ``ClientGone`` on
    EOF or timeout, which reads as the end of a short body. A ``chunked``
    body raises ``ProtocolError`` for what h11 lets through (ChunkSizeLines).
    """

    def __init__(
        self, recv: Callable[[], bytes], conn: h11.Connection, *, chunked: bool
    ) -> None:
        self._recv = recv
        self._conn = conn
        self._size_lines = ChunkSizeLines() if chunked else None
        self._buffer = b""
        self._done = False
        self.broken = False

    def receive(self, data: bytes) -> None:
        """Hand h11 bytes of the body (never b"", h11's sign of a close)."""
        self._conn.receive_data(data)
        if self._size_lines is not None:
            self._size_lines.received(data)

    def _next_chunk(self) -> bytes:
        while not self._done:
            event = self._conn.next_event()
            if isinstance(event, h11.Data):
                if self._size_lines is not None:
                    self._size_lines.consumed(event)
                return bytes(event.data)
            if isinstance(event, h11.EndOfMessage):
                if self._size_lines is not None:
                    self._size_lines.consumed(event)
                self._done = True
            elif event is h11.NEED_DATA:
                try:
                    self.receive(self._recv())
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


class NoBody:
    """``wsgi.input`` of a request without a body."""

    broken = False

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())

    def close(self) -> None:
        """Nothing to release."""

    def drain(self, limit: int) -> bool:
        """Nothing to drain: the connection is in sync."""
        return True


#: Stateless, so one serves every request without a body.
NO_BODY = NoBody()


def decode_chunked(body: RequestBody) -> tuple[IO[bytes], int | None]:
    """Read a whole chunked body so the app sees a plain one with a length."""
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - closed with the request
    try:
        total = 0
        while chunk := body.read(READ_SIZE):
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

"""One request as it arrives: the head checks, h11 parsing, and the body stream."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO

import h11

from runserver_plus.server.response import ClientGone

# Limits, with the statuses RFC 9112 and RFC 6585 give them.
MAX_REQUEST_LINE = 65536  # bytes; longer -> 414, as Django's server
MAX_HEAD = 256 * 1024  # bytes of request line + headers; more -> 431
MAX_HEADERS = 100  # header lines; more -> 431, as Django's server
#: Not below MAX_REQUEST_LINE: parse_head() looks for longer lines only in
#: heads too long for its strict check.
MAX_FIELD_LINE = 65536  # bytes of one header line; longer -> 431, as Django's server
#: Chunked request bodies larger than this go to a temporary file.
SPOOL_IN_MEMORY = 1024 * 1024  # bytes
READ_SIZE = 65536  # bytes

HEAD_END = re.compile(rb"\r?\n\r?\n")
_OBS_FOLD = re.compile(rb"(?:^|\n)[ \t]")
_HTTP_VERSION = re.compile(rb"HTTP/([0-9]+)\.[0-9]+")


class ProtocolError(Exception):
    """A request the server answers itself with an error status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def take_head(buffer: bytearray) -> bytes | None:
    """Remove and return the next request's head from ``buffer`` once it has
    arrived whole, else None; ``ProtocolError`` (414, 431) when it is too long
    to wait for. Empty lines before a request are skipped (RFC 9112 §2.2)."""
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


class RequestHead:
    """A parsed request head: what ``build_environ`` and the connection read.

    ``headers`` are (lower-case name, value) pairs, as h11 gives them.
    """

    __slots__ = ("headers", "http_version", "method", "target")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        http_version: bytes,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        self.method = method
        self.target = target
        self.http_version = http_version
        self.headers = headers


# The common request, which has no body (no Content-Length, no
# Transfer-Encoding), expects nothing and upgrades nothing, is checked here
# against a strict subset of h11's grammar (RFC 9112 §3 and §5; values with
# control characters, say, are left to h11): creating an h11 connection for
# it cost a sixth of a keep-alive request. Anything else goes to h11.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_SIMPLE_REQUEST_LINE = re.compile(rb"(%s) (/[\x21-\x7e]*) HTTP/(1\.[01])" % _TOKEN)
_SIMPLE_FIELD_LINE = re.compile(
    rb"(%s):[ \t]*((?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?)[ \t]*"
    % _TOKEN
)
#: Fields that give a request a body, or a next step, h11 must handle.
_NOT_SIMPLE_FIELDS = frozenset(
    {b"content-length", b"transfer-encoding", b"expect", b"upgrade"}
)


def parse_simple_head(head: bytes) -> RequestHead | None:
    """The head of a request without a body, or None for h11 to parse.

    None for anything the strict check does not accept: h11 then either
    accepts it as well or gives the error response.
    """
    lines = head.split(b"\n")
    del lines[-2:]  # the blank line that ends the head
    if len(lines) - 1 > MAX_HEADERS:
        return None  # parse_head() words the error
    request_line = lines[0].removesuffix(b"\r")
    match = _SIMPLE_REQUEST_LINE.fullmatch(request_line)
    if match is None or match[1] == b"CONNECT":
        return None
    headers: list[tuple[bytes, bytes]] = []
    hosts = 0
    for line in lines[1:]:
        field = _SIMPLE_FIELD_LINE.fullmatch(line.removesuffix(b"\r"))
        if field is None:
            return None
        name = field[1].lower()
        if name in _NOT_SIMPLE_FIELDS:
            return None
        hosts += name == b"host"
        headers.append((name, field[2]))
    if hosts > 1 or (hosts == 0 and match[3] == b"1.1"):
        return None  # h11 words the error
    return RequestHead(match[1], match[2], match[3], headers)


def parse_head(head: bytes) -> tuple[RequestHead, h11.Connection | None]:
    """Validate a request head and parse it; ``ProtocolError`` if bad.

    A request without a body passes our strict check and needs no h11
    connection (None). Others go to h11, which checks the syntax (methods,
    targets, field names and values, Content-Length, Transfer-Encoding, Host
    for HTTP/1.1) and reads the body later; we add what it lets through:
    obs-fold, Content-Length with Transfer-Encoding, Transfer-Encoding in
    HTTP/1.0, target forms, other major versions (505) and the limits (414,
    431).
    """
    if len(head) <= MAX_REQUEST_LINE:
        # The strict check first: it accepts only what passes the checks
        # below, and most requests.
        simple = parse_simple_head(head)
        if simple is not None:
            return simple, None
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
    if len(fields) > MAX_FIELD_LINE and any(
        len(line.removesuffix(b"\r")) > MAX_FIELD_LINE for line in fields.split(b"\n")
    ):
        # Worded as Django's server words it; MAX_HEAD alone let 256 KiB by.
        raise ProtocolError(431, "Line too long")
    if _OBS_FOLD.search(fields.rstrip(b"\r\n")):
        raise ProtocolError(400, "Obsolete line folding in a header")
    if fields.count(b"\n") - 1 > MAX_HEADERS:
        raise ProtocolError(431, "Too many headers")
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=len(head) + 1)
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as error:
        if error.error_status_hint == 501:
            # h11's answer to any Transfer-Encoding but one "chunked".
            raise _transfer_coding_error(head, h11_reason(error)) from None
        raise ProtocolError(error.error_status_hint, h11_reason(error)) from None
    if not isinstance(event, h11.Request):
        raise ProtocolError(400, "Bad request syntax")
    names = {name for name, _ in event.headers}
    if b"transfer-encoding" in names:
        if b"content-length" in names:
            raise ProtocolError(400, "Content-Length with Transfer-Encoding")
        if event.http_version == b"1.0":
            # RFC 9112 §6.1: such a request is badly framed.
            raise ProtocolError(400, "Transfer-Encoding in an HTTP/1.0 request")
    if event.target[:1] != b"/":
        check_target_form(event.method, event.target)
    request = RequestHead(
        event.method, event.target, event.http_version, list(event.headers)
    )
    return request, conn


def _transfer_coding_error(head: bytes, reason: str) -> ProtocolError:
    """The error for a head whose Transfer-Encoding h11 does not implement.

    501 only when chunked is the final coding, and the only chunked
    (RFC 9112 §6.1, §6.3); otherwise the body's end is unknown, as it is
    with Content-Length beside it or in HTTP/1.0: 400. The head is refused
    either way, so its field lines are read loosely, for the status alone.
    """
    request_line, *lines = head.split(b"\n")
    codings: list[bytes] = []
    content_length = False
    for line in lines:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name == b"transfer-encoding":
            codings += filter(None, (c.strip().lower() for c in value.split(b",")))
        content_length = content_length or name == b"content-length"
    if content_length:
        return ProtocolError(400, "Content-Length with Transfer-Encoding")
    if request_line.rstrip(b"\r").endswith(b" HTTP/1.0"):
        return ProtocolError(400, "Transfer-Encoding in an HTTP/1.0 request")
    if codings[-1:] != [b"chunked"] or codings.count(b"chunked") > 1:
        return ProtocolError(400, "Transfer-Encoding does not end with chunked once")
    return ProtocolError(501, reason)


# RFC 3986 §3: an absolute URI with an authority, which is what a target in
# absolute-form names (RFC 9112 §3.2.2); the host may not be empty (RFC 9110
# §4.2.1). The path and query are left to h11's check, as in origin-form.
_URI_CHAR = rb"(?:[-A-Za-z0-9._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})"
_IP_LITERAL = rb"\[(?:[0-9A-Fa-f:.]+|v[0-9A-Fa-f]+\.[-A-Za-z0-9._~!$&'()*+,;=:]+)\]"
_ABSOLUTE_FORM = re.compile(
    rb"[A-Za-z][-A-Za-z0-9+.]*://"  # scheme
    rb"(?:(?:%(char)b|:)*@)?"  # userinfo
    rb"(?:%(ip)b|%(char)b+)"  # host
    rb"(?::[0-9]*)?"  # port
    rb"(?:[/?].*)?" % {b"char": _URI_CHAR, b"ip": _IP_LITERAL},
    re.DOTALL,
)
_AUTHORITY_FORM = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[-A-Za-z0-9._~%]+):[0-9]+")


def check_target_form(method: bytes, target: bytes) -> None:
    """``ProtocolError`` (400) unless the method takes a target of this form.

    For a target that does not begin with "/" (RFC 9112 §3.2): ``*`` only
    with OPTIONS, an authority (``host:port``) only with CONNECT, otherwise
    an absolute URI with an authority, whose path the server answers.
    """
    if target == b"*":
        if method != b"OPTIONS":
            raise ProtocolError(
                400, "Asterisk-form target for a method other than OPTIONS"
            )
    elif method == b"CONNECT":
        return  # authority-form, which CONNECT uses; left as before
    elif _AUTHORITY_FORM.fullmatch(target):
        raise ProtocolError(
            400, "Authority-form target for a method other than CONNECT"
        )
    elif _ABSOLUTE_FORM.fullmatch(target) is None:
        raise ProtocolError(400, "Invalid request target")


_H11_REPR = re.compile(r": bytearray\(b.*\)$", re.DOTALL)


def h11_reason(error: h11.RemoteProtocolError) -> str:
    """h11's message without the raw bytes it quotes (the log shows the line)."""
    return _H11_REPR.sub("", str(error))


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

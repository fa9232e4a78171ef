"""A request head as it arrives: the limits, the strict checks and h11's parsing."""

from __future__ import annotations

import re

import h11

from runserver_plus.server.errors import ProtocolError

# Limits, with the statuses RFC 9112 and RFC 6585 give them.
MAX_REQUEST_LINE = 65536  # bytes; longer -> 414, as Django's server
MAX_HEAD = 256 * 1024  # bytes of request line + headers; more -> 431
MAX_HEADERS = 100  # header lines; more -> 431, as Django's server
#: Not below MAX_REQUEST_LINE: parse_head() looks for longer lines only in
#: heads too long for its strict check.
MAX_FIELD_LINE = 65536  # bytes of one header line; longer -> 431, as Django's server

HEAD_END = re.compile(rb"\r?\n\r?\n")
_OBS_FOLD = re.compile(rb"(?:^|\n)[ \t]")
_HTTP_VERSION = re.compile(rb"HTTP/([0-9]+)\.[0-9]+")


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


def is_websocket_upgrade(request: RequestHead) -> bool:
    """Whether the request asks to switch to the WebSocket protocol."""
    if request.method != b"GET":
        return False
    upgrade = b",".join(v for n, v in request.headers if n == b"upgrade")
    return b"websocket" in upgrade.lower()

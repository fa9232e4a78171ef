"""Reading requests without sockets (tier 1): the strict check, and h11's.

``parse_simple_head`` spares common requests an h11 connection. It must
accept only heads h11 accepts, and read them exactly as h11 does; anything
else it leaves to h11 (None), which parses it or gives the error response.
Around h11 are the checks where it is lenient: target forms, framing, a
header line's length and chunk-size lines.
"""

from __future__ import annotations

import random

import h11
import pytest

from runserver_plus.server.body import RequestBody, decode_chunked
from runserver_plus.server.errors import ClientGone, ProtocolError
from runserver_plus.server.request import (
    MAX_FIELD_LINE,
    RequestHead,
    parse_head,
    parse_simple_head,
)

#: Random heads compared with h11 (seeded, so a failure can be replayed).
RANDOM_HEADS = 3000
SEED = 20261124


def h11_reading(head: bytes) -> tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]]]:
    """What h11 makes of a head; h11.RemoteProtocolError if it refuses it."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    event = conn.next_event()
    assert isinstance(event, h11.Request), event
    return event.method, event.target, event.http_version, list(event.headers)


def reading(
    request: RequestHead,
) -> tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]]]:
    return request.method, request.target, request.http_version, request.headers


def assert_same_as_h11(head: bytes) -> RequestHead | None:
    simple = parse_simple_head(head)
    if simple is not None:
        assert reading(simple) == h11_reading(head), head
    return simple


SIMPLE = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /hello/?a=1&b=%20 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",  # HTTP/1.0 needs no Host
    b"HEAD /x HTTP/1.1\nHost: x\n\n",  # bare LF line ends
    b"GET / HTTP/1.1\r\nHost: x\n\r\n",  # mixed
    b"DELETE /item/3 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: x\r\n\r\n",  # a method is any token
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nX-Spaces: \t a  b \t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHOST: x\r\nAccept-Language: fr-CH, fr;q=0.9\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Latin1: caf\xe9\r\n\r\n",  # obs-text
    b"GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
]


@pytest.mark.parametrize("head", SIMPLE)
def test_simple_requests_are_read_as_h11_reads_them(head: bytes) -> None:
    assert assert_same_as_h11(head) is not None


LEFT_TO_H11 = [
    # A body, or something to do before or after it.
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    # Targets in another form than origin-form: their method must allow it.
    b"GET http://example.com/a?b HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
    # Host rules for HTTP/1.1: h11 words these errors.
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    # Not in the strict grammar.
    b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nNo colon\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Control: a\x01b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad\x7fName: 1\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /caf\xe9 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
    b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.2\r\nHost: x\r\n\r\n",
    b"GET / http/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n",
]


@pytest.mark.parametrize("head", LEFT_TO_H11)
def test_other_requests_are_left_to_h11(head: bytes) -> None:
    assert parse_simple_head(head) is None


def test_parse_head_gives_h11_a_connection_only_when_needed() -> None:
    request, conn = parse_head(b"GET /x?y HTTP/1.1\r\nHost: h\r\n\r\n")
    assert conn is None
    assert reading(request) == (b"GET", b"/x?y", b"1.1", [(b"host", b"h")])

    request, conn = parse_head(
        b"POST /form HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n"
    )
    assert isinstance(conn, h11.Connection)
    assert reading(request) == (
        b"POST",
        b"/form",
        b"1.1",
        [(b"host", b"h"), (b"content-length", b"2")],
    )


def test_parse_head_errors_still_come_from_h11() -> None:
    with pytest.raises(ProtocolError) as missing:
        parse_head(b"GET / HTTP/1.1\r\n\r\n")
    assert missing.value.status == 400
    assert "Host" in missing.value.reason


def test_transfer_encoding_in_http_1_0_is_400() -> None:
    # RFC 9112 §6.1: an HTTP/1.0 recipient cannot know the body's framing.
    with pytest.raises(ProtocolError) as refused:
        parse_head(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert refused.value.status == 400
    assert "HTTP/1.0" in refused.value.reason


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        # RFC 9112 §6.3: the length is unknown unless chunked ends the list once.
        pytest.param(b"Transfer-Encoding: gzip\r\n", 400, id="gzip"),
        pytest.param(b"Transfer-Encoding: identity\r\n", 400, id="identity"),
        pytest.param(b"Transfer-Encoding: xchunked\r\n", 400, id="xchunked"),
        pytest.param(b"Transfer-Encoding: chunked, gzip\r\n", 400, id="chunked-gzip"),
        pytest.param(
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            400,
            id="chunked-then-identity",
        ),
        pytest.param(
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            400,
            id="chunked-twice",
        ),
        pytest.param(
            b"Content-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n",
            400,
            id="content-length-and-gzip-chunked",
        ),
        # chunked ends the list, after a coding the server does not implement.
        pytest.param(b"Transfer-Encoding: gzip, chunked\r\n", 501, id="gzip-chunked"),
        pytest.param(
            b"Transfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n",
            501,
            id="gzip-then-chunked",
        ),
    ],
)
def test_transfer_encoding_status(fields: bytes, status: int) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_head(b"POST / HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n")
    assert refused.value.status == status


def test_transfer_encoding_in_http_1_0_is_400_whatever_the_coding() -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_head(b"POST / HTTP/1.0\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    assert refused.value.status == 400


def test_a_header_line_over_64k_is_431_as_in_djangos_server() -> None:
    def head(line_length: int) -> bytes:
        value = b"v" * (line_length - len(b"X-Big: "))
        return b"POST / HTTP/1.1\r\nHost: h\r\nX-Big: " + value + b"\r\nX: y\r\n\r\n"

    request, _ = parse_head(head(MAX_FIELD_LINE))
    assert len(request.headers[1][1]) == MAX_FIELD_LINE - len(b"X-Big: ")
    with pytest.raises(ProtocolError) as refused:
        parse_head(head(MAX_FIELD_LINE + 1))
    assert (refused.value.status, refused.value.reason) == (431, "Line too long")


# RFC 9112 §3.2: the form of the target goes with the method.
BAD_TARGETS = [
    pytest.param(b"PUT s://]ufd/: HTTP/1.1", id="absolute-form-bad-host"),
    pytest.param(b"GET http:///a HTTP/1.1", id="absolute-form-empty-host"),
    pytest.param(b"GET 1http://h/ HTTP/1.1", id="absolute-form-bad-scheme"),
    pytest.param(b"GET http://h:8x/ HTTP/1.1", id="absolute-form-bad-port"),
    pytest.param(b"GET http://h%zz/ HTTP/1.1", id="absolute-form-bad-escape"),
    pytest.param(b"GET * HTTP/1.1", id="asterisk-form-with-GET"),
    pytest.param(b"PUT * HTTP/1.1", id="asterisk-form-with-PUT"),
    pytest.param(b"GET example.com:443 HTTP/1.1", id="authority-form-with-GET"),
    pytest.param(b"POST example.com:443 HTTP/1.1", id="authority-form-with-POST"),
    pytest.param(b"GET foo/bar HTTP/1.1", id="origin-form-without-slash"),
    pytest.param(b"GET ?a=b HTTP/1.1", id="query-without-path"),
    pytest.param(b"GET mailto:a@b HTTP/1.1", id="absolute-uri-without-authority"),
]


@pytest.mark.parametrize("request_line", BAD_TARGETS)
@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(b"", id="no-body"),
        pytest.param(b"Content-Length: 0\r\n", id="body"),
    ],
)
def test_a_target_in_the_wrong_form_is_400(request_line: bytes, fields: bytes) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_head(request_line + b"\r\nHost: h\r\n" + fields + b"\r\n")
    assert refused.value.status == 400
    assert "target" in refused.value.reason


GOOD_TARGETS = [
    pytest.param(b"GET /a?b HTTP/1.1", id="origin-form"),
    pytest.param(b"GET http://example.com/a?b HTTP/1.1", id="absolute-form"),
    pytest.param(b"GET http://example.com HTTP/1.1", id="absolute-form-no-path"),
    pytest.param(b"GET http://example.com?q HTTP/1.1", id="absolute-form-query"),
    pytest.param(b"GET HTTPS://Example.COM:8443/x HTTP/1.1", id="absolute-form-case"),
    pytest.param(b"GET http://[::1]:8000/ HTTP/1.1", id="absolute-form-ipv6"),
    pytest.param(b"GET http://u:p@h.example/ HTTP/1.1", id="absolute-form-userinfo"),
    pytest.param(b"GET http://caf%C3%A9.example/ HTTP/1.1", id="absolute-form-escape"),
    pytest.param(b"OPTIONS * HTTP/1.1", id="asterisk-form-with-OPTIONS"),
    pytest.param(b"CONNECT example.com:443 HTTP/1.1", id="authority-form-CONNECT"),
]


@pytest.mark.parametrize("request_line", GOOD_TARGETS)
def test_a_target_in_the_right_form_is_read(request_line: bytes) -> None:
    request, _ = parse_head(request_line + b"\r\nHost: h\r\n\r\n")
    assert request.target == request_line.split(b" ")[1]


# --- chunked bodies: the size lines h11 lets through --------------------------------

CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"


def decoded(pieces: list[bytes]) -> bytes:
    """The body decoded from ``pieces`` as they would arrive, one per read."""
    _, conn = parse_head(CHUNKED_HEAD)
    assert conn is not None
    reads = iter(pieces)

    def recv() -> bytes:
        piece = next(reads, None)
        if piece is None:
            raise ClientGone("no more pieces")
        return piece

    spool, length = decode_chunked(RequestBody(recv, conn, chunked=True))
    with spool:
        body = spool.read()
    assert length == len(body)
    return body


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


SPLITS = [
    pytest.param(lambda data: [data], id="one-read"),
    pytest.param(one_byte_at_a_time, id="one-byte-per-read"),
]


VALID_CHUNKED = (
    b"5\r\nhello\r\nA;name=val\r\n, world!!!\r\n1;x\r\n.\r\n0\r\nT: t\r\n\r\n"
)


@pytest.mark.parametrize("split", SPLITS)
def test_chunked_body_decodes_however_it_arrives(split) -> None:
    assert decoded(split(VALID_CHUNKED)) == b"hello, world!!!."


def test_chunked_body_decodes_whichever_byte_the_second_read_starts_at() -> None:
    for cut in range(1, len(VALID_CHUNKED)):
        pieces = [VALID_CHUNKED[:cut], VALID_CHUNKED[cut:]]
        assert decoded(pieces) == b"hello, world!!!.", pieces


@pytest.mark.parametrize(
    "body",
    [
        b"a \r\n0123456789\r\n0\r\n\r\n",
        b"a\t\r\n0123456789\r\n0\r\n\r\n",
        b"5\r\nhello\r\n3  \r\nabc\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0 \r\n\r\n",
        b"5;a=b\t\r\nhello\r\n0\r\n\r\n",
    ],
)
@pytest.mark.parametrize("split", SPLITS)
def test_whitespace_at_the_end_of_a_chunk_size_line_is_400(body: bytes, split) -> None:
    with pytest.raises(ProtocolError) as refused:
        decoded(split(body))
    assert refused.value.status == 400


def random_head(rng: random.Random) -> bytes:
    """A head near the grammar's edges: mostly valid parts, some odd bytes."""
    alphabet = [
        b"a", b"Z", b"0", b"-", b"_", b"!", b"~", b"/", b"?", b"%", b":",
        b" ", b"\t", b"\r", b"\x01", b"\x7f", b"\xe9", b"(", b"@", b",",
    ]  # fmt: skip

    def text(low: int, high: int) -> bytes:
        return b"".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))

    def pick(usual: list[bytes], odd: list[bytes]) -> bytes:
        return rng.choice(usual if rng.random() < 0.85 else odd)

    method = pick([b"GET", b"HEAD", b"get", b"OPTIONS"], [b"G T", b"", text(1, 4)])
    target = pick([b"/", b"/a?b=c", b"*", b"/%7e~"], [text(0, 6)])
    version = pick([b"HTTP/1.1", b"HTTP/1.0"], [b"HTTP/1.1 ", b"HTTP/1.9"])
    lines = [method + b" " + target + b" " + version, b"Host: h"]
    for _ in range(rng.randint(0, 3)):
        name = pick([b"Host", b"X-A", b"accept"], [b"Bad Name", b"", text(1, 5)])
        separator = pick([b":", b": ", b":\t"], [b" :"])
        value = pick([b"", b"x", b" v w ", b"caf\xe9"], [text(0, 8)])
        lines.append(name + separator + value)
    if rng.random() < 0.2:
        del lines[1]  # no Host header
    end = rng.choice([b"\r\n", b"\n"])
    return end.join(lines) + end + end


def test_random_heads_are_read_as_h11_reads_them_or_left_to_it() -> None:
    rng = random.Random(SEED)
    simple = 0
    for _ in range(RANDOM_HEADS):
        head = random_head(rng)
        if b"\n\n" in head.replace(b"\r\n", b"\n")[:-2]:
            continue  # the blank line would end the head early
        simple += assert_same_as_h11(head) is not None
    # The corpus reaches both sides, or it proves nothing.
    assert 0.05 * RANDOM_HEADS < simple < 0.95 * RANDOM_HEADS

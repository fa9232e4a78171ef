"""Units: the sans-I/O core, on bytes alone (tier 1)."""

from __future__ import annotations

import pytest

from runserver_plus.server.core import (
    LOGGED_LINE,
    RequestBuffer,
    error_response,
    first_line,
    keep_alive_asked,
    starts_with_tls,
)
from runserver_plus.server.errors import ProtocolError
from runserver_plus.server.request import MAX_HEAD, MAX_REQUEST_LINE, parse_head


def test_a_head_is_taken_once_whole_and_what_follows_stays() -> None:
    buffer = RequestBuffer()
    buffer.feed(b"\r\n\nGET / HTTP/1.1\r\nHost: x\r\n")
    assert buffer.take_head() is None
    buffer.feed(b"\r\nGET /next HTTP/1.1\r\n")

    assert buffer.take_head() == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert bool(buffer)
    assert buffer.first_line() == "GET /next HTTP/1.1"
    assert buffer.take_all() == b"GET /next HTTP/1.1\r\n"
    assert not buffer
    assert buffer.take_head() is None


def test_a_request_line_too_long_to_wait_for_is_414() -> None:
    buffer = RequestBuffer()
    buffer.feed(b"GET /" + b"a" * MAX_REQUEST_LINE)

    with pytest.raises(ProtocolError) as raised:
        buffer.take_head()
    assert raised.value.status == 414


def test_a_head_over_the_limit_is_431_even_when_its_end_came_too() -> None:
    buffer = RequestBuffer()
    field = b"X-A: " + b"v" * 1000 + b"\r\n"
    buffer.feed(b"GET / HTTP/1.1\r\n" + field * (MAX_HEAD // len(field) + 1) + b"\r\n")

    with pytest.raises(ProtocolError) as raised:
        buffer.take_head()
    assert raised.value.status == 431


@pytest.mark.parametrize(
    ("head", "asked"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: a, Close\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
    ],
)
def test_keep_alive_asked(head: bytes, asked: bool) -> None:
    request, _ = parse_head(head)

    assert keep_alive_asked(request) is asked


def test_the_servers_own_answer_closes_and_has_no_body_for_head() -> None:
    error = ProtocolError(400, "Bad request")

    full = error_response(error, "GET /x HTTP/1.1")
    head = error_response(error, "HEAD /x HTTP/1.1")

    assert full.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close\r\n" in full
    assert full.endswith(b"\r\n\r\n400 Bad Request\n\nBad request\n")
    assert head == full[: full.index(b"\r\n\r\n") + 4]


def test_first_line_and_tls() -> None:
    assert first_line(b"GET / HTTP/1.1\r\nHost: x\r\n") == "GET / HTTP/1.1"
    assert first_line(b"\xe9" * (LOGGED_LINE + 5)) == "\xe9" * LOGGED_LINE + "..."
    assert starts_with_tls(b"\x16\x03\x01\x02\x00")
    assert not starts_with_tls(b"GET / HTTP/1.1")

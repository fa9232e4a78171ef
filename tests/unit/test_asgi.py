"""Tier 1: the ASGI scope's pieces, built from a parsed request alone."""

from __future__ import annotations

import pytest

from runserver_plus.server.asgi_scope import (
    address,
    decode_path,
    http_scope,
    request_headers,
)
from runserver_plus.server.request import RequestHead, is_websocket_upgrade


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b"/plain/", "/plain/"),
        (b"/caf%C3%A9", "/café"),
        (b"/a%2Fb", "/a/b"),
        (b"/100%2525", "/100%25"),  # decoded once
        (b"/bad%FF", "/bad\ufffd"),
    ],
)
def test_path_is_percent_decoded_once_as_utf8(raw: bytes, path: str) -> None:
    assert decode_path(raw) == path


def test_headers_keep_their_bytes_and_order_without_underscored_names() -> None:
    headers = [(b"host", b"x"), (b"x_forwarded_for", b"evil"), (b"x-a", b"\xe9")]
    assert request_headers(headers, None) == [(b"host", b"x"), (b"x-a", b"\xe9")]


def test_a_decoded_chunked_body_is_announced_by_its_length() -> None:
    headers = [(b"host", b"x"), (b"transfer-encoding", b"chunked")]
    assert request_headers(headers, 11) == [
        (b"host", b"x"),
        (b"content-length", b"11"),
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (("127.0.0.1", 8000), ("127.0.0.1", 8000)),
        (("::1", 8000, 0, 0), ("::1", 8000)),
        ("/run/socket", None),
    ],
)
def test_address_of_a_socket(value: object, expected: object) -> None:
    assert address(value) == expected


def test_scope_of_an_absolute_form_target() -> None:
    request = RequestHead(
        b"GET", b"http://example.com//x?y=1", b"1.1", [(b"host", b"example.com")]
    )
    scope = http_scope(request, server=("127.0.0.1", 80), client=None)
    assert scope["path"] == "/x"
    assert scope["raw_path"] == b"/x"
    assert scope["query_string"] == b"y=1"
    assert scope["client"] is None
    assert scope["state"] == {}


@pytest.mark.parametrize(
    ("method", "upgrade", "expected"),
    [
        (b"GET", b"websocket", True),
        (b"GET", b"WebSocket", True),
        (b"GET", b"h2c", False),
        (b"POST", b"websocket", False),
    ],
)
def test_websocket_upgrade_is_a_get_that_asks_for_it(
    method: bytes, upgrade: bytes, expected: bool
) -> None:
    request = RequestHead(method, b"/", b"1.1", [(b"upgrade", upgrade)])
    assert is_websocket_upgrade(request) is expected

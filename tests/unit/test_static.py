"""Tier-1 units of the static files helpers: ranges, validators, paths, types."""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path

import pytest

from runserver_plus.static import (
    Unsatisfiable,
    content_type_for,
    etag_for,
    not_modified,
    parse_range,
    safe_relative_path,
)

UNSATISFIABLE = Unsatisfiable.RANGE
HUGE = "9" * 5000  # past Python's 4300-digit int() limit


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-3", 10, (0, 3)),
        ("bytes=2-", 10, (2, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)),
        ("bytes=5-100", 10, (5, 9)),
        ("bytes=9-9", 10, (9, 9)),
        ("bytes=0-0", 1, (0, 0)),
        ("BYTES=0-1", 10, (0, 1)),
        (" bytes=0-1 ", 10, (0, 1)),
        ("bytes= 0-1", 10, (0, 1)),
        ("bytes=00000000000000000000000005-6", 10, (5, 6)),
        (f"bytes=0-{HUGE}", 10, (0, 9)),
        (f"bytes=-{HUGE}", 10, (0, 9)),
        # Unsatisfiable: 416.
        ("bytes=10-", 10, UNSATISFIABLE),
        ("bytes=10-20", 10, UNSATISFIABLE),
        ("bytes=-0", 10, UNSATISFIABLE),
        ("bytes=0-", 0, UNSATISFIABLE),
        ("bytes=-5", 0, UNSATISFIABLE),
        (f"bytes={HUGE}-", 10, UNSATISFIABLE),
        # Invalid or several ranges: ignored, the whole file is sent.
        ("bytes=3-2", 10, None),
        ("bytes=-", 10, None),
        ("bytes=", 10, None),
        ("bytes=0-1,4-5", 10, None),
        ("bytes=0-1, 4-5", 10, None),
        ("bytes=0-1,", 10, None),
        ("items=0-1", 10, None),
        ("bytes 0-1", 10, None),
        ("bytes=a-b", 10, None),
        ("bytes=0x1-2", 10, None),
        ("bytes=1 - 2", 10, None),
        ("bytes=\u00b2-3", 10, None),  # a Unicode digit
        ("bytes=-1-2", 10, None),
        ("", 10, None),
    ],
)
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.fixture
def stat_of(tmp_path: Path):
    """Write ``data`` to a file with the given mtime in ns; return its stat."""

    def write(data: bytes, mtime_ns: int) -> os.stat_result:
        path = tmp_path / "f.txt"
        path.write_bytes(data)
        os.utime(path, ns=(mtime_ns, mtime_ns))
        return path.stat()

    return write


def test_etag_is_strong_and_carries_mtime_ns_and_size(stat_of):
    st = stat_of(b"hello", 1_700_000_000_123_456_789)
    assert etag_for(st) == f'"{1_700_000_000_123_456_789:x}-5"'


def test_etag_changes_within_one_second(stat_of):
    first = etag_for(stat_of(b"aaaa", 1_700_000_000_000_000_100))
    second = etag_for(stat_of(b"bbbb", 1_700_000_000_000_000_200))
    assert first != second


def test_etag_changes_with_size_alone(stat_of):
    assert etag_for(stat_of(b"a", 1_700_000_000 * 10**9)) != etag_for(
        stat_of(b"ab", 1_700_000_000 * 10**9)
    )


ETAG = '"18b-c"'
MTIME = 1_700_000_000  # Tue, 14 Nov 2023 22:13:20 GMT
SAME = "Tue, 14 Nov 2023 22:13:20 GMT"
EARLIER = "Tue, 14 Nov 2023 22:13:19 GMT"
LATER = "Tue, 14 Nov 2023 22:13:21 GMT"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, False),
        ({"HTTP_IF_NONE_MATCH": ETAG}, True),
        ({"HTTP_IF_NONE_MATCH": f"W/{ETAG}"}, True),  # weak comparison
        ({"HTTP_IF_NONE_MATCH": f'"other", {ETAG}'}, True),
        ({"HTTP_IF_NONE_MATCH": f'"a,b",W/{ETAG}'}, True),  # comma inside a tag
        ({"HTTP_IF_NONE_MATCH": "*"}, True),
        ({"HTTP_IF_NONE_MATCH": " * "}, True),
        ({"HTTP_IF_NONE_MATCH": '"other"'}, False),
        ({"HTTP_IF_NONE_MATCH": "18b-c"}, False),  # unquoted: not an entity-tag
        ({"HTTP_IF_NONE_MATCH": ""}, False),
        # If-Modified-Since, second resolution.
        ({"HTTP_IF_MODIFIED_SINCE": SAME}, True),
        ({"HTTP_IF_MODIFIED_SINCE": LATER}, True),
        ({"HTTP_IF_MODIFIED_SINCE": EARLIER}, False),
        ({"HTTP_IF_MODIFIED_SINCE": "Tuesday, 14-Nov-23 22:13:20 GMT"}, True),
        ({"HTTP_IF_MODIFIED_SINCE": "Tue Nov 14 22:13:20 2023"}, True),
        ({"HTTP_IF_MODIFIED_SINCE": "yesterday"}, False),
        ({"HTTP_IF_MODIFIED_SINCE": ""}, False),
        ({"HTTP_IF_MODIFIED_SINCE": "Tue, 14 Nov 99999 22:13:20 GMT"}, False),
        # If-None-Match present: If-Modified-Since is not evaluated.
        ({"HTTP_IF_NONE_MATCH": '"other"', "HTTP_IF_MODIFIED_SINCE": LATER}, False),
        ({"HTTP_IF_NONE_MATCH": ETAG, "HTTP_IF_MODIFIED_SINCE": EARLIER}, True),
    ],
)
def test_not_modified(headers, expected):
    assert not_modified(headers, ETAG, MTIME) is expected


@pytest.mark.parametrize(
    "path",
    [
        "a.txt",
        "css/site.css",
        "a%41.txt",
        "a%2e%2e",
        "..a",
        "a..",
        ".hidden",
        "a/.well-known/b",
        "a b.txt",
        "h\u00e9llo/w\u00f6rld.txt",
        "a/x:y.txt",  # only a leading drive is refused
    ],
)
def test_safe_relative_path_accepts(path):
    assert safe_relative_path(path) == path


@pytest.mark.parametrize(
    "path",
    [
        "",
        "..",
        ".",
        "...",
        ". .",
        " ",
        "../secret",
        "a/../../secret",
        "a/..",
        "./a",
        "a/./b",
        "a/.../b",
        ".. /secret",
        "/etc/passwd",
        "//server/share/x",
        "a//b",
        "a/",
        "..\\secret",
        "a\\..\\..\\secret",
        "a\\b",
        "a\x00b",
        "hello.txt\x00.png",
        "C:/Windows/win.ini",
        "c:secret",
        "x:y.txt",
        "C:\\Windows",
    ],
)
def test_safe_relative_path_refuses(path):
    assert safe_relative_path(path) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("app.js", ("text/javascript", None)),
        ("APP.JS", ("text/javascript", None)),
        ("app.mjs", ("text/javascript", None)),
        ("app.wasm", ("application/wasm", None)),
        ("img.webp", ("image/webp", None)),
        ("img.avif", ("image/avif", None)),
        ("font.woff2", ("font/woff2", None)),
        ("font.woff", ("font/woff", None)),
        ("app.js.map", ("application/json", None)),
        ("data.json", ("application/json", None)),
        ("logo.svg", ("image/svg+xml", None)),
        ("site.css", ("text/css", None)),
        ("photo.jpg", ("image/jpeg", None)),
        ("index.html", ("text/html", None)),
        ("notes.txt", ("text/plain", None)),
        # Precompressed: the base type plus the coding, as Django sends it.
        ("notes.txt.gz", ("text/plain", "gzip")),
        ("NOTES.TXT.GZ", ("text/plain", "gzip")),
        ("app.js.gz", ("text/javascript", "gzip")),
        ("site.css.br", ("text/css", "br")),
        ("logo.svgz", ("image/svg+xml", "gzip")),
        ("backup.tar.gz", ("application/x-tar", "gzip")),
        # Codings browsers cannot decode, or no base type: the archive itself.
        ("backup.tar.bz2", ("application/x-bzip", None)),
        ("backup.tar.xz", ("application/x-xz", None)),
        ("data.gz", ("application/gzip", None)),
        # Unknown.
        ("README", ("application/octet-stream", None)),
        ("blob.rsp-unknown-ext", ("application/octet-stream", None)),
    ],
)
def test_content_type_for(name, expected):
    assert content_type_for(name) == expected


def test_content_type_for_leaves_the_global_mimetypes_alone():
    mimetypes.guess_type("x.txt")  # let the module initialise itself first
    before = (dict(mimetypes.types_map), dict(mimetypes.encodings_map))
    content_type_for("x.avif")
    content_type_for("x.mjs")
    assert (dict(mimetypes.types_map), dict(mimetypes.encodings_map)) == before

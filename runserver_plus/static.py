"""Serve the staticfiles finders' files under STATIC_URL in front of the WSGI app."""

from __future__ import annotations

import enum
import functools
import mimetypes
import ntpath
import os
import posixpath
import re
import stat
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING

from django.contrib.staticfiles import finders
from django.core import signals
from django.core.exceptions import SuspiciousFileOperation, SuspiciousOperation
from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIRequest, get_script_name
from django.http import Http404
from django.urls import set_script_prefix
from django.utils.http import (
    content_disposition_header,
    http_date,
    parse_http_date_safe,
)

from runserver_plus.server.wsgi import FileWrapper

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

DIRECTORY_MESSAGE = "Directory indexes are not allowed here."

# Python's table predates these, or names them differently on some platforms.
_TYPE_OVERRIDES = {
    ".css": "text/css",
    ".js": "text/javascript",
    ".json": "application/json",
    ".map": "application/json",
    ".mjs": "text/javascript",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
}
# Codings browsers decode. For the others ("bzip2", "xz", "compress") Django
# sends a Content-Encoding no browser understands; serve them as the archive
# they are, with FileResponse's types.
_CONTENT_CODINGS = frozenset({"gzip", "br"})
_ARCHIVE_TYPES = {
    "br": "application/x-brotli",
    "bzip2": "application/x-bzip",
    "compress": "application/x-compress",
    "gzip": "application/gzip",
    "xz": "application/x-xz",
}
_RANGE_RE = re.compile(r"bytes=[ \t]*(\d*)-(\d*)", re.ASCII | re.IGNORECASE)
_ETAG_RE = re.compile(r'(?:W/)?("[^"]*")')
# Larger numbers exceed any file; capping them keeps int() cheap and bounded.
_MAX_DIGITS = 18
_NS_PER_S = 1_000_000_000


class Unsatisfiable(enum.Enum):
    """What ``parse_range`` returns for a range that starts past the end."""

    RANGE = "unsatisfiable"


@functools.cache
def _mime_types() -> mimetypes.MimeTypes:
    # A private table: Python's defaults only, never the registry or
    # /etc/mime.types, and nothing we add leaks into the global module.
    return mimetypes.MimeTypes()


def content_type_for(name: str) -> tuple[str, str | None]:
    """Return the Content-Type and the Content-Encoding (or None) for a file name."""
    base = name.lower()  # mimetypes matches encodings case-sensitively
    guessed, encoding = _mime_types().guess_type(base)
    if guessed is None:
        # Types the project registered with mimetypes.add_type(), or the system's.
        guessed = mimetypes.guess_type(base)[0]
    if encoding is not None:
        base = posixpath.splitext(base)[0]
    content_type = _TYPE_OVERRIDES.get(posixpath.splitext(base)[1], guessed)
    if encoding is None:
        return content_type or "application/octet-stream", None
    if encoding in _CONTENT_CODINGS and content_type is not None:
        return content_type, encoding
    return _ARCHIVE_TYPES.get(encoding, "application/octet-stream"), None


def safe_relative_path(path: str) -> str | None:
    """Return ``path`` if it names a file below a root, else None.

    ``path`` is the decoded URL path after the static prefix. Rejected:
    empty, absolute or drive paths, backslashes, NUL bytes, and any segment
    that is empty or only dots and spaces (``..``, ``.``, ``...``, which
    Windows also strips to a parent reference).
    """
    if "\\" in path or "\x00" in path or ntpath.splitdrive(path)[0]:
        return None
    if any(not segment.strip(". ") for segment in path.split("/")):
        return None
    return path


def _to_int(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def parse_range(header: str, size: int) -> tuple[int, int] | Unsatisfiable | None:
    """Parse a single-range ``Range`` header against a file of ``size`` bytes.

    Return ``(start, end)`` (inclusive), ``Unsatisfiable.RANGE`` for a range
    past the end (answer 416), or None when the header is invalid or asks
    for several ranges (answer with the whole file).
    """
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first:
        start = _to_int(first)
        if last and _to_int(last) < start:
            return None
        if start >= size:
            return Unsatisfiable.RANGE
        return start, min(_to_int(last), size - 1) if last else size - 1
    if not last:
        return None
    suffix = _to_int(last)
    if suffix == 0 or size == 0:
        return Unsatisfiable.RANGE
    return max(size - suffix, 0), size - 1


def etag_for(st: os.stat_result) -> str:
    """Return a strong ETag that changes with any edit, even within one second."""
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


def not_modified(environ: WSGIEnvironment, etag: str, mtime: int) -> bool:
    """Whether a GET or HEAD may be answered 304 (RFC 9110 §13.2.2).

    ``mtime`` is the file's modification time in whole seconds.
    """
    if_none_match: str | None = environ.get("HTTP_IF_NONE_MATCH")
    if if_none_match is not None:
        if if_none_match.strip() == "*":
            return True
        # Weak comparison: W/"x" matches "x".
        return etag in _ETAG_RE.findall(if_none_match)
    since = parse_http_date_safe(environ.get("HTTP_IF_MODIFIED_SINCE") or "")
    return since is not None and mtime <= since


def _if_range_matches(value: str | None, etag: str, mtime: int) -> bool:
    if value is None:
        return True
    value = value.strip()
    if value.startswith(("W/", '"')):
        return value == etag  # strong comparison: a weak tag never matches
    return parse_http_date_safe(value) == mtime


def _decoded(raw: str) -> str | None:
    """The path as text: PATH_INFO's latin-1 read as UTF-8; None if it is not."""
    try:
        # The server already percent-decoded the path once; never again.
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return None


def _find(relative: str) -> str | None:
    safe = safe_relative_path(relative)
    if safe is None:
        return None
    try:
        return finders.find(safe)
    except (SuspiciousFileOperation, ValueError, OSError):
        return None


def _not_found(
    environ: WSGIEnvironment, start_response: StartResponse, message: str
) -> Iterable[bytes]:
    """Answer 404 as Django's static handler does, plus a Content-Length."""
    set_script_prefix(get_script_name(environ))
    signals.request_started.send(sender=StaticFilesApp, environ=environ)
    request = WSGIRequest(environ)
    try:
        response = response_for_exception(request, Http404(message))
    except SuspiciousOperation as exc:
        # The technical page shows the absolute URL, so an unlisted Host raises
        # DisallowedHost here; answer 400 as a view would, not a 500 as Django.
        response = response_for_exception(request, exc)
    if not response.streaming:
        # Without it, as in Django, the connection could not be kept alive.
        response["Content-Length"] = str(len(response.content))
    headers = [
        *response.items(),
        *(("Set-Cookie", c.OutputString()) for c in response.cookies.values()),
    ]
    try:
        start_response(f"{response.status_code} {response.reason_phrase}", headers)
    except BaseException:
        response.close()
        raise
    # Closing the response fires request_finished, as Django's handler does.
    return response


class StaticFilesApp:
    """WSGI middleware serving static files under ``base_path``, the path of STATIC_URL.

    Files come from the staticfiles finders on every request, so files added
    while the server runs are served without a restart. Every request whose
    path does not start with ``base_path`` goes to ``app`` unchanged. Only GET
    and HEAD are served; conditional requests and single ranges are honoured.
    """

    def __init__(self, app: WSGIApplication, base_path: str) -> None:
        self.app = app
        self.base_path = base_path
        # PATH_INFO carries the URL's bytes as latin-1 (PEP 3333); so must the prefix.
        self._prefix = base_path.encode("utf-8").decode("latin-1")

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        path_info: str = environ.get("PATH_INFO", "")
        if not path_info.startswith(self._prefix):
            return self.app(environ, start_response)
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response(
                "405 Method Not Allowed",
                [("Allow", "GET, HEAD"), ("Content-Length", "0")],
            )
            return []
        raw = path_info[len(self._prefix) :]
        relative = _decoded(raw)
        # Each 404 is built outside an except block: whatever Django logs
        # while building it must not chain to our own exception.
        if relative is None:
            return _not_found(environ, start_response, f"'{raw}' could not be found")
        if not relative or relative.endswith("/"):
            return _not_found(environ, start_response, DIRECTORY_MESSAGE)
        missing = f"'{relative}' could not be found"
        found = _find(relative)
        try:
            mode = os.stat(found).st_mode if found is not None else 0
        except (OSError, ValueError):
            mode = 0
        # Only regular files: opening a FIFO, say, would block the thread.
        if found is None or not stat.S_ISREG(mode):
            message = DIRECTORY_MESSAGE if stat.S_ISDIR(mode) else missing
            return _not_found(environ, start_response, message)
        file: IO[bytes] | None
        try:
            file = open(found, "rb")  # noqa: SIM115 (the FileWrapper closes it)
        except OSError:
            file = None
        if file is None:
            return _not_found(environ, start_response, missing)
        try:
            name = os.path.basename(relative)
            return self._serve(environ, start_response, file, name)
        except BaseException:
            file.close()
            raise

    def _serve(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        file: IO[bytes],
        name: str,
    ) -> Iterable[bytes]:
        st = os.fstat(file.fileno())
        mtime = st.st_mtime_ns // _NS_PER_S
        etag = etag_for(st)
        validators = [
            ("ETag", etag),
            ("Last-Modified", http_date(mtime)),
            ("Cache-Control", "no-cache"),
        ]
        if not_modified(environ, etag, mtime):
            file.close()
            start_response("304 Not Modified", validators)
            return []
        size = st.st_size
        start, length, status = 0, size, "200 OK"
        content_type, encoding = content_type_for(name)
        headers = [("Content-Type", content_type)]
        if encoding is not None:
            headers.append(("Content-Encoding", encoding))
        disposition = content_disposition_header(False, name)
        if disposition is not None:
            headers.append(("Content-Disposition", disposition))
        headers += [*validators, ("Accept-Ranges", "bytes")]
        # RFC 9110 §14.2: Range is defined for GET only; HEAD gets the 200.
        range_header: str | None = environ.get("HTTP_RANGE")
        if (
            range_header is not None
            and environ["REQUEST_METHOD"] == "GET"
            and _if_range_matches(environ.get("HTTP_IF_RANGE"), etag, mtime)
        ):
            byte_range = parse_range(range_header, size)
            if isinstance(byte_range, Unsatisfiable):
                file.close()
                refusal = [
                    ("Content-Range", f"bytes */{size}"),
                    ("Content-Length", "0"),
                ]
                start_response("416 Range Not Satisfiable", [*refusal, *validators])
                return []
            if byte_range is not None:
                start, end = byte_range
                length, status = end - start + 1, "206 Partial Content"
                headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        headers.append(("Content-Length", str(length)))
        start_response(status, headers)
        if environ["REQUEST_METHOD"] == "HEAD":
            file.close()
            return []
        file.seek(start)
        return FileWrapper(file, length=length)

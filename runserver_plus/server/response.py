"""One response: run the WSGI app, frame what it returns and write it."""

from __future__ import annotations

import http
import os
from collections.abc import Callable, Iterable
from typing import IO, Protocol

from runserver_plus.server import log
from runserver_plus.server.errors import ClientGone
from runserver_plus.server.wsgi import (
    ExcInfo,
    FileWrapper,
    WSGIApp,
    WSGIEnviron,
    http_date,
    parse_status,
    response_headers,
)

_NO_BODY_STATUSES = frozenset({204, 304})
_APP_ERROR_BODY = b"A server error occurred.  Please contact the administrator."
_CHUNKED_END = b"0\r\n\r\n"


def closing_response(
    status: int, content_type: str, body: bytes, *, head: bool = False
) -> bytes:
    """A whole response the server writes itself, after which it closes the
    connection (the request may not have been read to its end). ``head``
    leaves the body out, keeping its length."""
    head_lines = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
    ).encode("ascii")
    return head_lines + b"Date: " + http_date() + b"\r\n\r\n" + (b"" if head else body)


def frame(*, sized: bool, http11: bool, keep_alive: bool) -> tuple[bytes, bool, bool]:
    """How a response's body is delimited: the framing header lines, whether
    the body goes chunked, and whether the connection stays open. A body of
    unknown length goes chunked to HTTP/1.1, and ends with the connection to
    HTTP/1.0. Both drivers (response.py, asgi_cycle.py) frame this way."""
    chunked = not sized and http11
    if not sized and not http11:
        keep_alive = False  # the end of the body is the close
    framing = b"Transfer-Encoding: chunked\r\n" if chunked else b""
    if not keep_alive:
        framing += b"Connection: close\r\n"
    elif not http11:
        framing += b"Connection: keep-alive\r\n"
    return framing, chunked, keep_alive


class FileSpan:
    """Bytes of a file for ``socket.sendfile``, in a list of parts to write."""

    def __init__(self, file: IO[bytes], offset: int, count: int) -> None:
        self.file = file
        self.offset = offset
        self.count = count


class Writer(Protocol):
    def send(self, parts: Iterable[bytes | FileSpan]) -> None:
        """Write the parts in order; raise ``ClientWentAway`` on failure."""

    def keeps_alive(self) -> bool:
        """Whether the connection may still carry another request (not once
        the server stops)."""


class Response:
    """Runs the app for one request and writes what it returns.

    Framing is ours (h11 parses the requests): a declared Content-Length is
    enforced, an unknown length goes chunked to HTTP/1.1 clients and is
    delimited by closing the connection for HTTP/1.0 ones, HEAD, 1xx, 204 and
    304 responses carry no body. Small responses go out in one write.
    """

    def __init__(
        self, writer: Writer, *, head: bool, http11: bool, keep_alive: bool
    ) -> None:
        self.writer = writer
        self.head = head
        self.http11 = http11
        #: Whether the connection may carry another request afterwards.
        self.keep_alive = keep_alive
        self.status = 0
        self.sent = 0  # body bytes written
        self.completed = False
        self._reason = b""
        self._headers: list[tuple[str, str]] | None = None
        self._pending_head: bytes | None = None  # built, not yet written
        self._head_sent = False
        self._length: int | None = None  # declared Content-Length
        self._chunked = False
        self._no_body = False

    # WSGI callables --------------------------------------------------------

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self._head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self._headers is not None:
            raise AssertionError("start_response() called twice without exc_info")
        self.status, self._reason = parse_status(status)
        self._headers = list(headers)
        self._pending_head = None
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy ``write()`` callable of PEP 3333."""
        self._body([data])

    # Running ---------------------------------------------------------------

    def run(self, app: WSGIApp, environ: WSGIEnviron) -> None:
        try:
            result = app(environ, self.start_response)
        except Exception:  # noqa: BLE001 - any app error becomes a 500
            log.log_app_exception(_line(environ))
            self._error_500()
            return
        try:
            self._send_result(result)
        except ClientGone:
            raise
        except Exception:  # noqa: BLE001 - a failure midway must not kill the server
            log.log_app_exception(_line(environ))
            if not self._head_sent:
                self._error_500()
            else:
                # Not completed: the connection closes, so the client sees
                # a short or unterminated body, never a silent truncation.
                self.keep_alive = False
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def _send_result(self, result: Iterable[bytes]) -> None:
        if isinstance(result, FileWrapper) and not self.head:
            span = result.sendfile_span()
            if span is not None:
                self._send_file(result, *span)
                return
        if (
            isinstance(result, (list, tuple))
            and len(result) == 1
            and self._headers is not None
            and not any(name.lower() == "content-length" for name, _ in self._headers)
        ):
            # As wsgiref: a one-piece body has a known length, so the
            # connection can be kept alive.
            self._headers.append(("Content-Length", str(len(result[0]))))
        self._body(result)
        self._finish()

    # Framing -----------------------------------------------------------------

    def _build_head(self) -> None:
        if self._headers is None:
            raise AssertionError("the application did not call start_response()")
        if self.status < 200:
            raise AssertionError(f"WSGI applications cannot send status {self.status}")
        headers, app_close, self._length = response_headers(self._headers)
        self._no_body = (
            self.head or self.status in _NO_BODY_STATUSES or self.status < 200
        )
        if app_close or not self.writer.keeps_alive():
            self.keep_alive = False
        framing, self._chunked, self.keep_alive = frame(
            sized=self._no_body or self._length is not None,
            http11=self.http11,
            keep_alive=self.keep_alive,
        )
        self._pending_head = b"HTTP/1.1 %d %s\r\n%s%s\r\n" % (
            self.status,
            self._reason,
            headers,
            framing,
        )

    def _frame(self, chunk: bytes) -> bytes:
        if self._chunked:
            return b"%x\r\n%s\r\n" % (len(chunk), chunk)
        if self._length is not None and self.sent + len(chunk) > self._length:
            raise ValueError(
                f"the response body is longer than its Content-Length ({self._length})"
            )
        return chunk

    def _take_head(self) -> bytes:
        head = self._pending_head or b""
        self._pending_head, self._head_sent = None, True
        return head

    def _body(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            if not self._head_sent and self._pending_head is None:
                self._build_head()
            if not chunk or self._no_body:
                continue
            data = self._frame(chunk)
            self.writer.send(
                [self._take_head(), data] if not self._head_sent else [data]
            )
            self.sent += len(chunk)

    def _finish(self) -> None:
        if not self._head_sent and self._pending_head is None:
            self._build_head()
        if self._length is not None and self.sent < self._length and not self._no_body:
            raise ValueError(
                f"the response body is shorter than its Content-Length ({self._length})"
            )
        if self._chunked:
            self.writer.send([self._take_head(), _CHUNKED_END])
        elif not self._head_sent:
            self.writer.send([self._take_head()])
        self.completed = True

    def _send_file(self, wrapper: FileWrapper, offset: int, length: int | None) -> None:
        assert self._headers is not None, (
            "the application did not call start_response()"
        )
        declared = next(
            (v for n, v in self._headers if n.lower() == "content-length"), None
        )
        if length is None:
            length = (
                int(declared) if declared is not None else _remaining(wrapper, offset)
            )
        if declared is None:
            self._headers.append(("Content-Length", str(length)))
        self._build_head()
        if self._no_body:
            self._finish()
            return
        if self._length is not None and length > self._length:
            length = self._length  # never more than announced
        self.writer.send(
            [self._take_head(), FileSpan(wrapper.filelike, offset, length)]
        )
        self.sent += length
        self._finish()

    def _error_500(self) -> None:
        """Answer 500 for an app that failed before any byte went out; close
        after it, since a crashed app may have left the request body half read."""
        self.status, self.keep_alive = 500, False
        response = closing_response(500, "text/plain", _APP_ERROR_BODY, head=self.head)
        self.writer.send([response])
        self.sent = 0 if self.head else len(_APP_ERROR_BODY)
        self.completed = True


def _line(environ: WSGIEnviron) -> str:
    query = environ["QUERY_STRING"]
    path = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}"
    return f"{path}?{query}" if query else path


def _remaining(wrapper: FileWrapper, offset: int) -> int:
    return max(0, os.fstat(wrapper.filelike.fileno()).st_size - offset)

"""The request log: access and error lines on ``django.server``, in Django's format."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

server_logger = logging.getLogger("django.server")

_MONTHS = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)  # fmt: skip

TLS_MESSAGE = (
    "You're accessing the development server over HTTPS, but it only supports HTTP."
)


#: The last ``server_time()`` computed: (second, time zone names, text).
_server_time_cache: tuple[int, tuple[str, str], str] = (-1, ("", ""), "")


def server_time(now: float | None = None) -> str:
    """``dd/Mon/YYYY HH:MM:SS`` in local time with English month names, as Django.

    Computed once a second: ``time.localtime()`` asks the C library to look
    at the time zone again, a sixth of what logging a request costs.
    """
    global _server_time_cache  # noqa: PLW0603 - a per-second cache for all threads
    second = int(time.time() if now is None else now)
    cached = _server_time_cache
    if cached[0] == second and cached[1] == time.tzname:
        return cached[2]
    t = time.localtime(second)
    text = (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    )
    _server_time_cache = (second, time.tzname, text)
    return text


def escape(text: str) -> str:
    """Escape control and non-ASCII characters as Django does since 5.2.3."""
    return text.encode("unicode_escape").decode("ascii")


def _log(
    level: int,
    message: str,
    *args: object,
    status: int | None,
    request: Any,
    now: float | None = None,
) -> None:
    """A record on the ``django.server`` logger, with Django's extras.

    Passed to ``handle()``, as ``Logger.log()`` does, without its walk up the
    stack to find the caller: that walk was a fifth of the cost of each
    access line. Records name this module and no line.
    """
    if not server_logger.isEnabledFor(level):
        return
    server_logger.handle(
        _record(level, message, args, status=status, request=request, now=now)
    )


def _record(
    level: int,
    message: str,
    args: tuple[object, ...],
    *,
    status: int | None,
    request: Any,
    now: float | None,
) -> logging.LogRecord:
    extra: dict[str, Any] = {"request": request, "server_time": server_time(now)}
    if status is not None:
        extra["status_code"] = status
    return server_logger.makeRecord(
        server_logger.name, level, __file__, 0, message, args, None, None, extra
    )


def _level_for(status: int) -> int:
    if status >= 500:
        return logging.ERROR
    if status >= 400:
        return logging.WARNING
    return logging.INFO


#: The access line's format: Django's ``"<line>" <status> <size>``, plus the time.
ACCESS_FORMAT = '"%s" %s %s %s'
#: The environ key under which a layer in front of the application leaves an
#: ``AccessNote`` for the request's access line.
ACCESS_NOTE = "runserver_plus.access_note"


@dataclasses.dataclass(frozen=True)
class NoteLine:
    """One line that follows an access line, at its own level."""

    level: int
    text: str


@dataclasses.dataclass(frozen=True)
class AccessNote:
    """What a layer adds to one request's access line: ``suffix`` after the
    duration, and ``lines`` logged right after it, in the line's colour."""

    suffix: str
    lines: tuple[NoteLine, ...] = ()


def log_request(
    request_line: str,
    status: int,
    size: int | None,
    duration: float,
    request: Any = None,
    *,
    now: float | None = None,
    note: AccessNote | None = None,
) -> None:
    """Log one access line: Django's ``"<line>" <status> <size>`` plus the time taken.

    ``size`` is the number of body bytes sent, ``None`` for errors the server
    generated itself (Django prints ``-``). ``duration`` is in seconds;
    ``now`` the time shown (``time.time()``, by default the present).
    ``note`` adds to the line and follows it (see ``AccessNote``).
    """
    level = _level_for(status)
    if not server_logger.isEnabledFor(level):
        return
    args = (
        escape(request_line),
        str(status),
        "-" if size is None else str(size),
        format_duration(duration),
    )
    if note is not None:
        _log_noted(level, args, note, status=status, request=request, now=now)
        return
    server_logger.handle(
        _record(level, ACCESS_FORMAT, args, status=status, request=request, now=now)
    )


def _log_noted(
    level: int,
    args: tuple[str, ...],
    note: AccessNote,
    *,
    status: int,
    request: Any,
    now: float | None,
) -> None:
    """The access line with its note, and the note's lines. Each line
    carries the status, so Django's formatter colours it as the line."""
    server_logger.handle(
        _record(
            level,
            ACCESS_FORMAT + " %s",
            (*args, note.suffix),
            status=status,
            request=request,
            now=now,
        )
    )
    for line in note.lines:
        _log(line.level, "%s", line.text, status=status, request=request, now=now)


def log_protocol_error(status: int, reason: str, request: Any = None) -> None:
    """The uncoloured ``code NNN, message ...`` line Django logs for its own errors."""
    _log(
        logging.INFO,
        "code %d, message %s",
        status,
        escape(reason),
        status=None,
        request=request,
    )


def log_tls_attempt(request: Any = None) -> None:
    """Tell the developer that a browser spoke HTTPS to the plain-HTTP port."""
    _log(logging.ERROR, TLS_MESSAGE, status=500, request=request)


def log_broken_pipe(peer: object) -> None:
    """Django's line for a client that went away mid-conversation."""
    server_logger.info("- Broken pipe from %s", peer)


def log_accept_paused(error: OSError) -> None:
    """The process ran out of file descriptors (or memory) for a connection."""
    _log(
        logging.WARNING,
        "Cannot accept connections for now (%s); they wait until others close.",
        error.strerror or error,
        status=None,
        request=None,
    )


def log_app_exception(request_line: str) -> None:
    """Log the exception being handled, raised by the application outside Django's
    own handling (middleware-free WSGI wrappers, streaming generators)."""
    server_logger.error(
        "Exception while serving %s",
        escape(request_line),
        exc_info=True,
        extra={"server_time": server_time(), "status_code": 500},
    )


def format_duration(seconds: float) -> str:
    """A short human duration: ``0.4ms``, ``12ms``, ``1.2s``."""
    ms = seconds * 1000.0
    if ms < 9.95:  # what rounds to 10.0 reads better as 10ms
        return f"{ms:.1f}ms"
    if ms < 999.5:
        return f"{ms:.0f}ms"
    return f"{seconds:.1f}s"

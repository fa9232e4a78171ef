"""Console output: request log lines in Django's format, banner extras, colours."""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import sys
import time
from collections.abc import Iterable
from typing import Any

import django.utils.log
from django.utils.log import ServerFormatter

server_logger = logging.getLogger("django.server")

_MONTHS = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)  # fmt: skip

# Django's runserver sees HTTPS on its plain port as a 4xx from a request line
# that starts with a TLS handshake record (0x16) of version 3.x.
TLS_HANDSHAKE_PREFIX = b"\x16\x03"
TLS_MESSAGE = (
    "You're accessing the development server over HTTPS, but it only supports HTTP."
)


def enable_windows_colours() -> None:
    """Let Windows consoles render ANSI colours (a no-op elsewhere)."""
    if sys.platform == "win32":  # pragma: no cover - not tested on these machines
        import colorama  # noqa: PLC0415

        colorama.just_fix_windows_console()


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
#: The ``django.server`` format of Django's ``DEFAULT_LOGGING``.
DJANGO_SERVER_FORMAT = "[{server_time}] {message}"


def log_request(
    request_line: str,
    status: int,
    size: int | None,
    duration: float,
    request: Any = None,
    *,
    now: float | None = None,
) -> None:
    """Log one access line: Django's ``"<line>" <status> <size>`` plus the time taken.

    ``size`` is the number of body bytes sent, ``None`` for errors the server
    generated itself (Django prints ``-``). ``duration`` is in seconds;
    ``now`` the time shown (``time.time()``, by default the present).
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
    handler = _default_handler(level)
    if handler is None:  # isEnabledFor() was asked above: straight to handle()
        server_logger.handle(
            _record(level, ACCESS_FORMAT, args, status=status, request=request, now=now)
        )
        return
    # What logging would write, without the LogRecord, the formatter's pass
    # over the record's dict and the handler's layers: 60% of the cost of
    # the line, 7% of the cost of a request (callgrind).
    try:
        style = handler.formatter.style  # type: ignore[union-attr]
        line = (
            f"[{server_time(now)}] {_coloured(style, status, ACCESS_FORMAT) % args}"
            f"{handler.terminator}"
        )
        with handler.lock:  # type: ignore[union-attr]
            handler.stream.write(line)
            handler.flush()
    except RecursionError:  # pragma: no cover - as logging.StreamHandler.emit
        raise
    except Exception:  # noqa: BLE001 - reported as logging reports it
        handler.handleError(
            _record(level, ACCESS_FORMAT, args, status=status, request=request, now=now)
        )


#: The files that define the methods an access line goes through in logging.
_LOGGING_FILES = frozenset(
    {
        logging.getLogger.__code__.co_filename,
        django.utils.log.configure_logging.__code__.co_filename,
    }
)
#: Their names, which the objects' own attributes must not shadow.
_LOGGING_METHODS = frozenset(
    {
        "handle",
        "callHandlers",
        "makeRecord",
        "filter",
        "emit",
        "format",
        "flush",
        "formatMessage",
    }
)
#: What ``_logging_is_standard()`` last found standard (see there).
_verified: tuple[object, ...] = ()


def _logging_is_standard(
    logger: logging.Logger, handler: logging.Handler, formatter: logging.Formatter
) -> bool:
    """Whether nothing replaced a method a record goes through with the
    default configuration: not a wrapper installed on the classes (error
    trackers wrap ``Logger.callHandlers``), nor an attribute of the objects.

    What was found standard is remembered: the objects, how many attributes
    each has (one added in place of a method changes that) and the methods.
    """
    global _verified  # noqa: PLW0603 - a cache for all threads
    logger_class, handler_class = logging.Logger, logging.StreamHandler
    state = (
        len(logger.__dict__),
        len(handler.__dict__),
        len(formatter.__dict__),
        logger,
        handler,
        formatter,
        logger_class.handle,
        logger_class.callHandlers,
        logger_class.makeRecord,
        handler_class.handle,
        handler_class.filter,
        handler_class.emit,
        handler_class.format,
        handler_class.flush,
        ServerFormatter.format,
        ServerFormatter.formatMessage,
        logging.StrFormatStyle.format,
    )
    if state == _verified:
        return True
    names = _LOGGING_METHODS
    if not (
        names.isdisjoint(logger.__dict__)
        and names.isdisjoint(handler.__dict__)
        and names.isdisjoint(formatter.__dict__)
    ):
        return False
    if all(
        getattr(getattr(method, "__code__", None), "co_filename", None)
        in _LOGGING_FILES
        for method in state[6:]
    ):
        _verified = state
        return True
    return False


def _default_handler(level: int) -> logging.StreamHandler[Any] | None:
    """The handler of ``django.server`` when it is configured as Django's default.

    That is: the standard logger and record classes, with their methods as
    logging and Django define them, no filters, no propagation, and one plain
    ``StreamHandler`` with Django's ``ServerFormatter`` and format. Then the
    line logging writes is known without going through it, and
    ``log_request()`` writes it to that handler's stream itself. Any other
    configuration (``LOGGING``, a test's handler, a filter) takes the full way.
    """
    logger = server_logger
    if (
        logger.filters
        or logger.propagate
        or logger.disabled
        or type(logger) is not logging.Logger
    ):
        return None
    handlers = logger.handlers
    if len(handlers) != 1:
        return None
    handler = handlers[0]
    formatter = handler.formatter
    if (
        type(handler) is not logging.StreamHandler
        or handler.filters
        or level < handler.level
        or type(formatter) is not ServerFormatter
        or formatter._fmt != DJANGO_SERVER_FORMAT
        or type(formatter._style) is not logging.StrFormatStyle
        or formatter._style._fmt != DJANGO_SERVER_FORMAT
        or logging.getLogRecordFactory() is not logging.LogRecord
        or not _logging_is_standard(logger, handler, formatter)
    ):
        return None
    return handler


def _coloured(style: Any, status: int, text: str) -> str:
    """``text`` in the colour Django's ``ServerFormatter`` gives ``status``."""
    if 200 <= status < 300:
        return str(style.HTTP_SUCCESS(text))
    if 100 <= status < 200:
        return str(style.HTTP_INFO(text))
    if status == 304:
        return str(style.HTTP_NOT_MODIFIED(text))
    if 300 <= status < 400:
        return str(style.HTTP_REDIRECT(text))
    if status == 404:
        return str(style.HTTP_NOT_FOUND(text))
    if 400 <= status < 500:
        return str(style.HTTP_BAD_REQUEST(text))
    return str(style.HTTP_SERVER_ERROR(text))


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


# --- Banner extras -----------------------------------------------------------

_SIOCGIFADDR = 0x8915  # Linux ioctl: the IPv4 address of an interface


def _linux_ipv4_addresses() -> Iterable[str]:
    import fcntl  # noqa: PLC0415 - POSIX only

    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:  # pragma: no cover - platforms without if_nameindex
        return
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for name in names:
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
            except OSError:
                continue  # interface without an IPv4 address
            yield socket.inet_ntoa(answer[20:24])


def _linux_ipv6_addresses() -> Iterable[str]:
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as table:
            for line in table:
                raw = line.split()[0]
                yield str(ipaddress.IPv6Address(bytes.fromhex(raw)))
    except OSError:  # pragma: no cover - no IPv6 or not Linux
        return


def _resolved_addresses(family: socket.AddressFamily) -> Iterable[str]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, family)
    except OSError:
        return
    for info in infos:
        yield str(info[4][0])


def reachable_addresses(ipv6: bool) -> list[str]:
    """Addresses of this machine a wildcard-bound server can be reached at.

    Loopback first, then the others sorted; link-local IPv6 addresses are left
    out because a browser needs a zone id to use them.
    """
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    found: set[str] = set(_resolved_addresses(family))
    if sys.platform.startswith("linux"):
        found.update(_linux_ipv6_addresses() if ipv6 else _linux_ipv4_addresses())
    found.add("::1" if ipv6 else "127.0.0.1")
    addresses = [ipaddress.ip_address(a.split("%")[0]) for a in found]
    usable = [a for a in addresses if not a.is_link_local]
    return [str(a) for a in sorted(set(usable), key=lambda a: (not a.is_loopback, a))]


def wildcard_banner(ipv6: bool, port: int, scheme: str = "http") -> str:
    """The extra banner lines for a server bound to every interface."""
    lines = ["The server listens on every interface; it can be reached at:"]
    for address in reachable_addresses(ipv6):
        host = f"[{address}]" if ":" in address else address
        lines.append(f"  {scheme}://{host}:{port}/")
    return "\n".join(lines)


WILDCARD_WARNING = (
    "WARNING: Other machines on your network can reach this server. With "
    "DEBUG=True they see tracebacks and settings on error pages; bind to "
    "127.0.0.1 unless you need this."
)


def trust_line(*, trusted: bool, local_ca: str) -> str:
    """The banner's HTTPS line: does this system trust what the server presents?"""
    if local_ca:
        if trusted:
            return f"HTTPS: the local certificate authority {local_ca} is trusted."
        return (
            f"HTTPS: the local certificate authority {local_ca} is not trusted by "
            "this system, so browsers will warn; `manage.py runserver --trust` "
            "says how to trust it."
        )
    if trusted:
        return "HTTPS: the certificate is trusted by this system."
    return (
        "HTTPS: the certificate is not trusted by this system, so browsers will warn."
    )

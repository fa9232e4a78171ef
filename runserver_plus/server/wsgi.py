"""The WSGI side of a request: the environ, the file wrapper and response headers."""

from __future__ import annotations

import io
import ipaddress
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from email.utils import formatdate
from types import TracebackType
from typing import IO, Any, Protocol, TypeVar
from urllib.parse import unquote_to_bytes

from runserver_plus import __version__

WSGIEnviron = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[WSGIEnviron, StartResponse], Iterable[bytes]]

SERVER_SOFTWARE = f"runserver_plus/{__version__}"

_K = TypeVar("_K")
_V = TypeVar("_V")

# RFC 9110 §7.6.1: these describe one hop and are the server's to set.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class FileWrapper:
    """``wsgi.file_wrapper`` that the server can send with ``socket.sendfile``.

    Iterating yields at most ``length`` bytes (``None``: up to the end of the
    file) from the file's current position; ``close()`` closes the file.
    """

    def __init__(
        self, filelike: IO[bytes], blksize: int = 65536, length: int | None = None
    ) -> None:
        self.filelike = filelike
        self.blksize = blksize
        self.length = length

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()

    def __iter__(self) -> Iterator[bytes]:
        remaining = self.length
        while remaining is None or remaining > 0:
            size = self.blksize if remaining is None else min(self.blksize, remaining)
            data = self.filelike.read(size)
            if not data:
                return
            if remaining is not None:
                remaining -= len(data)
            yield data

    def sendfile_span(self) -> tuple[int, int | None] | None:
        """``(offset, count)`` when the file can go out through ``sendfile``."""
        try:
            self.filelike.fileno()
            offset = self.filelike.tell()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return None
        return offset, self.length


class Request(Protocol):
    """What ``build_environ`` needs to know about one parsed request."""

    @property
    def method(self) -> bytes: ...
    @property
    def target(self) -> bytes: ...
    @property
    def http_version(self) -> bytes: ...
    @property
    def headers(self) -> Iterable[tuple[bytes, bytes]]: ...


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """Path and query of a request target, absolute-form included."""
    path, _, query = target.partition(b"?")
    if not path.startswith(b"/") and b"://" in path:
        # absolute-form (RFC 9112 §3.2.2): http://host[:port]/path
        after_scheme = path.split(b"://", 1)[1]
        slash = after_scheme.find(b"/")
        path = after_scheme[slash:] if slash >= 0 else b"/"
    if path.startswith(b"//"):
        # As Django's server (CPython gh-87389): never a scheme-relative path.
        path = b"/" + path.lstrip(b"/")
    return path, query


def server_name(addr: str) -> str:
    """``SERVER_NAME`` without Django's reverse DNS lookup, which can take seconds."""
    try:
        if ipaddress.ip_address(addr).is_loopback:
            return "localhost"
    except ValueError:
        pass  # a host name: use it as given
    return addr or "localhost"


def base_environ(
    server_name: str,
    server_port: int,
    remote_addr: str,
    multithread: bool,
    url_scheme: str = "http",
) -> WSGIEnviron:
    """The keys that are the same for every request on one connection."""
    return {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SCRIPT_NAME": "",
        "SERVER_NAME": server_name,
        "SERVER_PORT": str(server_port),
        "SERVER_SOFTWARE": SERVER_SOFTWARE,
        "REMOTE_ADDR": remote_addr,
        "REMOTE_HOST": "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": url_scheme,
        "wsgi.errors": sys.stderr,
        # Django's server says True even with --nothreading; apps and Django's
        # own code only use it as "other requests may run at the same time".
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
        "wsgi.input_terminated": True,
    }


def build_environ(
    base: WSGIEnviron, request: Request, body: object, content_length: int | None
) -> WSGIEnviron:
    """The environ of one request, from the request alone (never ``os.environ``).

    ``content_length`` overrides the header (chunked bodies are decoded first);
    headers whose names hold an underscore are dropped, as Django's server does,
    and repeated headers are joined with commas.
    """
    path, query = split_target(request.target)
    environ = base.copy()
    environ["REQUEST_METHOD"] = request.method.decode("ascii")
    environ["SERVER_PROTOCOL"] = "HTTP/" + request.http_version.decode("ascii")
    environ["PATH_INFO"] = (unquote_to_bytes(path) if b"%" in path else path).decode(
        "latin-1"
    )
    environ["QUERY_STRING"] = query.decode("latin-1")
    environ["CONTENT_TYPE"] = "text/plain"
    environ["CONTENT_LENGTH"] = ""
    key_of = _environ_keys.get
    for raw_name, raw_value in request.headers:
        key = key_of(raw_name)
        if key is None:
            key = _environ_key(raw_name)
        if not key:
            continue
        value = raw_value.decode("latin-1")
        if key in environ and key[:5] == "HTTP_":
            value = environ[key] + "," + value
        environ[key] = value
    if content_length is not None:
        environ["CONTENT_LENGTH"] = str(content_length)
    environ["wsgi.input"] = body
    return environ


#: How many header names the caches below hold at most: the same few names
#: come with every request and response; a client sending new ones forever
#: must not grow them without bound.
_MAX_CACHED_NAMES = 1000
#: Environ keys of header names seen before ("" for a header left out).
_environ_keys: dict[bytes, str] = {}


def _remember(cache: dict[_K, _V], key: _K, value: _V) -> _V:
    """``value``, kept in ``cache`` for ``key`` while the cache has room."""
    if len(cache) < _MAX_CACHED_NAMES:
        cache[key] = value
    return value


def _environ_key(raw_name: bytes) -> str:
    """``HTTP_X_NAME`` for ``x-name``; "" for names left out of the environ:
    those holding an underscore, as Django's server drops them, and
    Transfer-Encoding, since the app sees the body decoded."""
    name = raw_name.decode("ascii").upper().replace("-", "_")
    if b"_" in raw_name or name == "TRANSFER_ENCODING":
        key = ""
    elif name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        key = name
    else:
        key = "HTTP_" + name
    return _remember(_environ_keys, raw_name, key)


_date_cache: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The current ``Date`` header value, formatted at most once a second."""
    global _date_cache  # noqa: PLW0603 - a per-second cache shared by all threads
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode("ascii"))
    return _date_cache[1]


# RFC 9110 §5.1 (token) and §5.5 (no CR, LF or NUL in a value): anything else
# could split the response.
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\r\n\x00]")
_SERVER_LINE = f"Server: {SERVER_SOFTWARE}\r\n".encode("ascii")


# What a response header's name means to the server.
_PLAIN, _HOP_BY_HOP, _CONNECTION, _LENGTH, _DATE, _SERVER = range(6)
_SPECIAL_NAMES = {
    "connection": _CONNECTION,
    "content-length": _LENGTH,
    "date": _DATE,
    "server": _SERVER,
}
#: Valid response header names seen before, with their kind: checking each
#: again cost a tenth of a keep-alive request.
_name_kinds: dict[str, int] = {}


def _kind_of(name: str, value: str) -> int:
    if not _FIELD_NAME.fullmatch(name):
        raise ValueError(f"invalid response header {name!r}: {value!r}")
    lower = name.lower()
    kind = _SPECIAL_NAMES.get(lower, _HOP_BY_HOP if lower in HOP_BY_HOP else _PLAIN)
    return _remember(_name_kinds, name, kind)


def response_headers(headers: list[tuple[str, str]]) -> tuple[bytes, bool, int | None]:
    """Encode the app's headers as wire lines, without hop-by-hop ones.

    Returns the lines (``b"Name: value\r\n"`` each, with ``Date`` and
    ``Server`` added unless the app set them), whether the app asked for the
    connection to close (``Connection: close``, the one hop-by-hop header we
    honour) and the declared Content-Length. ``ValueError`` for a header that
    could not go on the wire as it is.
    """
    lines: list[str] = []
    close = has_date = has_server = False
    length: int | None = None
    kind_of = _name_kinds.get
    for name, value in headers:
        kind = kind_of(name)
        if kind is None:
            kind = _kind_of(name, value)
        if value.__class__ is not str:
            raise ValueError(f"invalid response header {name!r}: {value!r}")
        if kind:
            if kind == _HOP_BY_HOP:
                continue
            if kind == _CONNECTION:
                close = close or "close" in value.lower()
                continue
            if kind == _LENGTH:
                if not (value.isascii() and value.isdigit()) or length is not None:
                    raise ValueError(f"invalid Content-Length {value!r}")
                length = int(value)
            elif kind == _DATE:
                has_date = True
            else:  # _SERVER, the last kind left
                has_server = True
        lines.append(f"{name}: {value}\r\n")
    block = "".join(lines)
    # Names are tokens: a CR, LF or NUL beyond the line ends is in a value,
    # and could split the response.
    if (
        block.count("\n") != len(lines)
        or block.count("\r") != len(lines)
        or ("\0" in block)
    ):
        bad = next(line for line in lines if _BAD_VALUE.search(line[:-2]))
        raise ValueError(f"invalid response header {bad[:-2]!r}")
    head = block.encode("latin-1")
    if not has_date:
        head += b"Date: " + http_date() + b"\r\n"
    if not has_server:
        head += _SERVER_LINE
    return head, close, length


def respond(
    start_response: StartResponse,
    status: str,
    content_type: str,
    body: bytes,
    cache_control: str = "no-store",
) -> list[bytes]:
    """Start a complete response the server answers itself, and return its body."""
    start_response(
        status,
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", cache_control),
        ],
    )
    return [body]


def parse_status(status: str) -> tuple[int, bytes]:
    """``"200 OK"`` -> ``(200, b"OK")``; ``ValueError`` for anything else."""
    code, _, reason = status.partition(" ")
    if len(code) != 3 or not (code.isascii() and code.isdigit()):
        raise ValueError(f"invalid WSGI status {status!r}")
    return int(code), reason.encode("latin-1")

"""Creating the listening socket, adopting an inherited one, and naming bind errors."""

from __future__ import annotations

import errno
import socket
import struct
import sys

# Django's wording for the bind errors users know (reference §1.4, must match).
_BIND_ERRORS = {
    errno.EACCES: "You don't have permission to access that port.",
    errno.EADDRINUSE: "That port is already in use.",
    errno.EADDRNOTAVAIL: "That IP address can't be assigned to.",
}


def bind_socket(addr: str, port: int, *, ipv6: bool, backlog: int) -> socket.socket:
    """Bind and listen on ``addr:port``; raise ``OSError`` as ``socket`` does.

    ``addr`` is taken as Django takes it: a literal or a host name resolved
    for the chosen family (``"0"`` is the IPv4 wildcard).
    """
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def adopt_socket(fd: int) -> socket.socket:
    """Wrap an inherited listening socket descriptor (the worker's side)."""
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    return sock


def bind_error_message(error: OSError) -> str:
    """The text Django prints after ``Error: `` for a failed bind."""
    return _BIND_ERRORS.get(error.errno or 0, str(error))


def bound_port(sock: socket.socket) -> int:
    """The port the socket really listens on (meaningful for port 0)."""
    return int(sock.getsockname()[1])


def set_io_timeout(
    sock: socket.socket, seconds: float, *, recv: bool = True, send: bool = True
) -> None:
    """Bound each ``recv`` and/or ``send`` of a blocking socket in the kernel.

    ``settimeout()`` makes every call a ``poll()`` then the call, and each of
    the two releases and takes back the GIL: with busy connection threads
    that hand-over cost a tenth of the throughput. A blocking socket with
    ``SO_RCVTIMEO``/``SO_SNDTIMEO`` needs one system call; a call that times
    out raises ``BlockingIOError`` (``TimeoutError`` on Windows).
    """
    if sys.platform == "win32":  # pragma: no cover - not tested on these machines
        value = struct.pack("@L", max(1, round(seconds * 1000)))  # DWORD, ms
    else:
        # Zero would mean "no timeout": the shortest bound is a microsecond.
        whole = int(seconds)
        micro = max(round((seconds - whole) * 1_000_000), 0 if whole else 1)
        value = struct.pack("@ll", whole, micro)
    if recv:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    if send:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)

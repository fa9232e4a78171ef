"""Creating the listening socket, adopting an inherited one, and naming bind errors."""

from __future__ import annotations

import errno
import socket

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

"""runserver_plus's own threaded HTTP/1.1 WSGI server."""

from __future__ import annotations

from runserver_plus.server.server import Server
from runserver_plus.server.sockets import adopt_socket, bind_error_message, bind_socket

__all__ = ["Server", "adopt_socket", "bind_error_message", "bind_socket"]

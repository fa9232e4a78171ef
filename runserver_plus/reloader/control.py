"""The control channel between supervisor and worker: JSON lines on a socket pair."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

from runserver_plus.server.sockets import adopt_socket

#: Environment variable carrying ``<listening fd>:<control fd>`` to a worker.
WORKER_ENV = "RUNSERVER_PLUS_WORKER"

Message = dict[str, Any]


class Channel:
    """Send and receive JSON messages, one per line; thread-safe sending."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self._reader = sock.makefile("rb")

    def send(self, message: Message) -> bool:
        """Send one message; False when the other side is gone."""
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        with self._send_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                return False
        return True

    def __iter__(self) -> Iterator[Message]:
        """Messages until the other side closes (or sends garbage)."""
        while True:
            try:
                line = self._reader.readline()
            except OSError:
                return
            if not line:
                return
            try:
                message = json.loads(line)
            except ValueError:
                return
            if isinstance(message, dict):
                yield message

    def close(self) -> None:
        # Shut down first: that wakes a thread blocked reading this channel,
        # which holds the reader's lock that close() needs.
        with contextlib.suppress(OSError):  # the other side may be gone already
            self.sock.shutdown(socket.SHUT_RDWR)
        self._reader.close()
        self.sock.close()


def worker_marker(listen_fd: int, control_fd: int) -> str:
    return f"{listen_fd}:{control_fd}"


def read_worker_marker() -> tuple[int, int] | None:
    """The descriptors a supervisor passed us: ``(listening, control)``."""
    value = os.environ.get(WORKER_ENV)
    if not value:
        return None
    listen_fd, _, control_fd = value.partition(":")
    return int(listen_fd), int(control_fd)


def take_worker_marker() -> tuple[int, int] | None:
    """``read_worker_marker()``, removed from the environment so that
    processes the project starts do not take themselves for workers."""
    marker = read_worker_marker()
    os.environ.pop(WORKER_ENV, None)
    return marker


#: The control channel of a warm process that became a worker (see warm.py).
_handed_over: list[Channel] = []


def hand_over(channel: Channel) -> None:
    """Leave ``channel`` to the worker this process is about to run: it may
    hold a message already read from the socket."""
    _handed_over.append(channel)


def channel_for(fd: int) -> Channel:
    """The control channel on descriptor ``fd``: the one a warm process
    handed over, or a new one."""
    while _handed_over:
        channel = _handed_over.pop()
        if channel.sock.fileno() == fd:
            return channel
    return Channel(adopt_socket(fd))

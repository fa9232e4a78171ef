"""The control channel between supervisor and worker: JSON lines on a socket pair."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any, Literal, TypedDict

from runserver_plus.server.sockets import adopt_socket

#: Environment variable carrying ``<listening fd>:<control fd>`` to a worker.
WORKER_ENV = "RUNSERVER_PLUS_WORKER"


# What the supervisor tells a worker (or a warm process).


class StopCommand(TypedDict):
    """Stop accepting, drain, exit."""

    command: Literal["stop"]


class WatchingCommand(TypedDict):
    """Every directory the worker asked for is watched: serve."""

    command: Literal["watching"]


class OfferCommand(TypedDict):
    """Send Django's ``file_changed`` for these paths; answer with the result."""

    command: Literal["offer"]
    id: int
    paths: list[str]


class PreloadCommand(TypedDict):
    """A warm process: import these modules (see warm.py)."""

    command: Literal["preload"]
    modules: list[str]
    roots: list[str]
    lock_dirs: list[str]
    #: Whether to load the project's settings first (see warm.py).
    settings: bool


class GoCommand(TypedDict):
    """A warm process: become the worker."""

    command: Literal["go"]


# What a worker (or a warm process) tells the supervisor.


class WatchDirEvent(TypedDict):
    """A receiver of ``autoreload_started`` called ``watch_dir()``."""

    event: Literal["watch_dir"]
    path: str
    glob: str


class ModulesEvent(TypedDict):
    """Module files imported since the last report (their folders are watched)."""

    event: Literal["modules"]
    files: list[str]


class PreloadableEvent(TypedDict):
    """Modules imported from outside the project since the last report."""

    event: Literal["preloadable"]
    modules: list[str]


class ReadyEvent(TypedDict):
    """Loaded and checked; serves once the supervisor says it is watching."""

    event: Literal["ready"]


class ServingEvent(TypedDict):
    """The banner is printed; requests are served."""

    event: Literal["serving"]


class OfferResultEvent(TypedDict):
    """Whether the offered paths were claimed by a ``file_changed`` receiver."""

    event: Literal["offer_result"]
    id: int
    claimed: bool
    unclaimed: list[str]


class PreloadedEvent(TypedDict):
    """A warm process imported all it was sent so far."""

    event: Literal["preloaded"]
    preloaded: int


class UnsafeEvent(TypedDict):
    """A warm process imported something a worker must not inherit; it exits."""

    event: Literal["unsafe"]
    modules: list[str]
    why: str


class StaleEvent(TypedDict):
    """A warm process told to go found a file it imported changed; it exits."""

    event: Literal["stale"]
    path: str


class WentEvent(TypedDict):
    """A warm process became the worker."""

    event: Literal["went"]
    preloaded: int


Command = StopCommand | WatchingCommand | OfferCommand | PreloadCommand | GoCommand
Event = (
    WatchDirEvent
    | ModulesEvent
    | PreloadableEvent
    | ReadyEvent
    | ServingEvent
    | OfferResultEvent
    | PreloadedEvent
    | UnsafeEvent
    | StaleEvent
    | WentEvent
)
#: What is sent.
Message = Command | Event
#: What is received: a JSON object, checked by the receiver's ``match``.
Received = dict[str, Any]


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

    def __iter__(self) -> Iterator[Received]:
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

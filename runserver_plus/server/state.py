"""What a server's threads share: the stop, the wake-up pipe, slots, connections."""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

#: How long after the drain's deadline busy connections are broken off: the
#: idle ones end by themselves at the deadline, gracefully, and get a moment.
ABORT_AFTER = 0.1  # s


class StopClock:
    """When the server stopped, shared by its connections: from then on each
    response closes its connection, and a connection waits for its next
    request only until the drain's deadline.

    Read without a lock: one attribute, set once per stop.
    """

    def __init__(self) -> None:
        #: ``time.monotonic()`` when the drain ends; None while serving.
        self.deadline: float | None = None

    def stop(self, timeout: float) -> None:
        """The server stops: its connections have ``timeout`` seconds left.
        A second stop keeps the first deadline if it is sooner."""
        deadline = time.monotonic() + timeout
        if self.deadline is None or deadline < self.deadline:
            self.deadline = deadline

    @property
    def stopping(self) -> bool:
        return self.deadline is not None

    def idle_wait(self, idle_timeout: float) -> float:
        """How long a connection waits for its next request: ``idle_timeout``,
        and once the server stops, no longer than the drain (zero or less:
        close now). A request that arrives meanwhile is answered (with
        ``Connection: close``): closing the connection under a request on its
        way would lose it. Both drivers wait this way."""
        deadline = self.deadline
        if deadline is None:
            return idle_timeout
        return min(idle_timeout, deadline - time.monotonic())


class Tracked(Protocol):
    """A connection as the state tracks it."""

    def abort(self) -> None:
        """Break off whatever it is doing (the drain bound is over)."""


class ServerState:
    """Shared by the server and its event loop: neither imports the other.

    ``stopping`` is set once the server stops accepting; ``clock`` says until
    when open connections may go on. The wake-up pipe interrupts a loop
    waiting in ``select()``. Slots bound the threads that serve at once.
    """

    def __init__(
        self, max_threads: int, on_thread_exit: Callable[[], None] | None = None
    ) -> None:
        self.stopping = threading.Event()
        self.clock = StopClock()
        self.wake_socket, self._wake_w = socket.socketpair()
        self._slots = threading.BoundedSemaphore(max_threads)
        self._names = itertools.count(1)
        self._on_thread_exit = on_thread_exit
        self._active: set[Tracked] = set()
        self._active_changed = threading.Condition()

    def stop(self, drain_timeout: float) -> None:
        """Stop accepting; open connections get ``drain_timeout`` to end.
        Safe to call from a signal handler or another thread."""
        self.clock.stop(drain_timeout)
        self.stopping.set()
        self.wake()

    def wake(self) -> None:
        """Make ``wake_socket`` readable."""
        with contextlib.suppress(OSError):  # the loop has ended and closed it
            self._wake_w.send(b"x")

    def close(self) -> None:
        self.wake_socket.close()
        self._wake_w.close()

    # --- threads ------------------------------------------------------------

    def take_slot(self, *, blocking: bool = True) -> bool:
        """One of the ``max_threads`` threads that may serve at once."""
        return self._slots.acquire(blocking=blocking)

    def thread_name(self) -> str:
        return f"runserver_plus-connection-{next(self._names)}"

    def thread_done(self, *, slot: bool) -> None:
        """A serving thread ends: free its slot and what it held."""
        if slot:
            self._slots.release()
        self.thread_resources_done()

    def thread_resources_done(self) -> None:
        """Release what the current thread held for the application."""
        if self._on_thread_exit is not None:
            self._on_thread_exit()

    # --- connections ----------------------------------------------------------

    def track(self, connection: Tracked) -> None:
        with self._active_changed:
            self._active.add(connection)

    def untrack(self, connection: Tracked) -> None:
        with self._active_changed:
            self._active.discard(connection)
            self._active_changed.notify_all()

    def wait_for_connections(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for every tracked connection to end; break
        off the rest. True when none was left."""
        deadline = time.monotonic() + timeout
        with self._active_changed:
            while self._active:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._active_changed.wait(remaining)
            late = list(self._active)
        for connection in late:
            connection.abort()
        return not late

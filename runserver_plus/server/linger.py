"""Closing connections without an RST: FIN first, then discard what still arrives."""

from __future__ import annotations

import contextlib
import math
import selectors
import socket
import threading
import time
from typing import cast

#: How long a closed connection's late input is read and thrown away, as
#: Apache's lingering close does (``SECONDS_TO_LINGER``): long enough for a
#: client to read the last response and close its side.
LINGER_TIMEOUT = 2.0  # s
#: How long closes still lingering when a drain ends may go on; then they are
#: cut short (``Lingerer.finish``).
LINGER_AT_EXIT = 0.5  # s
#: Largest read while discarding, and how many a socket gets per wake-up.
_DISCARD_SIZE = 65536  # bytes
_DISCARD_READS = 16


class Lingerer:
    """Closes sockets gracefully, on one thread of its own.

    ``close()`` with unread input makes the kernel answer with an RST, and an
    RST makes the client's kernel throw away what it received and the client
    has not read yet: the last response, perhaps. So, as Apache and nginx do,
    a socket is closed in steps: ``shutdown(SHUT_WR)`` (a FIN after the last
    response), then its input is read and discarded until the client closes
    too or ``timeout`` passes, then ``close()``.

    The thread starts when a close has to wait and ends when none does; one
    whose client has closed already costs no thread at all.
    """

    def __init__(self, timeout: float = LINGER_TIMEOUT) -> None:
        self._timeout = timeout
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        # Under the lock: sockets handed over, not yet in the thread's selector;
        # whether the thread runs; how to wake it; when to give up on all.
        self._incoming: list[tuple[socket.socket, float]] = []
        self._running = False
        self._wake_w: socket.socket | None = None
        self._cut_at = math.inf

    def close(self, sock: socket.socket) -> None:
        """Close ``sock`` gracefully; returns at once. Nothing else may use it."""
        with contextlib.suppress(OSError):  # reset, or shut down already
            sock.shutdown(socket.SHUT_WR)
        try:
            sock.setblocking(False)
        except OSError:
            sock.close()
            return
        if _discard(sock):
            sock.close()
            return
        with self._lock:
            if self._running:
                self._incoming.append((sock, time.monotonic() + self._timeout))
                self._wake()
                return
            opened: list[socket.socket | selectors.BaseSelector] = []
            try:
                wake_r, wake_w = socket.socketpair()
                opened += [wake_r, wake_w]
                selector = selectors.DefaultSelector()
                opened.append(selector)
                wake_r.setblocking(False)
                selector.register(wake_r, selectors.EVENT_READ)
                threading.Thread(
                    target=self._run,
                    args=(selector, wake_r),
                    name="runserver_plus-linger",
                    daemon=True,
                ).start()
            except (OSError, RuntimeError):
                # Out of file descriptors or threads: close now. The client
                # may get an RST; the server must not fail.
                for resource in opened:
                    resource.close()
                sock.close()
                return
            self._incoming.append((sock, time.monotonic() + self._timeout))
            self._wake_w = wake_w
            self._running = True

    def finish(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the lingering closes, then cut the rest
        short (close them now). True when none had to be cut."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._running:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._idle.wait(remaining)
            if not self._running:
                return True
            self._cut_at = 0.0
            self._wake()
            # The thread only has to close what it holds: moments.
            self._idle.wait_for(lambda: not self._running, timeout=1.0)
            self._cut_at = math.inf
        return False

    @property
    def lingering(self) -> bool:
        """Whether some close is still waiting for its client."""
        with self._lock:
            return self._running

    def _wake(self) -> None:
        """Under the lock."""
        if self._wake_w is not None:
            with contextlib.suppress(OSError):  # full: it will wake anyway
                self._wake_w.send(b"x")

    def _run(self, selector: selectors.BaseSelector, wake_r: socket.socket) -> None:
        waiting: dict[socket.socket, float] = {}
        try:
            while True:
                with self._lock:
                    for sock, deadline in self._incoming:
                        waiting[sock] = deadline
                        selector.register(sock, selectors.EVENT_READ)
                    self._incoming.clear()
                    cut_at = self._cut_at
                    if not waiting:
                        self._running = False
                        assert self._wake_w is not None
                        self._wake_w.close()
                        self._wake_w = None
                        self._idle.notify_all()
                        return
                now = time.monotonic()
                for sock, deadline in list(waiting.items()):
                    if min(deadline, cut_at) <= now:
                        selector.unregister(sock)
                        del waiting[sock]
                        sock.close()
                if not waiting:
                    continue
                timeout = max(0.0, min(waiting.values()) - now)
                for key, _ in selector.select(timeout):
                    if key.fileobj is wake_r:
                        with contextlib.suppress(OSError):
                            wake_r.recv(4096)
                        continue
                    client = cast(socket.socket, key.fileobj)
                    if _discard(client):
                        selector.unregister(client)
                        del waiting[client]
                        client.close()
        finally:
            for sock in waiting:
                sock.close()
            selector.close()
            wake_r.close()


def _discard(sock: socket.socket) -> bool:
    """Read and throw away what has arrived; True once the client has closed
    its side (or reset), so that ``close()`` sends no RST."""
    for _ in range(_DISCARD_READS):
        try:
            if not sock.recv(_DISCARD_SIZE):
                return True
        except BlockingIOError:
            return False
        except OSError:
            return True  # reset: nothing left to protect
    return False  # a client that keeps sending: wait for the next wake-up

"""The threaded mode's event loop: requests served in turn, slow ones apart.

Over 350 lines: the loop, its hand-over of a slow request to a thread of
its own, and the hand-back of connections at a stop share one piece of
state (which thread owns the loop, and which connections it holds); split
across modules, each part would reach into the others'.
"""

from __future__ import annotations

import contextlib
import math
import selectors
import socket
import threading
import time
from typing import TYPE_CHECKING, Protocol

from runserver_plus.server.accept import AcceptGate
from runserver_plus.server.errors import ProtocolError
from runserver_plus.server.state import ServerState

if TYPE_CHECKING:
    from runserver_plus.config import ServerConfig
    from runserver_plus.server.connection import Connection

#: How long one request may hold the loop before another thread takes it on.
#: A request that takes longer delays the others by about this much, once.
HAND_OVER_AFTER = 0.01  # s

# What a selector key's data says the socket is.
_LISTENER = "listener"
_WAKE = "wake"


class LoopServer(Protocol):
    """What the event loop needs from the server that runs it."""

    config: ServerConfig
    sock: socket.socket
    state: ServerState

    def accept_connection(self) -> Connection | None: ...

    def close(self, connection: Connection) -> None: ...

    def serve_alone(
        self, connection: Connection, *, threaded: bool = False
    ) -> None: ...

    def shutdown(self, drain_timeout: float | None = None) -> None: ...


class EventLoop:
    """Serves a threaded server's connections, from one thread at a time.

    The owner thread waits on every connection at once and serves each request
    that has arrived whole, one after the other: no thread per connection, so
    the GIL does not change hands at each system call (a bare
    thread-per-connection server is about 30% slower than a bare selector
    one on 2 CPUs, ``benchmarks/bounds.py``).

    ``run()``'s thread watches: when one request has held the loop for
    ``HAND_OVER_AFTER`` (a slow view, a body that arrives slowly, a client
    slow to read), that request keeps its thread and a new thread owns the
    loop. The old thread finishes the request, serves what its connection has
    buffered, hands the connection back and ends. Threads are bounded by the
    server's slots: with none free, the loop waits for the request.

    On ``shutdown()`` the loop stops accepting and hands every connection on
    to a thread of its own with blocking reads, where the drain finds it: an
    idle one may still bring a request (the client sent it before it could
    know of the stop), which is answered, with ``Connection: close``.
    """

    def __init__(self, server: LoopServer, selector: selectors.BaseSelector) -> None:
        self._server = server
        self._selector = selector
        self._idle_timeout = server.config.idle_timeout
        self._read_timeout = server.config.read_timeout
        self._max_connections = server.config.max_connections
        #: Connections in the loop, with the time they may wait until.
        self._deadlines: dict[Connection, float] = {}
        self._next_sweep = math.inf
        self._open = 0  # connections accepted and not closed, in the loop or not
        self._listener = AcceptGate(selector, server.sock, _LISTENER)
        self._cond = threading.Condition(threading.Lock())
        # Under _cond: which thread owns the loop, and what it does.
        self._owner = 0  # generation: each new owner thread gets the next one
        self._in_request = False
        self._current: Connection | None = None
        self._done = False
        #: Connections given back by threads that finished a long request,
        #: with whether they may carry another request.
        self._returned: list[tuple[Connection, bool]] = []
        # The watcher's view. The owner counts and flags requests without the
        # lock; the watcher reads them under it (see _watch).
        self._begun = 0
        self._watcher_asleep = False

    # --- the watcher: run()'s thread ----------------------------------------------

    def run(self) -> None:
        """Serve until the server stops; return once the connections are handed on."""
        self._listener.start()
        self._selector.register(
            self._server.state.wake_socket, selectors.EVENT_READ, _WAKE
        )
        self._server.state.take_slot()
        self._start_owner(self._owner)
        self._watch()

    def _watch(self) -> None:
        leftover: list[Connection] = []
        with self._cond:
            while not self._done:
                if self._watcher_asleep:
                    self._cond.wait()  # until a request begins, or the loop ends
                    continue
                begun = self._begun
                self._cond.wait(HAND_OVER_AFTER)
                if self._done:
                    break
                if self._in_request:
                    if self._server.state.stopping.is_set():
                        leftover = self._end_loop()  # the owner will not look again
                    elif self._begun == begun:
                        self._hand_over()
                elif self._begun == begun:
                    # Nothing ran for a whole tick: sleep until a request
                    # begins. The owner sets _in_request then reads this flag;
                    # here the flag is set then _in_request read, so one of the
                    # two sees the other.
                    self._watcher_asleep = True
                    if self._in_request:
                        self._watcher_asleep = False
        self._release(leftover)

    def _hand_over(self) -> None:
        """The request in the loop has taken too long: it keeps its thread, and a
        new owner takes the loop on. Under the lock, while the owner serves."""
        if not self._server.state.take_slot(blocking=False):
            return  # every thread is busy: the loop waits for this request
        connection = self._current
        assert connection is not None
        self._forget_in_loop(connection)
        self._owner += 1
        self._in_request = False
        self._start_owner(self._owner)

    def _start_owner(self, generation: int) -> None:
        thread = threading.Thread(
            target=self._own,
            args=(generation,),
            name=self._server.state.thread_name(),
            daemon=True,
        )
        thread.start()

    # --- the owner -----------------------------------------------------------------

    def _own(self, generation: int) -> None:
        try:
            self._loop(generation)
        except BaseException:
            # A failure of the server itself, not of a client: stop, rather
            # than keep a process that no thread serves.
            with self._cond:
                if generation == self._owner:
                    self._done = True
                    self._cond.notify_all()
            self._server.shutdown()
            raise
        finally:
            self._server.state.thread_done(slot=True)

    def _loop(self, generation: int) -> None:
        select = self._selector.select
        while True:
            timeout = (
                None
                if self._next_sweep == math.inf
                else max(0.0, self._next_sweep - time.monotonic())
            )
            for key, _ in select(timeout):
                data = key.data
                if data is _LISTENER:
                    self._accept()
                elif data is _WAKE:
                    if not self._woken(generation):
                        return
                elif not self._readable(data, generation):
                    return  # this thread no longer owns the loop
            if self._next_sweep <= time.monotonic():
                self._sweep()

    def _accept(self) -> None:
        try:
            connection = self._server.accept_connection()
        except OSError as error:
            self._listener.failed(error)
            self._next_sweep = min(self._listener.resume_at, self._next_sweep)
            return
        self._listener.accepted()
        if connection is None:
            return
        self._open += 1
        self._enter_loop(connection)
        if self._open >= self._max_connections:
            self._listener.stop()  # further connections wait in the backlog

    def _resume_accepting(self) -> None:
        wake_at = self._listener.resume(room=self._open < self._max_connections)
        self._next_sweep = min(wake_at, self._next_sweep)

    def _readable(self, connection: Connection, generation: int) -> bool:
        if not connection.receive_ready():
            self._close(connection)
            return True
        return self._serve_buffered(connection, generation)

    def _serve_buffered(self, connection: Connection, generation: int) -> bool:
        """Serve the requests that have arrived whole; False when this thread
        lost the loop meanwhile (it has then finished with the connection)."""
        while True:
            try:
                head = connection.take_head()
            except ProtocolError as error:
                connection.reject(error)
                self._close(connection)
                return True
            if head is None:
                self._wait_for(connection)
                return True
            self._current = connection
            self._in_request = True
            self._begun += 1
            if self._watcher_asleep:
                with self._cond:
                    self._watcher_asleep = False
                    self._cond.notify()
            keep = connection.answer(head)
            with self._cond:
                owner = generation == self._owner
                if owner:
                    self._in_request = False
            if not owner:
                self._finish_alone(connection, keep)
                return False
            if not keep:
                self._close(connection)
                return True

    def _enter_loop(self, connection: Connection) -> None:
        """Take a connection in: new, or given back after a long request."""
        self._selector.register(connection.sock, selectors.EVENT_READ, connection)
        self._wait_for(connection)

    def _wait_for(self, connection: Connection) -> None:
        """Wait in the loop for the connection's next bytes, for as long as the
        timeouts allow: a request half arrived gets the read timeout."""
        timeout = (
            self._read_timeout if connection.has_partial_request else self._idle_timeout
        )
        deadline = time.monotonic() + timeout
        self._deadlines[connection] = deadline
        self._next_sweep = min(deadline, self._next_sweep)

    def _sweep(self) -> None:
        """Drop the connections that waited too long: 408 for a request half
        arrived, silently for an idle one."""
        now = time.monotonic()
        self._next_sweep = math.inf
        for connection, deadline in list(self._deadlines.items()):
            if deadline > now:
                self._next_sweep = min(deadline, self._next_sweep)
            else:
                if connection.has_partial_request:
                    connection.reject(ProtocolError(408, "Request Timeout"))
                self._close(connection)
        self._resume_accepting()

    def _woken(self, generation: int) -> bool:
        """Take back returned connections; at a stop, hand every one on."""
        with contextlib.suppress(OSError):
            self._server.state.wake_socket.recv(4096)
        if self._server.state.stopping.is_set():
            with self._cond:
                leftover = self._end_loop()
            self._release(leftover)
            return False
        with self._cond:
            returned, self._returned = self._returned, []
        for connection, keep in returned:
            if keep:
                self._enter_loop(connection)
            else:
                self._close(connection)
        return True

    def _close(self, connection: Connection) -> None:
        self._forget_in_loop(connection)
        self._server.close(connection)
        self._open -= 1
        self._resume_accepting()

    def _forget_in_loop(self, connection: Connection) -> None:
        if self._deadlines.pop(connection, None) is not None:
            self._selector.unregister(connection.sock)

    # --- a thread that lost the loop during a long request ----------------------

    def _finish_alone(self, connection: Connection, keep: bool) -> None:
        """Serve the requests the connection has buffered, then give it back."""
        while keep:
            try:
                head = connection.take_head()
            except ProtocolError as error:
                connection.reject(error)  # a response that closes the connection
                keep = False
                break
            if head is None:
                break
            keep = connection.answer(head)
        with self._cond:
            given_back = not self._done
            if given_back:
                self._returned.append((connection, keep))
        if given_back:
            self._server.state.wake()
        elif keep:
            self._server.serve_alone(connection)  # the loop has ended
        else:
            self._server.close(connection)

    # --- the end -------------------------------------------------------------------

    def _end_loop(self) -> list[Connection]:
        """Under the lock: no thread owns the loop from now on. Returns the
        connections to hand on (the one in a request stays with its thread)."""
        self._owner += 1
        self._done = True
        self._cond.notify_all()
        if self._in_request and self._current is not None:
            self._forget_in_loop(self._current)
        leftover = list(self._deadlines)
        for connection in leftover:
            self._selector.unregister(connection.sock)
        self._deadlines.clear()
        for connection, keep in self._returned:
            if keep:
                leftover.append(connection)
            else:
                self._server.close(connection)
        self._returned.clear()
        return leftover

    def _release(self, leftover: list[Connection]) -> None:
        """Give each connection a thread of its own for the drain."""
        for connection in leftover:
            self._server.serve_alone(connection, threaded=True)

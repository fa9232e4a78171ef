"""Accepting from a selector, paused at a bound or when out of descriptors."""

from __future__ import annotations

import errno
import math
import selectors
import socket
import time

from runserver_plus.server import log

#: How long accepting pauses when the process is out of file descriptors.
ACCEPT_PAUSE = 0.1  # s
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class AcceptGate:
    """Whether the listening socket is in a selector, and so accepted from.

    It leaves the selector at the bound on open connections, and for
    ``ACCEPT_PAUSE`` when the process runs out of file descriptors (with one
    warning until an accept succeeds again): rather than spin on a listener
    that stays readable, new connections wait in the backlog.
    """

    def __init__(
        self, selector: selectors.BaseSelector, sock: socket.socket, data: object
    ) -> None:
        self._selector = selector
        self._sock = sock
        self._data = data
        self.open = False
        #: When accepting may resume after running out of resources, or 0.0.
        self.resume_at = 0.0

    def start(self) -> None:
        if not self.open:
            self._selector.register(self._sock, selectors.EVENT_READ, self._data)
            self.open = True

    def stop(self) -> None:
        if self.open:
            self._selector.unregister(self._sock)
            self.open = False

    def accepted(self) -> None:
        """An accept succeeded: a later shortage is worth a new warning."""
        self.resume_at = 0.0

    def failed(self, error: OSError) -> None:
        """Pause on a shortage of descriptors or memory; raise anything else."""
        if error.errno not in _OUT_OF_RESOURCES:
            raise error
        if self.resume_at == 0.0:
            log.log_accept_paused(error)
        self.stop()
        self.resume_at = time.monotonic() + ACCEPT_PAUSE

    def resume(self, *, room: bool) -> float:
        """Listen again if there is ``room`` and no pause; returns when to call
        again for a pause still running (``math.inf`` for none)."""
        if self.open:
            return math.inf
        if self.resume_at > time.monotonic():
            return self.resume_at
        if room:
            self.start()
        return math.inf

"""The server's own exceptions: a request it refuses, a client that left."""

from __future__ import annotations


class ProtocolError(Exception):
    """A request the server answers itself with an error status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ClientGone(Exception):
    """The client closed or reset the connection, or stopped sending in time."""


class ClientWentAway(ClientGone):
    """Writing to the client failed: it left while we were answering."""

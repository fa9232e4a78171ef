"""TLS under asyncio: the first byte sorts TLS from plain HTTP; asyncio does TLS."""

from __future__ import annotations

import asyncio
import socket
import ssl

from runserver_plus.server.tls import HANDSHAKE_RECORD

#: How long a closing TLS connection waits for the client's close_notify.
TLS_CLOSE_TIMEOUT = 1.0  # s

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_streams(
    sock: socket.socket, context: ssl.SSLContext, timeout: float
) -> Streams | None:
    """Streams over an accepted, non-blocking socket on the HTTPS port.

    The first byte decides: a handshake record gets asyncio's TLS, whose
    handshake ends within ``timeout`` or fails with ``OSError``; anything
    else stays plain HTTP, for the connection to redirect. The byte is
    peeked, not read, because asyncio's TLS must see the ClientHello whole.
    None when the client sent nothing for ``timeout``, or closed. The caller
    closes ``sock`` when this returns None or raises.

    A stalled client holds a task and its socket, never a thread: the peek
    and the handshake wait in the event loop like any read.
    """
    first = await peek_first_byte(sock, timeout)
    if not first:
        return None
    tls = first[0] == HANDSHAKE_RECORD
    loop = asyncio.get_running_loop()
    # What asyncio.open_connection() does, for a socket that is accepted
    # rather than connected: only connect_accepted_socket() is TLS's server side.
    reader = asyncio.StreamReader()
    protocol = asyncio.StreamReaderProtocol(reader)
    transport, _ = await loop.connect_accepted_socket(
        lambda: protocol,
        sock,
        ssl=context if tls else None,
        ssl_handshake_timeout=timeout if tls else None,
    )
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def peek_first_byte(sock: socket.socket, timeout: float) -> bytes:
    """The connection's first byte, left unread; b"" when the client closed,
    was reset, or sent nothing for ``timeout``."""
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not woken.done():
            woken.set_result(None)

    loop.add_reader(sock, wake)
    timer = loop.call_later(timeout, wake)
    try:
        await woken
    finally:
        timer.cancel()
        loop.remove_reader(sock)
    try:
        return sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return b""  # the timer woke us: nothing came
    except OSError:
        return b""  # reset by the client


async def close_tls(writer: asyncio.StreamWriter) -> None:
    """Close a TLS connection: close_notify, then the socket.

    asyncio's TLS waits for the client's close_notify before it closes the
    socket; the wait is bounded here, so that a client that keeps its end
    open holds neither the drain nor the socket past the loop's end.
    """
    transport = writer.transport
    # Once only: a second close() of asyncio's TLS transport drops what
    # abort() needs, and the socket would stay open.
    if not transport.is_closing():
        transport.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), TLS_CLOSE_TIMEOUT)
    except (asyncio.TimeoutError, OSError):
        transport.abort()
    except asyncio.CancelledError:
        transport.abort()
        raise

"""Lingering closes: a FIN, never an RST, while the client may still be sending."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterable, Iterator

import pytest

from runserver_plus.server.linger import Lingerer
from runserver_plus.server.wsgi import WSGIEnviron
from tests.helpers import wait_until
from tests.live import serve_app

TIMEOUT = 10.0  # s

pytestmark = pytest.mark.usefixtures("collect_leaks")


@contextlib.contextmanager
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(server side, client side) of a real loopback TCP connection: RSTs are
    TCP's, a socketpair has none."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), TIMEOUT)
        server, _ = listener.accept()
    with server, client:
        yield server, client


def how_it_ends(sock: socket.socket, timeout: float = TIMEOUT) -> str:
    """ "FIN", "RST" or "open" (nothing within ``timeout``)."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return "RST"
    except TimeoutError:
        return "open"
    assert data == b"", f"unexpected bytes: {data!r}"
    return "FIN"


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"closed after {len(data)} of {size} bytes"
        data += chunk
    return data


def test_a_close_with_unread_input_keeps_the_response_and_ends_with_a_fin() -> None:
    lingerer = Lingerer()
    with tcp_pair() as (server, client):
        client.sendall(b"GET /next HTTP/1.1\r\n\r\n" * 100)  # never read by the server
        wait_until(lambda: server.recv(1, socket.MSG_PEEK), TIMEOUT, "no input")
        server.sendall(b"the last response")

        lingerer.close(server)

        assert read_exactly(client, 17) == b"the last response"
        assert how_it_ends(client) == "FIN"
        client.sendall(b"more, after the FIN")  # read and thrown away
        client.shutdown(socket.SHUT_WR)
        wait_until(lambda: not lingerer.lingering, TIMEOUT, "still lingering")
        assert server.fileno() == -1


def test_a_client_that_closed_first_is_closed_at_once() -> None:
    lingerer = Lingerer()
    with tcp_pair() as (server, client):
        client.sendall(b"unread")
        client.close()
        wait_until(lambda: server.recv(1, socket.MSG_PEEK), TIMEOUT, "no input")

        lingerer.close(server)

        # Its input read and its FIN seen there and then: no thread waits.
        assert server.fileno() == -1
        assert not lingerer.lingering


def test_a_client_that_never_closes_is_let_go_after_the_timeout() -> None:
    lingerer = Lingerer(timeout=0.3)
    with tcp_pair() as (server, client):
        started = time.monotonic()
        lingerer.close(server)

        assert lingerer.lingering
        assert how_it_ends(client) == "FIN"
        wait_until(lambda: not lingerer.lingering, TIMEOUT, "still lingering")
        assert time.monotonic() - started >= 0.3
        assert server.fileno() == -1


def test_finish_cuts_lingering_closes_short() -> None:
    lingerer = Lingerer(timeout=60)
    with tcp_pair() as (first, one), tcp_pair() as (second, other):
        lingerer.close(first)
        lingerer.close(second)
        started = time.monotonic()

        assert lingerer.finish(0.1) is False

        assert time.monotonic() - started < 5
        assert not lingerer.lingering
        assert first.fileno() == second.fileno() == -1
        assert how_it_ends(one) == how_it_ends(other) == "FIN"


def test_finish_returns_true_once_every_client_closed() -> None:
    lingerer = Lingerer(timeout=60)
    with tcp_pair() as (server, client):
        lingerer.close(server)
        client.close()

        assert lingerer.finish(TIMEOUT) is True
        assert server.fileno() == -1


# The server's own closes.


def hello_app(environ: WSGIEnviron, start_response) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Length", "5")])
    return [b"hello"]


#: More than the server reads before it answers a bad head (64 KiB a read).
JUNK = b"x" * (512 * 1024)


BAD_HEADER = b"POST / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"
HUGE_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 300_000 + b"\r\n\r\n"


@pytest.mark.parametrize("threading", [True, False], ids=["threads", "nothreading"])
@pytest.mark.parametrize(
    ("request_head", "status"),
    [(BAD_HEADER, 400), (HUGE_HEAD, 431)],
    ids=["400", "431"],
)
@pytest.mark.usefixtures("server_mode")  # both drivers close so
def test_an_error_response_with_unread_input_ends_with_a_fin(
    threading: bool, request_head: bytes, status: int
) -> None:
    with serve_app(hello_app, use_threading=threading) as live, live.connect() as c:
        # An error while the rest of the upload is still arriving: the server
        # must read it away, not reset the connection under it.
        c.send(request_head + JUNK)

        response = c.read_response()

        assert response.status == status
        assert response.header("Connection") == "close"
        assert how_it_ends(c.sock) == "FIN"


@pytest.mark.usefixtures("server_mode")  # both drivers close so
def test_a_response_that_closes_the_connection_survives_pipelined_requests() -> None:
    with serve_app(hello_app) as live, live.connect() as client:
        close = b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        # The requests after it are never answered, and must not reset the
        # connection before the client has read the answer it asked for.
        client.send(close + b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n" * 20000)

        response = client.read_response()

        assert response.body == b"hello"
        assert how_it_ends(client.sock) == "FIN"


def test_a_plain_close_with_unread_input_is_an_rst() -> None:
    # What the lingering close avoids, and proof that how_it_ends() tells
    # an RST from a FIN.
    with tcp_pair() as (server, client):
        client.sendall(b"unread")
        wait_until(lambda: server.recv(1, socket.MSG_PEEK), TIMEOUT, "no input")
        server.close()
        assert how_it_ends(client) == "RST"

"""End to end: keep-alive connections open at a stop get every answer, and a FIN.

Every test runs in both modes: the asyncio driver drains as the threaded one.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.harness import RunningServer, StartServer, descriptors
from tests.e2e.test_reload import save_versions_under_load
from tests.helpers import wait_until
from tests.live import RawClient, Response

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not Path("/proc/net/tcp").exists(),
        reason="sees the worker stop accepting through /proc",
    ),
]

ADDRPORT = "127.0.0.1:0"

RELOAD_TIMEOUT = 15.0  # s, from a save to the old worker closing its listener
EXIT_TIMEOUT = 10.0  # s, from a stop signal to the exit
#: The drain bound the idle-connection test runs with (the default is 3 s).
SHORT_DRAIN = 2.0  # s
#: How much later than the bound an idle connection may be closed: the
#: lingering close and a loaded machine.
CLOSE_SLACK = 3.0  # s
GATE_TIMEOUT = 10.0  # s, for a request to reach the gate view
HELLO = b"Hello, world!\n"


# Helpers.


def touch_py(path: Path) -> None:
    """Change a Python file without changing what it does: a restart."""
    path.write_text(path.read_text() + f"\n# edited {time.monotonic_ns()}\n")


def request_bytes(
    server: RunningServer, method: str, path: str, body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {server.host}:{server.port}"]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def connect(server: RunningServer) -> RawClient:
    return RawClient(socket.create_connection((server.host, server.port), 10))


def ask(
    client: RawClient,
    server: RunningServer,
    method: str,
    path: str,
    body: bytes = b"",
) -> Response:
    client.send(request_bytes(server, method, path, body))
    return client.read_response()


def serving_pid(client: RawClient, server: RunningServer) -> int:
    """The pid of the process serving this connection (kept alive)."""
    response = ask(client, server, "GET", "/pid/")
    assert response.status == 200
    assert response.header("Connection") is None  # kept alive
    return int(json.loads(response.body)["pid"])


def listener_inode(port: int) -> str:
    """The inode of the socket listening on 127.0.0.1:``port``."""
    local = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "0A":  # LISTEN
            return fields[9]
    raise AssertionError(f"nothing listens on port {port}")


def accepts(pid: int, inode: str) -> bool:
    """Whether process ``pid`` still holds the listening socket."""
    return f"socket:[{inode}]" in descriptors(pid).values()


def wait_stopped_accepting(pid: int, inode: str) -> None:
    """Wait until ``pid`` closed its listening socket: it was told to stop."""
    wait_until(
        lambda: not accepts(pid, inode),
        RELOAD_TIMEOUT,
        f"process {pid} kept its listening socket",
    )


def restart_and_wait(server: RunningServer, project_dir: Path, old_pid: int) -> None:
    inode = listener_inode(server.port)
    assert accepts(old_pid, inode)
    touch_py(project_dir / "testapp" / "views.py")
    wait_stopped_accepting(old_pid, inode)


def how_it_ends(client: RawClient, timeout: float) -> str:
    """How the server ends the connection: "FIN", "RST", or "open" when it
    is still open after ``timeout``; fails on bytes nobody asked for."""
    assert client.buffer == b"", client.buffer
    client.sock.settimeout(timeout)
    try:
        data = client.sock.recv(65536)
    except ConnectionResetError:
        return "RST"
    except TimeoutError:
        return "open"
    assert data == b"", f"unexpected bytes: {data!r}"
    return "FIN"


def open_gate(gate_dir: Path, name: str) -> None:
    (gate_dir / f"{name}.open").touch()


def wait_in_gate(gate_dir: Path, name: str) -> None:
    wait_until(
        (gate_dir / f"{name}.entered").exists,
        GATE_TIMEOUT,
        f"no request reached gate {name!r}",
    )


# At a restart.


@pytest.mark.usefixtures("server_mode")
def test_a_request_on_a_kept_alive_connection_at_a_restart_is_answered(
    start_server: StartServer, project_dir: Path
) -> None:
    server = start_server(ADDRPORT)
    with connect(server) as client:
        old = serving_pid(client, server)

        restart_and_wait(server, project_dir, old)
        # The client could not know of the stop: it reuses the connection.
        response = ask(client, server, "GET", "/hello/")

        assert response.status == 200
        assert response.body == HELLO
        assert response.header("Connection") == "close"
        assert how_it_ends(client, EXIT_TIMEOUT) == "FIN"


@pytest.mark.usefixtures("server_mode")
def test_a_post_with_a_body_on_a_kept_alive_connection_at_a_restart_is_answered(
    start_server: StartServer, project_dir: Path
) -> None:
    server = start_server(ADDRPORT)
    body = os.urandom(256 * 1024)
    with connect(server) as client:
        old = serving_pid(client, server)

        restart_and_wait(server, project_dir, old)
        response = ask(client, server, "POST", "/echo/", body)

        assert response.status == 200
        assert response.header("Connection") == "close"
        echoed = json.loads(response.body)
        assert echoed["sha256"] == hashlib.sha256(body).hexdigest()
        assert echoed["meta"]["CONTENT_LENGTH"] == str(len(body))
        assert how_it_ends(client, EXIT_TIMEOUT) == "FIN"


@pytest.mark.usefixtures("server_mode")
def test_unread_pipelined_requests_at_a_restart_get_a_fin_not_a_reset(
    start_server: StartServer, project_dir: Path, tmp_path: Path
) -> None:
    gate_dir = tmp_path / "gates"
    gate_dir.mkdir()
    server = start_server(ADDRPORT, env={"TESTPROJECT_GATE_DIR": str(gate_dir)})
    with connect(server) as client:
        old = serving_pid(client, server)
        client.send(request_bytes(server, "GET", "/gate/held/"))
        wait_in_gate(gate_dir, "held")

        restart_and_wait(server, project_dir, old)
        # Requests pipelined behind the held one: unread when it is answered.
        client.send(request_bytes(server, "GET", "/hello/") * 3)
        open_gate(gate_dir, "held")

        response = client.read_response()
        assert response.status == 200
        assert response.body == b"gate held opened\n"
        assert response.header("Connection") == "close"
        # The unanswered requests are the client's to send again; the close
        # must not reset the connection (which can destroy a response the
        # client has not read yet).
        assert how_it_ends(client, EXIT_TIMEOUT) == "FIN"


@pytest.mark.usefixtures("server_mode")
def test_an_idle_connection_is_kept_for_the_drain_bound_then_closed(
    start_server: StartServer, project_dir: Path
) -> None:
    server = start_server(ADDRPORT, env={"TESTPROJECT_DRAIN_TIMEOUT": str(SHORT_DRAIN)})
    with connect(server) as client:
        old = serving_pid(client, server)

        restart_and_wait(server, project_dir, old)
        stopped = time.monotonic()

        # Not closed at once: a request could be on its way. Half the bound
        # is long enough to see it, far from the bound's end.
        assert how_it_ends(client, SHORT_DRAIN / 2) == "open"
        assert how_it_ends(client, SHORT_DRAIN + CLOSE_SLACK) == "FIN"
        assert time.monotonic() - stopped < SHORT_DRAIN + CLOSE_SLACK


class KeepAliveClient(threading.Thread):
    """GETs ``path`` over two kept-alive connections in turn until stopped
    (bounded in requests and time), so one of them is always idle: a restart
    finds idle connections that are about to carry a request. A connection is
    replaced only after a response that says ``Connection: close``; a request
    that gets no answer is recorded in ``lost``. Never raises."""

    MAX_REQUESTS = 20000
    MAX_TIME = 60.0  # s

    def __init__(self, server: RunningServer, path: str) -> None:
        super().__init__(name="keep-alive-client", daemon=True)
        self.server = server
        self.path = path
        self.stop = threading.Event()
        self.bodies: list[bytes] = []
        self.lost: list[str] = []
        self.reconnects = 0

    def run(self) -> None:
        deadline = time.monotonic() + self.MAX_TIME
        clients: list[RawClient | None] = [None, None]
        try:
            for turn in range(self.MAX_REQUESTS):
                if self.stop.is_set() or time.monotonic() > deadline:
                    return
                slot = turn % 2
                client = clients[slot]
                try:
                    if client is None:
                        client = clients[slot] = connect(self.server)
                    response = ask(client, self.server, "GET", self.path)
                except OSError as error:  # ConnectionError included
                    self.lost.append(repr(error))
                    response = None
                if response is not None:
                    self.bodies.append(response.body)
                if response is None or response.header("Connection") == "close":
                    if client is not None:
                        client.close()
                    clients[slot] = None
                    self.reconnects += 1
        finally:
            for client in clients:
                if client is not None:
                    client.close()


@pytest.mark.usefixtures("server_mode")
def test_keep_alive_clients_lose_no_request_across_reloads(
    start_server: StartServer, project_dir: Path
) -> None:
    server = start_server(ADDRPORT)
    views = project_dir / "testapp" / "views.py"
    versions = [HELLO] + [f"Hello, version {n}!\n".encode() for n in range(1, 4)]
    clients = [KeepAliveClient(server, "/hello/") for _ in range(3)]
    save_versions_under_load(clients, views, versions, last=4)
    assert not any(client.is_alive() for client in clients)
    assert [client.lost for client in clients] == [[], [], []]
    # Each restart closed the kept-alive connections (after an answer).
    assert all(client.reconnects >= len(versions) - 1 for client in clients)


# At a stop.


@pytest.mark.usefixtures("server_mode")
def test_noreload_sigterm_answers_a_request_on_a_kept_alive_connection(
    start_server: StartServer,
) -> None:
    server = start_server(ADDRPORT, "--noreload")
    with connect(server) as client:
        assert serving_pid(client, server) == server.pid
        inode = listener_inode(server.port)

        server.send_signal(signal.SIGTERM)
        wait_stopped_accepting(server.pid, inode)
        response = ask(client, server, "GET", "/hello/")

        assert response.status == 200
        assert response.body == HELLO
        assert response.header("Connection") == "close"
        assert how_it_ends(client, EXIT_TIMEOUT) == "FIN"
    assert server.wait(EXIT_TIMEOUT) == 0

"""End to end: ``manage.py runserver 127.0.0.1:0 --noreload`` in one process."""

from __future__ import annotations

import re
import resource
import signal
import socket
from pathlib import Path

import django
import pytest
from django.utils.version import get_docs_version

from tests.e2e.harness import (
    BANNER_RE,
    HAS_TGKILL,
    REQUEST_TIMEOUT,
    RunningServer,
    StartServer,
    can_bind,
    descriptors,
    free_port_refused,
    tgkill,
    thread_ids,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

NORELOAD = ("127.0.0.1:0", "--noreload")

#: From a stop signal to the exit of a running server: the drain's bound (3 s)
#: and, in ASGI mode, up to LOOP_END_TIMEOUT (2 s) twice for the event loop's
#: thread to end; once in nine runs of the ASGI variant the exit took longer
#: than 5 s.
EXIT_TIMEOUT = 10.0  # s
FAILED_START_TIMEOUT = 30.0  # s, from spawn to the exit of a server that fails

STARTING = (
    "Starting WSGI development server at"
    if django.VERSION >= (6, 0)
    else "Starting development server at"
)
#: Django 5.2 added the production warning to the banner.
HAS_WARNING = django.VERSION >= (5, 2)
WARNING_LINES = (
    "WARNING: This is a development server. Do not use it in a production "
    "setting. Use a production WSGI or ASGI server instead.",
    "For more information on production servers see: "
    f"https://docs.djangoproject.com/en/{get_docs_version()}/howto/deployment/",
)
QUIT_LINE = "Quit the server with CONTROL-C."


def assert_in_order(lines: list[str], patterns: list[str]) -> None:
    """Assert that every regex in ``patterns`` fully matches a line, in order."""
    position = 0
    for pattern in patterns:
        for index in range(position, len(lines)):
            if re.fullmatch(pattern, lines[index]):
                position = index + 1
                break
        else:
            raise AssertionError(
                f"no line after line {position} matches {pattern!r} in:\n"
                + "\n".join(lines)
            )


def read_until_closed(sock: socket.socket) -> bytes:
    """Read until the server closes the connection (the socket timeout bounds it)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def stop_with_sigint(server: RunningServer) -> int:
    server.signal_group(signal.SIGINT)
    return server.wait(EXIT_TIMEOUT)


# Serving.


@pytest.mark.usefixtures("server_mode")
def test_serves_a_view(start_server: StartServer) -> None:
    server = start_server(*NORELOAD)

    response = server.get("/hello/")

    assert response.status == 200
    assert response.body == b"Hello, world!\n"
    assert response.headers["Content-Type"] == "text/plain"


def test_echo_sees_the_request_and_no_process_environment(
    start_server: StartServer,
) -> None:
    server = start_server(
        *NORELOAD,
        env={"RSP_E2E_CANARY": "leaked", "HTTP_X_CANARY": "leaked"},
    )

    response = server.request(
        "POST",
        "/echo/?a=1&b=%20c",
        body=b'{"x": 1}',
        headers={"Content-Type": "application/json", "X-Custom": "yes"},
    )

    assert response.status == 200
    data = response.json()
    assert data["method"] == "POST"
    assert data["path"] == "/echo/"
    assert data["query_string"] == "a=1&b=%20c"
    assert data["scheme"] == "http"
    assert data["body"] == '{"x": 1}'
    assert data["body_length"] == 8
    assert data["content_type"] == "application/json"
    assert data["content_length"] == "8"
    assert data["headers"]["HTTP_X_CUSTOM"] == "yes"
    assert data["headers"]["HTTP_HOST"] == f"127.0.0.1:{server.port}"
    meta = data["meta"]
    assert meta["REQUEST_METHOD"] == "POST"
    assert meta["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert meta["SERVER_PORT"] == str(server.port)
    assert meta["REMOTE_ADDR"] == "127.0.0.1"
    assert meta["wsgi.url_scheme"] == "http"
    # Django's wsgiref server copies os.environ into every request; ours must not.
    assert "HTTP_X_CANARY" not in data["headers"]
    leaked = {"RSP_E2E_CANARY", "PATH", "DJANGO_SETTINGS_MODULE"}
    assert leaked.isdisjoint(data["meta_keys"])


@pytest.mark.usefixtures("server_mode")
def test_serves_a_static_file(start_server: StartServer, project_dir: Path) -> None:
    server = start_server(*NORELOAD)

    response = server.get("/static/files/hello.txt")

    assert response.status == 200
    assert response.body == (project_dir / "static/files/hello.txt").read_bytes()
    assert response.headers["Content-Type"].startswith("text/plain")


@pytest.mark.usefixtures("server_mode")
def test_request_is_logged_on_stderr(start_server: StartServer) -> None:
    server = start_server(*NORELOAD)

    assert server.get("/hello/").status == 200

    server.wait_for_stderr(re.escape('"GET /hello/ HTTP/1.1" 200'), timeout=5.0)
    assert '"GET /hello/' not in server.stdout_text()
    # The whole line, as Django's default LOGGING writes it, plus the time taken.
    assert re.search(
        r"(?m)^\[\d\d/[A-Z][a-z]{2}/\d{4} \d\d:\d\d:\d\d\] "
        r'"GET /hello/ HTTP/1\.1" 200 14 \d+(?:\.\d)?m?s$',
        server.stderr_text(),
    )


def test_nothreading_closes_every_connection(start_server: StartServer) -> None:
    server = start_server(*NORELOAD, "--nothreading")

    for path in ("/hello/", "/static/files/hello.txt", "/hello/"):
        with socket.create_connection(
            (server.host, server.port), timeout=REQUEST_TIMEOUT
        ) as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
            )
            raw = read_until_closed(sock)  # The server closed its end.

        head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
        assert head.startswith("http/1.1 200"), raw[:200]
        assert "\r\nconnection: close" in head, head


# The banner.


def test_banner_is_flushed_while_serving(start_server: StartServer) -> None:
    server = start_server(*NORELOAD)
    last_line = WARNING_LINES[1] if HAS_WARNING else QUIT_LINE
    server.wait_for_stdout(re.escape(last_line), timeout=10.0)

    # Seen through a pipe without PYTHONUNBUFFERED, before any exit.
    assert server.poll() is None
    lines = server.stdout_text().splitlines()
    assert_in_order(
        lines,
        [
            re.escape("Performing system checks..."),
            "",
            re.escape("System check identified no issues (0 silenced)."),
            r"[A-Z][a-z]+ \d{2}, \d{4} - \d{2}:\d{2}:\d{2}",
            re.escape(
                f"Django version {django.get_version()}, "
                "using settings 'testproject.settings'"
            ),
            re.escape(f"{STARTING} http://127.0.0.1:{server.port}/"),
            re.escape(QUIT_LINE),
            *(["", *map(re.escape, WARNING_LINES)] if HAS_WARNING else []),
        ],
    )


def test_banner_port_is_the_bound_port(start_server: StartServer) -> None:
    server = start_server(*NORELOAD)

    assert server.port != 0
    assert server.get("/hello/").status == 200


@pytest.mark.skipif(not HAS_WARNING, reason="Django < 5.2 prints no warning")
@pytest.mark.parametrize(
    ("value", "hidden"), [("true", True), ("True", False), ("1", False)]
)
def test_hide_warning_only_with_exactly_true(
    start_server: StartServer, value: str, hidden: bool
) -> None:
    server = start_server(*NORELOAD, env={"DJANGO_RUNSERVER_HIDE_WARNING": value})
    if hidden:
        # Serving means the banner is complete; a stop now cannot cut it short.
        assert server.get("/hello/").status == 200
    else:
        server.wait_for_stdout(re.escape(WARNING_LINES[0]), timeout=10.0)

    assert stop_with_sigint(server) == 0

    stdout = server.stdout_text()
    assert QUIT_LINE in stdout
    assert (WARNING_LINES[0] not in stdout) is hidden


# Stopping.


@pytest.mark.usefixtures("server_mode")
def test_sigterm_exits_zero_and_frees_the_port(start_server: StartServer) -> None:
    server = start_server(*NORELOAD)
    assert server.get("/hello/").status == 200

    server.send_signal(signal.SIGTERM)

    assert server.wait(EXIT_TIMEOUT) == 0
    assert free_port_refused(server.host, server.port)
    assert can_bind(server.host, server.port)
    assert server.group_members() == []


@pytest.mark.skipif(not HAS_TGKILL, reason="needs Linux /proc and tgkill()")
@pytest.mark.usefixtures("server_mode")
def test_a_stop_signal_taken_by_another_thread_still_stops_the_server(
    start_server: StartServer,
) -> None:
    # The kernel may hand a process's signal to any of its threads; Python
    # runs the handler on the main thread, which must not sleep through it
    # (it did once in some fifteen runs of an HTTPS test).
    server = start_server(*NORELOAD)
    assert server.get("/hello/").status == 200
    others = [tid for tid in thread_ids(server.pid) if tid != server.pid]
    assert others, "the server has no threads besides the main one"

    tgkill(server.pid, others[0], signal.SIGTERM)

    assert server.wait(EXIT_TIMEOUT) == 0
    assert server.group_members() == []


@pytest.mark.usefixtures("server_mode")
def test_sigint_to_the_group_exits_zero_without_traceback(
    start_server: StartServer,
) -> None:
    server = start_server(*NORELOAD)
    assert server.get("/hello/").status == 200

    assert stop_with_sigint(server) == 0

    assert "Traceback" not in server.stderr_text()
    assert server.group_members() == []


def test_sigint_just_after_the_banner_exits_zero(start_server: StartServer) -> None:
    # Ctrl-C as soon as the banner shows: Django's inner_run catches it there.
    server = start_server(*NORELOAD)
    last_line = WARNING_LINES[1] if HAS_WARNING else QUIT_LINE
    server.wait_for_stdout(re.escape(last_line), timeout=10.0)

    assert stop_with_sigint(server) == 0

    assert "Traceback" not in server.stderr_text()


@pytest.mark.usefixtures("server_mode")
def test_sigterm_lets_an_in_flight_request_finish(start_server: StartServer) -> None:
    server = start_server(*NORELOAD)
    slow = server.connection()
    try:
        slow.request("GET", "/slow/?seconds=1")
        # Connections are accepted in order: once a later connection has its
        # answer, the slow request has been taken in and is running.
        assert server.get("/hello/").status == 200

        server.send_signal(signal.SIGTERM)

        response = slow.getresponse()
        assert response.status == 200
        assert response.read() == b"slept 1.0\n"
    finally:
        slow.close()
    assert server.wait(EXIT_TIMEOUT) == 0
    assert server.group_members() == []


# Refusing to start.


def assert_failed_start(server: RunningServer, code: int, stderr_line: str) -> None:
    assert server.wait(FAILED_START_TIMEOUT) == code
    stderr = server.stderr_text()
    assert stderr_line in stderr.splitlines(), stderr
    assert "Traceback" not in stderr
    assert not BANNER_RE.search(server.stdout_text())


def test_invalid_addrport_is_a_command_error(start_server: StartServer) -> None:
    server = start_server("abc", "--noreload", expect_ready=False)

    assert_failed_start(
        server,
        1,
        'CommandError: "abc" is not a valid port number or address:port pair.',
    )


def test_port_out_of_range_is_a_command_error(start_server: StartServer) -> None:
    server = start_server("127.0.0.1:99999", "--noreload", expect_ready=False)

    assert server.wait(FAILED_START_TIMEOUT) == 1
    stderr = server.stderr_text()
    assert "CommandError:" in stderr, stderr
    assert "Traceback" not in stderr


def test_port_in_use(start_server: StartServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        server = start_server(f"127.0.0.1:{port}", "--noreload", expect_ready=False)

        assert_failed_start(server, 1, "Error: That port is already in use.")


def test_unknown_option_is_a_usage_error(start_server: StartServer) -> None:
    server = start_server(*NORELOAD, "--bogus", expect_ready=False)

    assert server.wait(FAILED_START_TIMEOUT) == 2
    stderr = server.stderr_text()
    assert stderr.startswith("usage: manage.py runserver"), stderr
    assert "error: unrecognized arguments: --bogus" in stderr


def test_debug_false_needs_allowed_hosts(start_server: StartServer) -> None:
    server = start_server(*NORELOAD, env={"TESTPROJECT_DEBUG": "0"}, expect_ready=False)

    assert_failed_start(
        server,
        1,
        "CommandError: You must set settings.ALLOWED_HOSTS if DEBUG is False.",
    )
    assert server.stdout_text() == ""


@pytest.mark.skipif(
    not hasattr(resource, "prlimit") or not Path("/proc/self/fd").is_dir(),
    reason="needs resource.prlimit() and /proc (Linux)",
)
@pytest.mark.parametrize("options", [(), ("--nothreading",)], ids=["threads", "serial"])
def test_out_of_file_descriptors_waits_instead_of_failing(
    start_server: StartServer, options: tuple[str, ...]
) -> None:
    server = start_server(*NORELOAD, *options)
    # Serving once its loop has its selector; then, what it holds at rest.
    wait_until(
        lambda: "anon_inode:[eventpoll]" in descriptors(server.pid).values(),
        10,
        "the server never started its loop",
    )
    at_rest = descriptors(server.pid)
    assert server.get("/hello/").status == 200
    # Until that connection's close is over, the server holds more: the
    # socket and, for a lingering close, a selector and a wake pair.
    wait_until(
        lambda: descriptors(server.pid) == at_rest,
        10,
        "the server did not go back to the descriptors it held before a request",
    )
    in_use = set(at_rest)
    # Leave the server two free descriptor numbers: two more connections.
    free = [number for number in range(max(in_use) + 3) if number not in in_use]
    hard = resource.prlimit(server.pid, resource.RLIMIT_NOFILE)[1]
    resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (free[1] + 1, hard))
    request = b"GET /hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    clients = [
        socket.create_connection((server.host, server.port), 10) for _ in range(4)
    ]
    try:
        # Two are accepted; the others wait in the backlog, with one warning.
        # (Nothing is sent yet: --nothreading closes each connection it has
        # answered, which would free a descriptor for the next.)
        server.wait_for_stderr("Cannot accept connections for now")
        for client in clients[:2]:
            client.sendall(request)
        answered = [c for c in clients[:2] if c.recv(65536).startswith(b"HTTP/1.1 200")]
        assert len(answered) == 2
        resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (max(in_use) + 64, hard))
        for client in clients[:2]:
            client.close()
        for client in clients[2:]:
            client.sendall(request)
            assert client.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for client in clients:
            client.close()
    assert server.poll() is None
    warnings = server.stderr_text().count("Cannot accept connections for now")
    if options:
        # --nothreading closes each connection it answers: the descriptor that
        # frees may let an accept succeed before the test raises the limit,
        # and the next one then runs short again, with a warning of its own.
        assert warnings in (1, 2)
    else:
        assert warnings == 1
    assert "Traceback" not in server.stderr_text()

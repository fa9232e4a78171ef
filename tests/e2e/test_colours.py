"""End to end: the request log's colours in a terminal, as Django's."""

from __future__ import annotations

import http.client
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.harness import BANNER_RE, server_env

pytestmark = pytest.mark.e2e

DEADLINE = 30.0  # s, for the banner and for each log line
EXIT_TIMEOUT = 10.0  # s


class TerminalServer:
    """``runserver --noreload`` in a pseudo-terminal, as a developer runs it.

    stdout and stderr both go to the terminal: Django decides on colour by
    stdout, and on Django 4.2 colorama strips the codes from a stderr that
    is not a terminal.
    """

    def __init__(self, project: Path, *args: str) -> None:
        self.master, slave = pty.openpty()
        env = server_env()  # without DJANGO_COLORS: Django's default palette
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "runserver",
                "127.0.0.1:0",
                "--noreload",
                *args,
            ],
            cwd=project,
            env=env,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        self.terminal = b""

    def _read_until(self, fd: int, attribute: str, pattern: bytes) -> re.Match[bytes]:
        deadline = time.monotonic() + DEADLINE
        while (match := re.search(pattern, getattr(self, attribute))) is None:
            remaining = deadline - time.monotonic()
            assert remaining > 0, (
                f"{pattern!r} not seen in {getattr(self, attribute)!r}"
            )
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                assert chunk, f"EOF before {pattern!r}"
                setattr(self, attribute, getattr(self, attribute) + chunk)
        return match

    def port(self) -> int:
        match = self._read_until(self.master, "terminal", BANNER_RE.pattern.encode())
        return int(match.group(1).rsplit(b":", 1)[1].rstrip(b"/"))

    def log_line(self, pattern: bytes) -> bytes:
        return self._read_until(self.master, "terminal", pattern).group(0)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(EXIT_TIMEOUT)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(EXIT_TIMEOUT)
            os.close(self.master)


def get(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_request_lines_are_coloured_when_stdout_is_a_terminal(
    project_dir: Path,
) -> None:
    server = TerminalServer(project_dir)
    try:
        port = server.port()
        assert get(port, "/hello/") == 200
        assert get(port, "/nope/") == 404
        # Django's dark palette: 2xx plain SGR, 404 yellow; the time taken at the end.
        line = server.log_line(
            rb'\x1b\[m"GET /hello/ HTTP/1\.1" 200 14 [0-9.]+m?s\x1b\[0m'
        )
        assert line.startswith(b"\x1b[m")
        server.log_line(rb'\x1b\[33m"GET /nope/ HTTP/1\.1" 404 \d+ [0-9.]+m?s\x1b\[0m')
    finally:
        assert server.stop() == 0


def test_no_color_leaves_the_request_log_plain(project_dir: Path) -> None:
    server = TerminalServer(project_dir, "--no-color")
    try:
        port = server.port()
        assert get(port, "/nope/") == 404
        server.log_line(rb'[^\n]*"GET /nope/ HTTP/1\.1" 404[^\n]*\n')
        assert b"\x1b[" not in server.terminal  # neither the log nor the banner
    finally:
        assert server.stop() == 0

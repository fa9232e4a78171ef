"""A ``manage.py runserver`` subprocess under test: its output, HTTP and signals."""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

from runserver_plus.reloader.warm import PROCESS_NAME as WARM_PROCESS_NAME
from tests.helpers import wait_until

TESTPROJECT_DIR = Path(__file__).resolve().parents[2] / "testproject"

#: The banner line that says the socket is bound; Django < 6 has no "WSGI".
BANNER_RE = re.compile(r"Starting (?:[AW]SGI )?development server at (https?://\S+/)")

READY_TIMEOUT = 30.0  # s, from spawn to the banner line
STOP_TIMEOUT = 10.0  # s, from SIGTERM to exit at teardown
KILL_TIMEOUT = 5.0  # s, from SIGKILL to exit at teardown
REQUEST_TIMEOUT = 10.0  # s, per HTTP request made by the harness
READER_JOIN_TIMEOUT = 5.0  # s, for the pipe reader threads after exit

#: Set to "1" to run the suite against Django's own runserver, for comparison:
#: the differences show up as failures.
AGAINST_DJANGO_ENV = "RUNSERVER_PLUS_E2E_AGAINST_DJANGO"

#: Inherited variables that would change what the server under test does.
SCRUBBED_ENV = (
    "RUN_MAIN",
    "DJANGO_SETTINGS_MODULE",
    "DJANGO_COLORS",
    "DJANGO_RUNSERVER_HIDE_WARNING",
    "PYTHONUNBUFFERED",
    "TESTPROJECT_DEBUG",
    "TESTPROJECT_ALLOWED_HOSTS",
    "TESTPROJECT_DJANGO_RUNSERVER",
    "TESTPROJECT_DRAIN_TIMEOUT",
    "TESTPROJECT_GATE_DIR",
)

#: What a copy of testproject/ leaves out: local state of earlier runs.
copy_ignore = shutil.ignore_patterns(
    "db.sqlite3", "__pycache__", "*.pyc", "media", "staticroot"
)


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment a server under test starts with.

    ``PYTHONUNBUFFERED`` is left out on purpose: the banner must reach a pipe
    while the server runs without it.
    """
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    if os.environ.get(AGAINST_DJANGO_ENV) == "1":
        # Django's banner only reaches a pipe unbuffered.
        env.update(TESTPROJECT_DJANGO_RUNSERVER="1", PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def process_name(pid: int) -> str:
    """The name ``ps`` shows for ``pid`` ('' once it is gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().rstrip("\n")
    except OSError:
        return ""


def descriptors(pid: int) -> dict[int, str]:
    """What each open descriptor of ``pid`` points to ({} once it is gone)."""
    held: dict[int, str] = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return held
    for name in names:
        with contextlib.suppress(OSError):  # closed meanwhile
            held[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
    return held


def group_members(pgid: int) -> list[int]:
    """Return the pids of live (non-zombie) processes in process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # The process exited while we looked.
            continue
        # The command name is in parentheses and may contain spaces.
        fields = stat[stat.rindex(")") + 2 :].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in {"Z", "X"}:
            members.append(int(entry.name))
    return members


class OutputReader:
    """Collect the lines of one pipe on a thread; wait for a line with a deadline."""

    def __init__(self, name: str, pipe: IO[str]) -> None:
        self.name = name
        self._pipe = pipe
        self._lines: list[str] = []
        self._eof = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(
            target=self._read, name=f"runserver-{name}-reader", daemon=True
        )
        self._thread.start()

    def _read(self) -> None:
        for line in self._pipe:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    @property
    def eof(self) -> bool:
        with self._changed:
            return self._eof

    def lines(self) -> list[str]:
        """Return the lines read so far, each with its newline if it had one."""
        with self._changed:
            return list(self._lines)

    def text(self) -> str:
        return "".join(self.lines())

    def line_count(self) -> int:
        """Return how many lines were read so far; pass it as ``start`` later."""
        with self._changed:
            return len(self._lines)

    def wait_for(
        self, pattern: str | re.Pattern[str], timeout: float, start: int = 0
    ) -> re.Match[str] | None:
        """Return the match in the first line from index ``start`` on.

        Returns None when the deadline passes or the pipe closes first.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        index = start
        with self._changed:
            while True:
                for line in self._lines[index:]:
                    match = regex.search(line)
                    if match:
                        return match
                index = max(index, len(self._lines))
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def join(self, timeout: float) -> bool:
        """Wait for end of file; close the pipe. Return False if EOF never came."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        self._pipe.close()
        return True


@dataclass(frozen=True)
class Response:
    """One HTTP response as the harness received it."""

    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)


class RunningServer:
    """A ``manage.py runserver`` process in its own session, with its output."""

    def __init__(self, args: list[str], cwd: Path, env: Mapping[str, str]) -> None:
        self.args = args
        self.cwd = cwd
        self.process = subprocess.Popen(
            args,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
        )
        # start_new_session makes the child a group leader: pgid == pid.
        self.pgid = self.process.pid
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.stdout = OutputReader("stdout", self.process.stdout)
        self.stderr = OutputReader("stderr", self.process.stderr)
        self.base_url = ""
        self.host = ""
        self.port = 0
        #: How HTTPS requests verify the server: by default with the local
        #: certificate authority of RUNSERVER_PLUS_CA_DIR (see tests/conftest.py).
        self.tls_context: ssl.SSLContext | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def __repr__(self) -> str:
        return f"<RunningServer pid={self.pid} {self.base_url or 'not ready'}>"

    # Output.

    def stdout_text(self) -> str:
        return self.stdout.text()

    def stderr_text(self) -> str:
        return self.stderr.text()

    def output_report(self) -> str:
        """Both streams and the exit status, for failure messages."""
        code = self.process.poll()
        status = "still running" if code is None else f"exit code {code}"
        return (
            f"--- runserver pid {self.pid} ({status}): {' '.join(self.args[1:])}\n"
            f"--- stdout ---\n{self.stdout_text()}"
            f"--- stderr ---\n{self.stderr_text()}"
        )

    def wait_for_stdout(
        self, pattern: str | re.Pattern[str], timeout: float = 10.0, start: int = 0
    ) -> re.Match[str]:
        """Return the first stdout line from ``start`` on matching ``pattern``."""
        return self._wait_for(self.stdout, pattern, timeout, start)

    def wait_for_stderr(
        self, pattern: str | re.Pattern[str], timeout: float = 10.0, start: int = 0
    ) -> re.Match[str]:
        """Return the first stderr line from ``start`` on matching ``pattern``."""
        return self._wait_for(self.stderr, pattern, timeout, start)

    def _wait_for(
        self,
        reader: OutputReader,
        pattern: str | re.Pattern[str],
        timeout: float,
        start: int,
    ) -> re.Match[str]:
        match = reader.wait_for(pattern, timeout, start)
        if match is None:
            why = "the pipe closed" if reader.eof else f"{timeout} s passed"
            raise AssertionError(
                f"no {reader.name} line matched {pattern!r} before {why}\n"
                + self.output_report()
            )
        return match

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str:
        """Wait for the banner's URL line; remember and return the base URL."""
        match = self.wait_for_stdout(BANNER_RE, timeout)
        self.base_url = match.group(1)
        parts = urlsplit(self.base_url)
        assert parts.hostname is not None
        assert parts.port is not None
        self.host = parts.hostname
        self.port = parts.port
        return self.base_url

    # HTTP.

    def url(self, path: str) -> str:
        assert self.base_url, "the server is not ready"
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    def connection(
        self, timeout: float = REQUEST_TIMEOUT
    ) -> http.client.HTTPConnection:
        """Return a new, unopened connection to the server; the caller closes it."""
        assert self.port, "the server is not ready"
        if self.base_url.startswith("https://"):
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=self.https_context()
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def https_context(self) -> ssl.SSLContext:
        if self.tls_context is None:
            ca_dir = Path(os.environ["RUNSERVER_PLUS_CA_DIR"])
            self.tls_context = ssl.create_default_context(cafile=ca_dir / "ca.pem")
        return self.tls_context

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> Response:
        """Send one request on a new connection and read the whole response."""
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            response = conn.getresponse()
            return Response(
                response.status, response.reason, response.headers, response.read()
            )
        finally:
            conn.close()

    def get(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> Response:
        return self.request("GET", path, headers=headers, timeout=timeout)

    # Process control.

    def poll(self) -> int | None:
        return self.process.poll()

    def send_signal(self, sig: int) -> None:
        """Signal the server process only."""
        self.process.send_signal(sig)

    def signal_group(self, sig: int) -> None:
        """Signal every process of the server's own process group."""
        # ProcessLookupError: nobody is left in the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, sig)

    def wait(self, timeout: float) -> int:
        """Return the exit code, failing with the output if it takes longer."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"runserver did not exit within {timeout} s\n" + self.output_report()
            ) from None

    def group_members(self) -> list[int]:
        """Return the live processes left in the server's process group."""
        return group_members(self.pgid)

    def workers(self) -> list[int]:
        """The processes of the group other than the supervisor and a warm
        process waiting to become the next worker. A warm process that has
        just started is listed until its first lines rename it (a few tens
        of milliseconds)."""
        return [
            pid
            for pid in self.group_members()
            if pid != self.pid and process_name(pid) != WARM_PROCESS_NAME
        ]

    def stop(self) -> list[str]:
        """Stop the whole group, reap, close the pipes; return the problems seen."""
        problems: list[str] = []
        if self.process.poll() is not None and self.group_members():
            problems.append(
                f"the server exited but left processes behind: {self.group_members()}"
            )
        if self.process.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                problems.append(f"no exit within {STOP_TIMEOUT} s of SIGTERM")
        if self.group_members():
            self.signal_group(signal.SIGKILL)
        try:
            self.process.wait(KILL_TIMEOUT)
        except subprocess.TimeoutExpired:
            problems.append(f"no exit within {KILL_TIMEOUT} s of SIGKILL")
        try:
            wait_until(
                lambda: not self.group_members(),
                KILL_TIMEOUT,
                f"processes of group {self.pgid} outlived SIGKILL",
            )
        except AssertionError as exc:
            problems.append(str(exc))
        for reader in (self.stdout, self.stderr):
            if not reader.join(READER_JOIN_TIMEOUT):
                problems.append(f"{reader.name} never reached end of file")
        return problems


class StartServer(Protocol):
    """The ``start_server`` fixture's signature."""

    def __call__(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        expect_ready: bool = True,
    ) -> RunningServer: ...


def free_port_refused(host: str, port: int) -> bool:
    """Return True if nothing accepts connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=REQUEST_TIMEOUT):
            return False
    except ConnectionRefusedError:
        return True


def can_bind(host: str, port: int) -> bool:
    """Return True if a new listening socket can take ``host:port`` as servers do."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        sock.listen()
        return True


#: Project code for a gate: ``_rsp_wait_for_gate(VARIABLE)`` holds the
#: process (at most ``GATE_LIMIT`` seconds) until the file named by the
#: environment variable exists, so that a test chooses when a worker goes
#: on. Appended to a module of the project copy, before code that calls it.
GATE_LIMIT = 30.0  # s
GATE_CODE = f"""

import os as _os
import threading as _threading
import time as _time


def _rsp_wait_for_gate(variable):
    gate = _os.environ.get(variable)
    deadline = _time.monotonic() + {GATE_LIMIT}
    while gate and not _os.path.exists(gate):
        if _time.monotonic() > deadline:
            raise RuntimeError(f"the test never opened the gate ${{variable}}")
        _threading.Event().wait(0.02)
"""


_LIBC = ctypes.CDLL(None, use_errno=True)
#: Linux (glibc >= 2.30) can send a signal to one thread of a process.
HAS_TGKILL = hasattr(_LIBC, "tgkill") and Path("/proc/self/task").is_dir()


def tgkill(pid: int, tid: int, sig: int) -> None:
    """Send ``sig`` to thread ``tid`` of process ``pid`` only."""
    if _LIBC.tgkill(pid, tid, sig) != 0:
        raise OSError(ctypes.get_errno(), "tgkill failed")


def thread_ids(pid: int) -> list[int]:
    return sorted(int(tid) for tid in os.listdir(f"/proc/{pid}/task"))

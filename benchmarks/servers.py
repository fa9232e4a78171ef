"""Start and stop one `manage.py runserver` process on a temporary testproject copy."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTPROJECT = REPO_ROOT / "testproject"

START_TIMEOUT = 60.0  # s, from spawn to the port accepting connections
STOP_TIMEOUT = 10.0  # s, from SIGTERM to exit, before SIGKILL
POLL_INTERVAL = 0.1  # s, between two connection attempts while starting
MIGRATE_TIMEOUT = 120.0  # s

#: Left out of the copy: local state of a developer's checkout.
COPY_IGNORE = shutil.ignore_patterns(
    "__pycache__", "*.pyc", "db.sqlite3*", "staticroot", "media"
)


class ServerError(RuntimeError):
    """A server did not start, or died while it was being measured."""


def copy_testproject(destination: Path) -> Path:
    """Copy testproject/ into ``destination`` and return the copy's directory."""
    project = destination / "testproject"
    shutil.copytree(TESTPROJECT, project, ignore=COPY_IGNORE)
    return project


def server_env(*, django_runserver: bool) -> dict[str, str]:
    """The environment of a server process: ours by default, Django's on request."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    env["DJANGO_RUNSERVER_HIDE_WARNING"] = "true"
    env["PYTHONUNBUFFERED"] = "1"
    # A developer's Python writes bytecode, so a restart reads the project's
    # unchanged modules from __pycache__: a machine that says otherwise (CI
    # images often do) would time compilation, for every server alike.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("TESTPROJECT_DJANGO_RUNSERVER", None)
    if django_runserver:
        # testproject's settings then leave runserver_plus out of INSTALLED_APPS.
        env["TESTPROJECT_DJANGO_RUNSERVER"] = "1"
    return env


def migrate(project: Path, settings: str = "") -> None:
    """Run `manage.py migrate` once in the copy (with ``settings``, if given),
    raising with its output on failure."""
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "migrate",
            "--noinput",
            *([f"--settings={settings}"] if settings else []),
        ],
        cwd=project,
        # Without runserver_plus: the schema is the same, and a broken package
        # then shows up as "our server failed to start", with its output.
        env=server_env(django_runserver=True),
        capture_output=True,
        text=True,
        timeout=MIGRATE_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise ServerError(
            f"manage.py migrate failed with exit code {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Print rows as left-aligned columns, a rule under the first (the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print()


def spawn_group(
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdout: Any = subprocess.DEVNULL,
    stderr: Any = subprocess.DEVNULL,
    stdin: Any = subprocess.DEVNULL,
    text: bool = False,
) -> subprocess.Popen[Any]:
    """Start ``command`` as the leader of a session of its own, so that
    ``stop_group()`` ends it and every process it started, and nothing else."""
    return subprocess.Popen(
        list(command),
        cwd=cwd,
        env=dict(env),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        text=text,
        start_new_session=True,
    )


def group_pids(pgid: int) -> list[int]:
    """Every live (non-zombie) process whose process group is ``pgid`` (Linux)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stream:
                stat = stream.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            found.append(int(entry))
    return sorted(found)


def stop_group(process: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM the group ``process`` leads (see ``spawn_group``), wait up to
    ``timeout`` for it and every process of its group, then SIGKILL what is
    left; returns the leader's exit code."""
    pgid = process.pid
    if process.poll() is None or group_pids(pgid):
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)  # the group is checked below
        while group_pids(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)  # bounded wait for the rest of the group
        if process.poll() is None or group_pids(pgid):
            _signal_group(pgid, signal.SIGKILL)
            process.wait(timeout=timeout)
    return process.returncode


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # The group is the session start_new_session made: only our processes.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def spawn_runserver(
    project: Path,
    env: Mapping[str, str],
    port: int,
    args: Sequence[str],
    *,
    stdout_path: Path,
    stderr_path: Path,
) -> subprocess.Popen[bytes]:
    """``python manage.py runserver 127.0.0.1:<port> *args`` in its own session,
    its output going to files (a pipe nobody reads would fill up and block the
    server's request log)."""
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        return spawn_group(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", *args],
            cwd=project,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )


class ServerProcess:
    """`python manage.py runserver 127.0.0.1:<port> --noreload` in its own session.

    Output goes to files (a pipe nobody reads would fill up and block the
    server's request log); :meth:`output` reads them back for error messages.
    """

    def __init__(
        self,
        name: str,
        project: Path,
        env: Mapping[str, str],
        args: Sequence[str] = (),
        scheme: str = "http",
    ) -> None:
        self.name = name
        self.project = project
        self.env = dict(env)
        self.args = tuple(args)
        self.scheme = scheme
        self.port = 0
        self.exit_code: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_dir = project.parent / f"log-{name}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Spawn the server and return once its port accepts connections."""
        self._log_dir.mkdir(exist_ok=True)
        self.port = free_port()
        self._proc = spawn_runserver(
            self.project,
            self.env,
            self.port,
            ["--noreload", *self.args],
            stdout_path=self._log_dir / "stdout",
            stderr_path=self._log_dir / "stderr",
        )
        self._wait_until_accepting()

    def _wait_until_accepting(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return
            except OSError:
                pass
            try:
                # Doubles as the pause between attempts and the liveness check.
                code = self._proc.wait(timeout=POLL_INTERVAL)
            except subprocess.TimeoutExpired:
                continue
            self.exit_code = code
            raise ServerError(
                f"{self.name} exited with code {code} before accepting "
                f"connections on port {self.port}.\n{self.output()}"
            )
        self.stop()
        raise ServerError(
            f"{self.name} did not accept connections on port {self.port} within "
            f"{START_TIMEOUT:.0f} s.\n{self.output()}"
        )

    def check_alive(self) -> None:
        """Raise :class:`ServerError` with the server's output if it has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            self.exit_code = self._proc.returncode
            raise ServerError(
                f"{self.name} exited with code {self.exit_code} during the "
                f"benchmark.\n{self.output()}"
            )

    def stop(self) -> int | None:
        """Stop the server's process group (``stop_group``); the exit code."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self.exit_code = stop_group(proc)
        return self.exit_code

    def output(self, limit: int = 4000) -> str:
        """The tail of the server's stdout and stderr, for error messages."""
        parts = []
        for stream in ("stdout", "stderr"):
            path = self._log_dir / stream
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {self.name} {stream} ---\n{text[-limit:]}")
        return "\n".join(parts)

"""End to end: --run companion commands, real processes under a real supervisor."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runserver_plus.reloader.companions import STOP_TIMEOUT
from tests.e2e.harness import BANNER_RE, RunningServer, StartServer, group_members
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

#: From the banner to a companion's first line, and from a stop to its end.
COMPANION_TIMEOUT = 15.0  # s
RESTART_TIMEOUT = 20.0  # s

COMPANION = '''\
"""A companion for the tests: notes its process group, talks, waits to be stopped."""
import os, signal, subprocess, sys

name, mode = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode == "exit":
    print(f"{name} leaves", flush=True)
    sys.exit(3)
if mode == "child":
    subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
with open(f"{name}.group", "a") as notes:
    notes.write(f"{os.getpgrp()}\\n")
print(f"{name} started", flush=True)
print(f"{name} says hello on stderr", file=sys.stderr, flush=True)
while True:
    signal.pause()
'''


@pytest.fixture
def companion(project_dir: Path) -> Iterator[list[int]]:
    """Write the companion script; kill what its runs leave behind at teardown."""
    (project_dir / "companion.py").write_text(COMPANION)
    groups: list[int] = []
    yield groups
    for notes in project_dir.glob("*.group"):
        groups.extend(int(line) for line in notes.read_text().split())
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


def run_option(name: str, mode: str = "") -> str:
    return "--run=" + shlex.join(
        [sys.executable, "companion.py", name, *([mode] if mode else [])]
    )


def groups_of(project_dir: Path, name: str) -> list[int]:
    """The process groups of the runs of companion ``name`` so far."""
    notes = project_dir / f"{name}.group"
    return [int(g) for g in notes.read_text().split()] if notes.exists() else []


def started(server: RunningServer, project_dir: Path, name: str) -> int:
    """Wait for companion ``name`` to say it started; its process group."""
    server.wait_for_stdout(rf"\| (?:\x1b\[0m)?{name} started$", COMPANION_TIMEOUT)
    (group,) = wait_until(
        lambda: groups_of(project_dir, name), COMPANION_TIMEOUT, f"{name} noted"
    )
    return group


def wait_gone(group: int) -> None:
    wait_until(
        lambda: not group_members(group),
        COMPANION_TIMEOUT,
        f"processes of companion group {group} are still running",
    )


def line_index(lines: list[str], pattern: str) -> int:
    return next(i for i, line in enumerate(lines) if re.search(pattern, line))


def test_companions_start_after_the_first_worker_serves_with_prefixed_output(
    start_server: StartServer, project_dir: Path, companion: list[int]
) -> None:
    server = start_server(
        "127.0.0.1:0", run_option("alpha"), run_option("beta"), "--force-color"
    )

    alpha, beta = (
        started(server, project_dir, "alpha"),
        started(server, project_dir, "beta"),
    )

    assert alpha != beta  # each in its own process group
    assert os.getpgid(server.pid) not in (alpha, beta)
    lines = server.stdout.lines()
    banner = line_index(lines, BANNER_RE.pattern)
    assert banner < line_index(lines, r"alpha started")
    assert banner < line_index(lines, r"beta started")
    # Prefixed with a short name, padded to one width, one colour each.
    first = re.search(
        r"^(\x1b\[\d+m)companion\.py   \| \x1b\[0malpha started$", "".join(lines), re.M
    )
    second = re.search(
        r"^(\x1b\[\d+m)companion\.py-2 \| \x1b\[0mbeta started$", "".join(lines), re.M
    )
    assert first is not None, lines
    assert second is not None, lines
    assert first.group(1) != second.group(1)
    server.wait_for_stderr(
        r"^\x1b\[\d+mcompanion\.py   \| \x1b\[0malpha says hello on stderr$"
    )
    assert server.get("/hello/").status == 200


def test_companions_keep_running_across_restarts(
    start_server: StartServer, project_dir: Path, companion: list[int]
) -> None:
    server = start_server("127.0.0.1:0", run_option("alpha"))
    group = started(server, project_dir, "alpha")
    first_pid = server.get("/pid/").json()["pid"]

    views = project_dir / "testapp" / "views.py"
    views.write_text(views.read_text() + "\n# saved\n")
    wait_until(
        lambda: server.get("/pid/").json()["pid"] != first_pid,
        RESTART_TIMEOUT,
        "no new worker after the save",
    )

    assert group_members(group), "the companion did not survive the restart"
    assert groups_of(project_dir, "alpha") == [group]  # not started again
    assert server.stdout_text().count("alpha started") == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_companions_are_stopped_with_the_server(
    start_server: StartServer, project_dir: Path, companion: list[int], signum: int
) -> None:
    server = start_server("127.0.0.1:0", run_option("alpha", "child"))
    group = started(server, project_dir, "alpha")
    assert len(group_members(group)) == 3  # guard, companion, its child

    server.signal_group(signum)  # as Ctrl-C in a terminal reaches the group

    assert server.wait(COMPANION_TIMEOUT) == 0
    wait_gone(group)


def test_companions_die_with_a_killed_supervisor(
    start_server: StartServer, project_dir: Path, companion: list[int]
) -> None:
    server = start_server(
        "127.0.0.1:0", run_option("alpha", "child"), run_option("beta")
    )
    groups = [started(server, project_dir, n) for n in ("alpha", "beta")]

    server.send_signal(signal.SIGKILL)

    server.wait(COMPANION_TIMEOUT)
    for group in groups:
        wait_gone(group)
    # The worker notices it is orphaned and stops by itself.
    wait_gone(server.pgid)


def test_a_companion_that_ignores_sigterm_is_killed_after_the_bound(
    start_server: StartServer, project_dir: Path, companion: list[int]
) -> None:
    server = start_server("127.0.0.1:0", run_option("alpha", "stubborn"))
    group = started(server, project_dir, "alpha")

    server.send_signal(signal.SIGTERM)

    assert server.wait(STOP_TIMEOUT + COMPANION_TIMEOUT) == 0
    assert not group_members(group)


def test_a_command_that_exits_is_reported_once_and_not_restarted(
    start_server: StartServer, project_dir: Path, companion: list[int]
) -> None:
    server = start_server("127.0.0.1:0", run_option("alpha", "exit"))
    server.wait_for_stdout(r"\| alpha leaves$", COMPANION_TIMEOUT)
    server.wait_for_stderr(
        r"^companion\.py \| exited with status 3; it is not restarted\.$",
        COMPANION_TIMEOUT,
    )
    first_pid = server.get("/pid/").json()["pid"]

    views = project_dir / "testapp" / "views.py"
    views.write_text(views.read_text() + "\n# saved\n")
    wait_until(
        lambda: server.get("/pid/").json()["pid"] != first_pid,
        RESTART_TIMEOUT,
        "no new worker after the save",
    )

    assert server.get("/hello/").status == 200
    assert server.stdout_text().count("alpha leaves") == 1
    assert server.stderr_text().count("exited with status") == 1


def test_a_command_that_cannot_start_is_one_line_and_the_server_runs_on(
    start_server: StartServer, project_dir: Path
) -> None:
    (project_dir / "not-executable.sh").write_text("#!/bin/sh\necho never\n")
    server = start_server(
        "127.0.0.1:0",
        "--run=no-such-command-runserver-plus --watch",
        "--run=./not-executable.sh",
        "--run=./missing.sh",
    )
    server.wait_for_stderr(
        r'^--run "no-such-command-runserver-plus --watch" cannot start: '
        r"no-such-command-runserver-plus was not found on PATH\. The server runs on\.$",
        COMPANION_TIMEOUT,
    )
    server.wait_for_stderr(
        r'^--run "\./not-executable\.sh" cannot start: \./not-executable\.sh is not '
        r"executable\. The server runs on\.$",
        COMPANION_TIMEOUT,
    )
    server.wait_for_stderr(
        r'^--run "\./missing\.sh" cannot start: \./missing\.sh does not exist\. '
        r"The server runs on\.$",
        COMPANION_TIMEOUT,
    )
    assert server.get("/hello/").status == 200
    assert "Traceback" not in server.stderr_text()
    assert server.stderr_text().count("cannot start") == 3

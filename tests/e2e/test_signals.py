"""End to end: stopping the supervisor and its worker by signal, as users do."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runserver_plus.reloader.watcher import Watcher
from tests.e2e.harness import (
    GATE_CODE,
    HAS_TGKILL,
    RunningServer,
    StartServer,
    can_bind,
    free_port_refused,
    tgkill,
    thread_ids,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

ADDRPORT = "127.0.0.1:0"

EXIT_TIMEOUT = 8.0  # s, from a stop signal to the supervisor's exit
#: A worker whose supervisor was killed drains briefly and exits by itself.
ORPHAN_EXIT_TIMEOUT = 2.0  # s
RELOAD_TIMEOUT = 15.0  # s, from a save to the error page or a new worker
#: Time the supervisor gets to act on a stop signal when the test cannot see
#: it do so; it takes milliseconds.
STOP_HANDLING = 0.3  # s


def worker_pid(server: RunningServer) -> int:
    response = server.get("/pid/")
    assert response.status == 200
    pid = int(response.json()["pid"])
    assert pid != server.pid
    assert server.pid in parents(pid)
    return pid


def parents(pid: int) -> list[int]:
    """The parent of ``pid`` (from /proc; empty where there is none)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return [int(stat[stat.rindex(")") + 2 :].split()[1])]


def process_gone(pid: int, *, zombie_ok: bool = False) -> bool:
    """True once ``pid`` no longer exists (signal 0 only: nothing is sent).

    With ``zombie_ok`` an exited but unreaped process counts as gone: an
    orphan's new parent (PID 1 of a container, say) may never reap it.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    if not zombie_ok:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2 :].split()[0] in {"Z", "X"}


def assert_all_gone(server: RunningServer, worker: int) -> None:
    assert process_gone(worker), f"worker {worker} is still there"
    assert server.group_members() == []
    assert free_port_refused(server.host, server.port)
    assert can_bind(server.host, server.port)


def ctrl_c(server: RunningServer) -> None:
    """The terminal sends SIGINT to the whole foreground process group."""
    server.signal_group(signal.SIGINT)


def sigint(server: RunningServer) -> None:
    server.send_signal(signal.SIGINT)


def sigterm(server: RunningServer) -> None:
    server.send_signal(signal.SIGTERM)


STOPS = [ctrl_c, sigint, sigterm]


@pytest.mark.parametrize("stop", STOPS)
@pytest.mark.usefixtures("server_mode")
def test_stop_drains_the_worker_and_exits_zero(
    start_server: StartServer, stop: Callable[[RunningServer], None]
) -> None:
    server = start_server(ADDRPORT)
    worker = worker_pid(server)
    slow = server.connection()
    try:
        slow.request("GET", "/slow/?seconds=1")
        # Connections are accepted in order: once a later one is answered,
        # the slow request is running in the worker.
        assert server.get("/hello/").status == 200

        stop(server)

        response = slow.getresponse()
        assert response.status == 200
        assert response.read() == b"slept 1.0\n"
    finally:
        slow.close()
    assert server.wait(EXIT_TIMEOUT) == 0
    assert_all_gone(server, worker)
    assert "Traceback" not in server.stderr_text()


def test_ctrl_c_reaching_the_worker_after_the_supervisor_still_drains(
    start_server: StartServer,
) -> None:
    # Ctrl-C signals the supervisor and the worker at once; the supervisor's
    # stop message may reach the worker before the worker's own SIGINT is
    # handled. That SIGINT is still the user's first Ctrl-C: no abort.
    server = start_server(ADDRPORT)
    worker = worker_pid(server)
    slow = server.connection()
    try:
        slow.request("GET", "/slow/?seconds=2")
        assert server.get("/hello/").status == 200  # the slow one is running

        server.send_signal(signal.SIGINT)
        threading.Event().wait(STOP_HANDLING)  # the stop message is there
        assert server.pid in parents(worker)
        os.kill(worker, signal.SIGINT)

        response = slow.getresponse()
        assert response.status == 200
        assert response.read() == b"slept 2.0\n"
    finally:
        slow.close()
    assert server.wait(EXIT_TIMEOUT) == 0
    assert_all_gone(server, worker)


@pytest.mark.parametrize("stop", STOPS)
@pytest.mark.usefixtures("server_mode")
def test_stop_when_idle_is_prompt(
    start_server: StartServer, stop: Callable[[RunningServer], None]
) -> None:
    server = start_server(ADDRPORT)
    worker = worker_pid(server)

    started = time.monotonic()
    stop(server)

    assert server.wait(EXIT_TIMEOUT) == 0
    # Nothing to drain: no reason to wait for any bound.
    assert time.monotonic() - started < 2.0
    assert_all_gone(server, worker)


@pytest.mark.usefixtures("server_mode")
def test_sigkill_of_the_supervisor_leaves_no_worker_behind(
    start_server: StartServer,
) -> None:
    server = start_server(ADDRPORT)
    worker = worker_pid(server)

    server.send_signal(signal.SIGKILL)
    killed = time.monotonic()

    assert server.wait(EXIT_TIMEOUT) == -signal.SIGKILL
    wait_until(
        lambda: process_gone(worker, zombie_ok=True),
        ORPHAN_EXIT_TIMEOUT,
        f"the orphaned worker {worker} did not exit by itself",
    )
    wait_until(
        lambda: can_bind(server.host, server.port),
        max(0.1, ORPHAN_EXIT_TIMEOUT - (time.monotonic() - killed)),
        "the port is still taken after the orphaned worker exited",
    )
    assert free_port_refused(server.host, server.port)
    assert server.group_members() == []


def test_stop_while_the_error_page_is_served(
    start_server: StartServer, project_dir: Path
) -> None:
    server = start_server(ADDRPORT)
    worker = worker_pid(server)
    views = project_dir / "testapp" / "views.py"
    views.write_text(views.read_text() + "\ndef broken(:\n")

    def error_page() -> bool:
        try:
            return server.get("/hello/").status == 500
        except OSError:
            return False

    wait_until(error_page, RELOAD_TIMEOUT, "no error page for the broken project")

    server.send_signal(signal.SIGTERM)

    assert server.wait(EXIT_TIMEOUT) == 0
    assert_all_gone(server, worker)


@pytest.mark.skipif(not HAS_TGKILL, reason="needs Linux /proc and tgkill()")
def test_a_stop_signal_taken_by_another_thread_of_the_supervisor_is_obeyed(
    start_server: StartServer,
) -> None:
    server = start_server(ADDRPORT)
    worker = worker_pid(server)
    others = [tid for tid in thread_ids(server.pid) if tid != server.pid]
    assert others, "the supervisor has no threads besides the main one"

    # While the supervisor's main thread starts a worker (fork/exec), it
    # blocks signals, and the kernel gives a SIGTERM to another thread. Send
    # it to another thread directly, so that this is not left to chance.
    tgkill(server.pid, others[0], signal.SIGTERM)

    assert server.wait(EXIT_TIMEOUT) == 0
    assert_all_gone(server, worker)


#: Appended to the copy's views.py: a worker start that waits (bounded) for
#: a file, so that the test can stop the server while a worker is starting.
START_GATE = GATE_CODE + '\n_rsp_wait_for_gate("RSP_TEST_START_GATE")\n'


@pytest.mark.parametrize("stop", STOPS)
def test_stop_while_a_worker_starts(
    start_server: StartServer,
    project_dir: Path,
    tmp_path: Path,
    stop: Callable[[RunningServer], None],
) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    views = project_dir / "testapp" / "views.py"
    views.write_text(views.read_text() + START_GATE)
    server = start_server(ADDRPORT, env={"RSP_TEST_START_GATE": str(gate)})
    first = worker_pid(server)
    gate.unlink()

    views.write_text(views.read_text() + "\n# edited\n")
    # The old worker is gone once the new one is at the gate.
    wait_until(
        lambda: process_gone(first) and len(server.group_members()) == 2,
        RELOAD_TIMEOUT,
        "no new worker started",
    )
    starting = next(pid for pid in server.group_members() if pid != server.pid)

    stop(server)

    assert server.wait(EXIT_TIMEOUT) == 0
    assert_all_gone(server, starting)


#: Added to the copy's testapp/apps.py: an autoreload_started receiver (run
#: by a worker after the checks, before it reports ready) that logs the start
#: and waits, bounded, for a gate file to exist.
READY_GATE = (
    GATE_CODE
    + """
from django.utils.autoreload import autoreload_started


def _hold_before_ready(sender, **kwargs):
    with open(_os.environ["RSP_TEST_READY_LOG"], "a") as log:
        log.write(f"{_os.getpid()}\\n")
    _rsp_wait_for_gate("RSP_TEST_READY_GATE")


if _os.environ.get("RSP_TEST_READY_GATE"):
    autoreload_started.connect(_hold_before_ready, dispatch_uid="rsp-test-gate")
"""
)


def test_a_stop_while_a_worker_starts_with_a_change_pending(
    start_server: StartServer, project_dir: Path, tmp_path: Path
) -> None:
    gate, log = tmp_path / "gate", tmp_path / "ready.log"
    gate.touch()
    apps = project_dir / "testapp" / "apps.py"
    apps.write_text(apps.read_text() + READY_GATE)
    server = start_server(
        ADDRPORT,
        env={"RSP_TEST_READY_GATE": str(gate), "RSP_TEST_READY_LOG": str(log)},
    )
    first = worker_pid(server)
    views = project_dir / "testapp" / "views.py"

    def starts() -> int:
        return len(log.read_text().splitlines()) if log.exists() else 0

    gate.unlink()
    views.write_text(views.read_text() + "\n# first save\n")
    wait_until(lambda: starts() == 2, RELOAD_TIMEOUT, "no second worker started")
    second = next(
        pid for pid in server.group_members() if pid not in {server.pid, first}
    )
    # Another save while the second worker starts: the supervisor keeps it for
    # when that worker is ready. It gives no sign of having it: allow it the
    # watcher's longest batch.
    views.write_text(views.read_text() + "\n# second save\n")
    pause = threading.Event()
    pause.wait(Watcher.DEBOUNCE / 1000 + 0.5)

    server.send_signal(signal.SIGTERM)
    # The supervisor tells the starting worker to stop (again without a sign
    # to wait for); then the worker reports ready all the same.
    pause.wait(STOP_HANDLING)
    gate.touch()

    assert server.wait(EXIT_TIMEOUT) == 0
    assert starts() == 2, "a worker was started after the stop"
    assert_all_gone(server, second)

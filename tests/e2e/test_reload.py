"""End to end: the default mode reloads on changes, keeps the socket, shows failures."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from runserver_plus.reloader.errorpage import LONG_POLL, STATUS_PATH
from runserver_plus.reloader.warm import PROCESS_NAME as WARM_PROCESS_NAME
from runserver_plus.reloader.watcher import Watcher
from tests.e2e.harness import (
    BANNER_RE,
    GATE_CODE,
    Response,
    RunningServer,
    StartServer,
    process_name,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

ADDRPORT = "127.0.0.1:0"

RELOAD_TIMEOUT = 15.0  # s, from a save to the new worker answering
OFFER_TIMEOUT = 10.0  # s, from a save to a file_changed receiver seeing it
#: How long the tests watch for something that must not happen (a restart, a
#: respawn): longer than the watcher's longest batch plus a worker's start.
QUIET_WINDOW = Watcher.DEBOUNCE / 1000 + 1.0  # s
#: A pending status poll must be answered this soon after the fixing save,
#: far below the poll's own bound (LONG_POLL).
POLL_ANSWER_TIMEOUT = 8.0  # s

START_LOG_ENV = "RSP_TEST_START_LOG"
START_GATE_ENV = "RSP_TEST_START_GATE"

#: Appended to the copy's views.py: one line per import of the module, that
#: is per worker start (hupper's way of counting restarts), and an optional
#: gate that holds a starting worker until a file exists.
START_HOOKS = (
    GATE_CODE
    + f"""
if _os.environ.get("{START_LOG_ENV}"):
    with open(_os.environ["{START_LOG_ENV}"], "a") as _log:
        _log.write(f"{{_os.getpid()}} {{_os.environ.get('RUN_MAIN')}}\\n")
_rsp_wait_for_gate("{START_GATE_ENV}")
"""
)

HELLO = b"Hello, world!\n"


# Helpers.


@dataclass
class StartLog:
    """The file the project's views module appends to at every worker start."""

    path: Path

    def lines(self) -> list[str]:
        try:
            return self.path.read_text().splitlines()
        except FileNotFoundError:
            return []

    def count(self) -> int:
        return len(self.lines())

    def wait_for(self, count: int, timeout: float = RELOAD_TIMEOUT) -> None:
        wait_until(
            lambda: self.count() >= count,
            timeout,
            f"expected {count} worker starts in {self.path}",
        )


@pytest.fixture
def start_log(project_dir: Path, tmp_path: Path) -> StartLog:
    views = project_dir / "testapp" / "views.py"
    views.write_text(views.read_text() + START_HOOKS)
    return StartLog(tmp_path / "starts.log")


def pid_info(server: RunningServer) -> dict[str, Any]:
    response = server.get("/pid/")
    assert response.status == 200, response.body[:2000]
    data: dict[str, Any] = response.json()
    return data


def saved_and_restarted(server: RunningServer, file: Path, boot_id: str) -> bool:
    """Save ``file`` once more and say whether a worker other than ``boot_id``
    answers: for waits where the save may land before its watch is live."""
    touch_py(file)
    response = get_or_none(server, "/pid/")
    return (
        response is not None
        and response.status == 200
        and response.json()["boot_id"] != boot_id
    )


def get_or_none(server: RunningServer, path: str) -> Response | None:
    """GET ``path``; None when the connection fails (only
    test_no_connection_is_refused_during_a_restart holds that against the
    server, so that one bug does not hide what the other tests check)."""
    try:
        return server.get(path)
    except (OSError, http.client.HTTPException):
        return None


def wait_for_new_worker(
    server: RunningServer, old_boot_id: str, timeout: float = RELOAD_TIMEOUT
) -> dict[str, Any]:
    """Return /pid/ once a worker other than ``old_boot_id``'s answers it."""

    def new_worker() -> dict[str, Any] | None:
        response = get_or_none(server, "/pid/")
        if response is None or response.status != 200:
            return None
        data: dict[str, Any] = response.json()
        return data if data["boot_id"] != old_boot_id else None

    data = wait_until(new_worker, timeout, "no new worker answered /pid/")
    assert data is not None
    return data


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def touch_py(path: Path) -> None:
    """Change (or create) a Python file without changing what it does."""
    text = path.read_text() if path.exists() else ""
    path.write_text(text + f"\n# edited {time.monotonic_ns()}\n")


def reload_lines(server: RunningServer) -> list[str]:
    return [
        line
        for line in server.stderr_text().splitlines()
        if line.endswith(" changed, reloading.")
    ]


def assert_no_restart_within(
    start_log: StartLog, count: int, window: float = QUIET_WINDOW
) -> None:
    """Fail if more than ``count`` workers start during ``window`` seconds."""
    deadline = time.monotonic() + window
    pause = threading.Event()
    while time.monotonic() < deadline:
        assert start_log.count() <= count, start_log.lines()
        pause.wait(0.05)
    assert start_log.count() == count, start_log.lines()


# Restarting on a .py change.


def save_in_place(path: Path, text: str) -> None:
    path.write_text(text)


def save_by_rename(path: Path, text: str) -> None:
    """Write a temporary file and rename it over the original, as many editors do."""
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


def save_like_vim(path: Path, text: str) -> None:
    """Vim's default on Linux: probe file 4913, keep a backup, write anew."""
    probe = path.with_name("4913")
    probe.write_text("")
    probe.unlink()
    backup = path.with_name(path.name + "~")
    os.replace(path, backup)
    path.write_text(text)
    backup.unlink()


@pytest.mark.parametrize("save", [save_in_place, save_by_rename, save_like_vim])
def test_a_py_save_restarts_the_worker_on_the_same_port(
    start_server: StartServer,
    project_dir: Path,
    start_log: StartLog,
    save: Callable[[Path, str], None],
) -> None:
    server = start_server(ADDRPORT, env={START_LOG_ENV: str(start_log.path)})
    before = pid_info(server)
    banners = server.stdout.line_count()
    views = project_dir / "testapp" / "views.py"

    save(views, views.read_text().replace("Hello, world!", "Hello, reloaded!"))

    after = wait_for_new_worker(server, before["boot_id"])
    assert after["pid"] != before["pid"]
    assert server.get("/hello/").body == b"Hello, reloaded!\n"
    # The new worker printed its banner for the same port, also for port 0.
    banner = server.wait_for_stdout(BANNER_RE, timeout=5.0, start=banners)
    assert banner.group(1) == server.base_url
    assert server.port != 0
    assert reload_lines(server) == [f"{views} changed, reloading."]
    assert start_log.count() == 2


@pytest.mark.usefixtures("server_mode")
def test_the_worker_runs_with_run_main_and_the_supervisor_never_serves(
    start_server: StartServer, start_log: StartLog
) -> None:
    server = start_server(ADDRPORT, env={START_LOG_ENV: str(start_log.path)})

    info = pid_info(server)

    assert info["run_main"] == "true"
    assert info["pid"] != server.pid
    # Only the worker imported the project's views.
    assert start_log.lines() == [f"{info['pid']} true"]


@pytest.mark.usefixtures("server_mode")
def test_console_lines_as_django(start_server: StartServer, project_dir: Path) -> None:
    server = start_server(ADDRPORT)
    before = pid_info(server)
    server.wait_for_stderr(r"^Watching for file changes with \S+", timeout=5.0)
    views = project_dir / "testapp" / "views.py"

    touch_py(views)

    wait_for_new_worker(server, before["boot_id"])
    server.wait_for_stderr(
        rf"^{re.escape(str(views))} changed, reloading\.$", timeout=5.0
    )
    watching = [
        line
        for line in server.stderr_text().splitlines()
        if line.startswith("Watching for")
    ]
    assert len(watching) == 2, server.stderr_text()
    assert "Traceback" not in server.stderr_text()


@pytest.mark.usefixtures("server_mode")
def test_no_connection_is_refused_during_a_restart(
    start_server: StartServer, project_dir: Path
) -> None:
    server = start_server(ADDRPORT)
    views = project_dir / "testapp" / "views.py"
    # Several restarts: a lost connection is a race, each restart a chance.
    versions = [HELLO] + [f"Hello, version {n}!\n".encode() for n in range(1, 6)]
    clients = [Client(server, "/hello/") for _ in range(8)]
    save_versions_under_load(clients, views, versions)
    assert not any(client.is_alive() for client in clients)
    errors = [error for client in clients for error in client.errors]
    requests = sum(len(client.statuses) + len(client.errors) for client in clients)
    assert errors == [], f"{len(errors)} of {requests} requests failed"
    for client in clients:
        assert set(client.statuses) == {200}
        # Each version until the next worker answers, then only the next.
        order = [versions.index(body) for body in client.bodies]
        assert order == sorted(order)
        assert set(order) == set(range(len(versions)))


class LoadClient(Protocol):
    """A client thread that asks until stopped and keeps the bodies it got."""

    MAX_TIME: float
    stop: threading.Event
    bodies: list[bytes]

    def start(self) -> None: ...
    def join(self, timeout: float | None = None) -> None: ...


def wait_for_clients(clients: Sequence[LoadClient], body: bytes, last: int = 5) -> None:
    """Wait until every client's ``last`` answers were ``body``."""
    wait_until(
        lambda: all(c.bodies[-last:] == [body] * last for c in clients),
        RELOAD_TIMEOUT,
        f"the clients did not get {body!r}",
    )


def save_versions_under_load(
    clients: Sequence[LoadClient], path: Path, versions: list[bytes], last: int = 5
) -> None:
    """Start ``clients``; once they are served each version, save the next
    into ``path``; once they are served the last, stop and join them."""
    for client in clients:
        client.start()
    try:
        for old, new in itertools.pairwise(versions):
            wait_for_clients(clients, old, last)
            edit(path, old.decode().strip(), new.decode().strip())
        wait_for_clients(clients, versions[-1], last)
    finally:
        for client in clients:
            client.stop.set()
        for client in clients:
            client.join(client.MAX_TIME)


class Client(threading.Thread):
    """GET ``path`` on fresh connections until stopped, bounded in requests
    and time; records answers and errors, never raises."""

    MAX_REQUESTS = 5000
    MAX_TIME = 30.0  # s

    def __init__(self, server: RunningServer, path: str) -> None:
        super().__init__(name="reload-client", daemon=True)
        self.server = server
        self.path = path
        self.stop = threading.Event()
        self.bodies: list[bytes] = []
        self.statuses: list[int] = []
        self.errors: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + self.MAX_TIME
        for _ in range(self.MAX_REQUESTS):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            try:
                response = self.server.get(self.path)
            except (OSError, http.client.HTTPException) as error:
                self.errors.append(repr(error))
                continue
            self.statuses.append(response.status)
            self.bodies.append(response.body)


def test_a_burst_of_saves_restarts_once(
    start_server: StartServer, project_dir: Path, start_log: StartLog
) -> None:
    package = project_dir / "testapp" / "burst"
    package.mkdir()
    modules = [package / f"module_{i:03}.py" for i in range(100)]
    for module in modules:
        module.write_text("VALUE = 0\n")
    server = start_server(ADDRPORT, env={START_LOG_ENV: str(start_log.path)})
    before = pid_info(server)

    for module in modules:  # a branch switch, a formatter run, a search-and-replace
        module.write_text("VALUE = 1\n")

    wait_for_new_worker(server, before["boot_id"])
    assert_no_restart_within(start_log, 2)
    assert len(reload_lines(server)) == 1, reload_lines(server)


def test_an_event_that_changes_nothing_since_the_restart_is_ignored(
    start_server: StartServer, project_dir: Path, start_log: StartLog
) -> None:
    # A late event for a save already acted on looks like this one: the file
    # is as it was when the worker was started. It must not start another.
    first = project_dir / "testapp" / "a_first.py"
    second = project_dir / "testapp" / "b_second.py"
    first.write_text("")
    second.write_text("")
    server = start_server(ADDRPORT, env={START_LOG_ENV: str(start_log.path)})
    boot = pid_info(server)["boot_id"]
    touch_py(first)
    boot = wait_for_new_worker(server, boot)["boot_id"]

    st = first.stat()
    os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns))  # an event, no change
    touch_py(second)  # after it: in its batch or a later one

    wait_for_new_worker(server, boot)
    # The first file sorts first: a restart for it would be named by it.
    assert reload_lines(server) == [
        f"{first} changed, reloading.",
        f"{second} changed, reloading.",
    ]
    assert start_log.count() == 3


def test_a_save_while_the_worker_starts_is_not_lost(
    start_server: StartServer, project_dir: Path, start_log: StartLog, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    server = start_server(
        ADDRPORT, env={START_LOG_ENV: str(start_log.path), START_GATE_ENV: str(gate)}
    )
    first = pid_info(server)
    views = project_dir / "testapp" / "views.py"

    gate.unlink()
    edit(views, "Hello, world!", "Hello, second!")
    # The second worker has imported the second views.py and waits at the gate.
    start_log.wait_for(2)
    edit(views, "Hello, second!", "Hello, third!")
    # The supervisor says nothing when it defers a change, so give the change
    # time to reach it while the worker is still starting; no worker may be
    # started meanwhile.
    assert_no_restart_within(start_log, 2)
    gate.touch()

    start_log.wait_for(3)
    wait_until(
        lambda: (
            getattr(get_or_none(server, "/hello/"), "body", b"") == b"Hello, third!\n"
        ),
        RELOAD_TIMEOUT,
        "the save made while the worker started was lost",
    )
    assert pid_info(server)["boot_id"] != first["boot_id"]
    assert_no_restart_within(start_log, 3, window=0.5)


def test_a_fix_saved_while_a_broken_worker_starts_is_not_lost(
    start_server: StartServer, project_dir: Path, start_log: StartLog, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    server = start_server(
        ADDRPORT, env={START_LOG_ENV: str(start_log.path), START_GATE_ENV: str(gate)}
    )
    views = project_dir / "testapp" / "views.py"
    good = views.read_text()

    # Half-way through an edit: the module fails after the start gate.
    gate.unlink()
    views.write_text(good + '\nraise RuntimeError("half-way through an edit")\n')
    start_log.wait_for(2)
    views.write_text(good)  # the edit is finished while that worker starts
    assert_no_restart_within(start_log, 2)  # time for the change to arrive
    gate.touch()  # the half-way worker fails now

    wait_until(
        lambda: getattr(get_or_none(server, "/hello/"), "body", b"") == HELLO,
        RELOAD_TIMEOUT,
        "the fix saved while the failing worker started was lost",
    )
    assert start_log.count() == 3


#: Added to the copy's views.py and urls.py: a view that ends its process.
DIE_VIEW = """

def die(request):
    os._exit(7)
"""
DIE_URL = """
urlpatterns.append(path("die/", views.die))
"""


def test_a_worker_that_dies_while_serving_shows_an_error_page_and_recovers(
    start_server: StartServer, project_dir: Path
) -> None:
    views = project_dir / "testapp" / "views.py"
    views.write_text(views.read_text() + DIE_VIEW)
    urls = project_dir / "testapp" / "urls.py"
    urls.write_text(urls.read_text() + DIE_URL)
    server = start_server(ADDRPORT)
    before = pid_info(server)

    with pytest.raises((OSError, http.client.HTTPException)):
        server.get("/die/")

    wait_for_status(server, 500)
    page = expect_error_page(server)
    assert "exit code 7" in page
    # It had started: the page and the terminal do not say otherwise.
    assert "<title>The server process stopped</title>" in page
    server.wait_for_stderr("The server process stopped; runserver_plus answers")
    assert "failed to start" not in page + server.stderr_text()
    # No worker is started again in a loop (a warm process, once it has
    # named itself, waits for the next change).
    wait_until(lambda: server.workers() == [], RELOAD_TIMEOUT, "a worker is left")

    touch_py(views)

    after = wait_for_new_worker(server, before["boot_id"])
    assert after["pid"] != before["pid"]
    assert server.get("/hello/").body == HELLO


def test_a_project_inside_a_directory_named_like_a_virtualenv_reloads(
    start_server: StartServer, project_dir: Path, tmp_path: Path
) -> None:
    # Old tutorials made the virtualenv first and the project inside it.
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    project = venv / "testproject"
    project_dir.rename(project)
    server = start_server(ADDRPORT, cwd=project)
    before = pid_info(server)

    touch_py(project / "testapp" / "views.py")

    wait_for_new_worker(server, before["boot_id"])


# What is watched, what is not.


def test_changes_in_ignored_places_do_not_restart(
    start_server: StartServer, project_dir: Path, start_log: StartLog
) -> None:
    ignored_files = [
        ".git/hooks/post-checkout.py",
        "testapp/__pycache__/views.py",
        "node_modules/pkg/build.py",
        "myenv/lib/python3.12/site-packages/pkg/mod.py",
        "myenv/bin/activate_this.py",
        "venv/lib/mod.py",
        "media/uploads/upload.py",
        "staticroot/admin/js/x.py",
    ]
    for relative in ignored_files:
        (project_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (project_dir / relative).write_text("x = 0\n")
    (project_dir / "myenv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    server = start_server(ADDRPORT, env={START_LOG_ENV: str(start_log.path)})
    before = pid_info(server)

    for relative in ignored_files:
        (project_dir / relative).write_text("x = 1\n")
    # Editor and database files next to the code.
    testapp = project_dir / "testapp"
    for name in (".views.py.swp", "views.py~", ".#views.py", "#views.py#", "4913"):
        (testapp / name).write_text("swap")
    (project_dir / "db.sqlite3").write_bytes((project_dir / "db.sqlite3").read_bytes())
    (project_dir / "db.sqlite3-journal").write_bytes(b"journal")
    assert server.get("/hello/").status == 200
    # Then a real change, whose name sorts after every ignored one: had any
    # of them counted, the reload line would name it, or there would be two.
    sentinel = project_dir / "zz_sentinel.py"
    sentinel.write_text("x = 1\n")

    wait_for_new_worker(server, before["boot_id"])
    assert reload_lines(server) == [f"{sentinel} changed, reloading."]
    assert_no_restart_within(start_log, 2, window=0.5)


def test_watch_dir_option(
    start_server: StartServer, start_log: StartLog, tmp_path: Path
) -> None:
    extra = tmp_path / "extra"
    (extra / "lib").mkdir(parents=True)
    module = extra / "lib" / "helpers.py"
    module.write_text("x = 0\n")
    server = start_server(
        ADDRPORT, "--watch-dir", str(extra), env={START_LOG_ENV: str(start_log.path)}
    )
    before = pid_info(server)

    touch_py(module)

    wait_for_new_worker(server, before["boot_id"])
    assert reload_lines(server) == [f"{module} changed, reloading."]


def test_watch_dir_that_is_not_a_directory_is_reported_once(
    start_server: StartServer, start_log: StartLog, tmp_path: Path
) -> None:
    missing = tmp_path / "not-checked-out"
    too_long = tmp_path / ("d" * 300)  # stat() fails with ENAMETOOLONG
    server = start_server(
        ADDRPORT,
        "--watch-dir",
        str(missing),
        "--watch-dir",
        str(too_long),
        env={START_LOG_ENV: str(start_log.path)},
    )

    assert pid_info(server)["boot_id"]  # it serves
    for directory in (missing, too_long):
        line = f"Warning: {directory} (from --watch-dir or RUNSERVER_PLUS_WATCH_DIRS)"
        server.wait_for_stderr(re.escape(line))
        assert (
            server.stderr_text().count(line) == 1
        )  # the supervisor's, not the worker's
    assert "Traceback" not in server.stderr_text()


def test_watch_include_and_exclude_options(
    start_server: StartServer, project_dir: Path, start_log: StartLog
) -> None:
    (project_dir / "config").mkdir()
    toml = project_dir / "config" / "app.toml"
    toml.write_text("x = 0\n")
    generated = project_dir / "testapp" / "generated_api.py"
    generated.write_text("x = 0\n")
    server = start_server(
        ADDRPORT,
        "--watch-include",
        "config/*.toml",
        "--watch-exclude",
        "generated_*.py",
        env={START_LOG_ENV: str(start_log.path)},
    )
    before = pid_info(server)

    generated.write_text("x = 1\n")  # excluded
    (project_dir / "config" / "notes.txt").write_text("not included")
    assert server.get("/hello/").status == 200
    toml.write_text("x = 1\n")  # included: restarts

    wait_for_new_worker(server, before["boot_id"])
    assert reload_lines(server) == [f"{toml} changed, reloading."]
    assert_no_restart_within(start_log, 2, window=0.5)


def test_watch_poll_option(start_server: StartServer, project_dir: Path) -> None:
    server = start_server(ADDRPORT, "--watch-poll")
    before = pid_info(server)

    touch_py(project_dir / "testapp" / "views.py")

    wait_for_new_worker(server, before["boot_id"])


def test_watch_poll_sees_two_saves_within_one_second(
    start_server: StartServer, project_dir: Path
) -> None:
    server = start_server(ADDRPORT, "--watch-poll")
    first = pid_info(server)
    views = project_dir / "testapp" / "views.py"
    good = views.read_text()
    second = int(time.time())

    # A save, then a quick fix in the same second: the mtimes say so directly.
    save_in_second(views, good.replace("Hello, world!", "Hello, typo!"), second, 1)
    wait_for_new_worker(server, first["boot_id"])
    save_in_second(views, good.replace("Hello, world!", "Hello, fixed!"), second, 6)

    wait_until(
        lambda: (
            getattr(get_or_none(server, "/hello/"), "body", b"") == b"Hello, fixed!\n"
        ),
        RELOAD_TIMEOUT,
        "the second save within one second was never seen",
    )


def save_in_second(path: Path, text: str, second: int, tenths: int) -> None:
    path.write_text(text)
    mtime = second * 1_000_000_000 + tenths * 100_000_000
    os.utime(path, ns=(mtime, mtime))


def test_a_directory_made_while_running_is_watched(
    start_server: StartServer, project_dir: Path
) -> None:
    server = start_server(ADDRPORT)
    before = pid_info(server)
    new_package = project_dir / "testapp" / "newpkg" / "sub"

    new_package.mkdir(parents=True)
    # The watch for the new directory comes after the batch that announced it:
    # keep saving until the change is seen.
    module = new_package / "mod.py"
    wait_until(
        lambda: saved_and_restarted(server, module, before["boot_id"]),
        RELOAD_TIMEOUT,
        "a save in a new directory never restarted",
    )


def test_a_directory_removed_and_made_again_is_watched(
    start_server: StartServer, project_dir: Path
) -> None:
    # A branch switch or a code generator that wipes its output directory.
    package = project_dir / "testapp" / "generated"
    package.mkdir()
    (package / "api.py").write_text("x = 0\n")
    server = start_server(ADDRPORT)
    first = pid_info(server)
    for file in package.iterdir():
        file.unlink()
    package.rmdir()
    second = wait_for_new_worker(server, first["boot_id"])

    package.mkdir()

    wait_until(
        lambda: saved_and_restarted(server, package / "api.py", second["boot_id"]),
        RELOAD_TIMEOUT,
        "saves in the re-made directory never restarted",
    )


def test_a_module_imported_from_outside_the_project_is_watched(
    start_server: StartServer, project_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    module = outside / "rsp_outside_module.py"
    module.write_text('GREETING = "from outside"\n')
    views = project_dir / "testapp" / "views.py"
    views.write_text(views.read_text() + "\nimport rsp_outside_module  # noqa\n")
    server = start_server(ADDRPORT, env={"PYTHONPATH": str(outside)})
    before = pid_info(server)

    # The worker reports its modules once it is ready; the watch follows.
    wait_until(
        lambda: saved_and_restarted(server, module, before["boot_id"]),
        RELOAD_TIMEOUT,
        "a save of an imported outside module never restarted",
    )


# Offering non-Python changes to the worker (Django's file_changed).


@pytest.mark.usefixtures("server_mode")
def test_a_template_edit_applies_without_a_restart(
    start_server: StartServer, project_dir: Path
) -> None:
    server = start_server(ADDRPORT)
    before = pid_info(server)
    assert "rendered by testapp" in server.get("/page/").text

    edit(
        project_dir / "testapp" / "templates" / "testapp" / "page.html",
        "This page is rendered by testapp",
        "This page was EDITED while running",
    )
    wait_until(
        lambda: "EDITED while running" in server.get("/page/").text,
        OFFER_TIMEOUT,
        "the app template edit did not apply",
    )
    edit(project_dir / "templates" / "base.html", "<main>", '<main class="edited">')
    wait_until(
        lambda: '<main class="edited">' in server.get("/page/").text,
        OFFER_TIMEOUT,
        "the project template edit did not apply",
    )

    assert pid_info(server) == before
    assert reload_lines(server) == []


#: Added to the copy's testapp/apps.py: a third-party style receiver pair
#: that watches a directory through watch_dir and claims some of its files.
RECEIVERS = """

import os as _os
from pathlib import Path as _Path

from django.utils.autoreload import autoreload_started, file_changed


def _watch_extra(sender, **kwargs):
    sender.watch_dir(_os.environ["RSP_TEST_EXTRA_DIR"], "*.txt")


def _extra_changed(sender, file_path, **kwargs):
    if _Path(_os.environ["RSP_TEST_EXTRA_DIR"]) not in file_path.parents:
        return None
    with open(_os.environ["RSP_TEST_OFFER_LOG"], "a") as log:
        log.write(file_path.name + "\\n")
    return file_path.name.startswith("claimed")


if _os.environ.get("RSP_TEST_EXTRA_DIR"):
    autoreload_started.connect(_watch_extra, dispatch_uid="rsp-test-watch")
    file_changed.connect(_extra_changed, dispatch_uid="rsp-test-changed")
"""


def start_with_receivers(
    start_server: StartServer,
    project_dir: Path,
    start_log: StartLog,
    extra: Path,
    offer_log: Path,
) -> RunningServer:
    """Start a copy whose app watches ``extra`` and logs what it is offered."""
    apps = project_dir / "testapp" / "apps.py"
    apps.write_text(apps.read_text() + RECEIVERS)
    return start_server(
        ADDRPORT,
        env={
            START_LOG_ENV: str(start_log.path),
            "RSP_TEST_EXTRA_DIR": str(extra),
            "RSP_TEST_OFFER_LOG": str(offer_log),
        },
    )


def test_watch_dir_receivers_are_offered_their_files(
    start_server: StartServer, project_dir: Path, start_log: StartLog, tmp_path: Path
) -> None:
    extra = tmp_path / "extra"  # outside the project
    extra.mkdir()
    for name in ("claimed.txt", "unclaimed.txt", "other.dat"):
        (extra / name).write_text("0")
    offer_log = tmp_path / "offers.log"
    server = start_with_receivers(
        start_server, project_dir, start_log, extra, offer_log
    )
    before = pid_info(server)

    def offered() -> list[str]:
        return offer_log.read_text().splitlines() if offer_log.exists() else []

    (extra / "other.dat").write_text("1")  # not matched by the glob
    (extra / "claimed.txt").write_text("1")
    wait_until(
        lambda: "claimed.txt" in offered(), OFFER_TIMEOUT, "claimed.txt not offered"
    )
    assert pid_info(server) == before

    (extra / "unclaimed.txt").write_text("1")
    wait_for_new_worker(server, before["boot_id"])

    # A save can reach the watcher as two batches: offered again, claimed again.
    assert list(dict.fromkeys(offered())) == ["claimed.txt", "unclaimed.txt"]
    # The restart is named by the file nobody claimed, even in a shared batch.
    assert reload_lines(server) == [f"{extra / 'unclaimed.txt'} changed, reloading."]
    assert start_log.count() == 2


def test_a_restart_is_named_by_the_file_nobody_claimed(
    start_server: StartServer, project_dir: Path, start_log: StartLog, tmp_path: Path
) -> None:
    # Saved together, the two files are offered in one batch, the claimed one
    # first in it: the reload line still names the other, as Django's would.
    extra = tmp_path / "extra"
    extra.mkdir()
    offer_log = tmp_path / "offers.log"
    server = start_with_receivers(
        start_server, project_dir, start_log, extra, offer_log
    )
    before = pid_info(server)

    (extra / "claimed.txt").write_text("1")
    (extra / "unclaimed.txt").write_text("1")

    wait_for_new_worker(server, before["boot_id"])
    assert reload_lines(server) == [f"{extra / 'unclaimed.txt'} changed, reloading."]


# Broken code: the error page, once in the terminal, recovery on the next save.


@dataclass(frozen=True)
class Breakage:
    name: str
    file: str  # relative to the project
    apply: Callable[[str], str]
    on_page: str  # shown by the error page (DEBUG)
    in_terminal: str  # printed exactly once on stderr


BREAKAGES = [
    Breakage(
        "syntax error in a view module",
        "testapp/views.py",
        lambda text: text + "\ndef broken(:\n",
        "SyntaxError",
        "Traceback (most recent call last)",
    ),
    Breakage(
        "import error in the URLconf",
        "testapp/urls.py",
        lambda text: text + "\nimport testapp.no_such_module  # noqa\n",
        "No module named &#x27;testapp.no_such_module&#x27;",
        "Traceback (most recent call last)",
    ),
    Breakage(
        "error in a models module",
        "testapp/models.py",
        lambda text: text + '\nraise RuntimeError("the models module is broken")\n',
        "RuntimeError: the models module is broken",
        "Traceback (most recent call last)",
    ),
    Breakage(
        "syntax error in settings",
        "testproject/settings.py",
        lambda text: text + "\nBROKEN = [\n",
        "SyntaxError",
        "Traceback (most recent call last)",
    ),
    Breakage(
        "failing system check",
        "testapp/models.py",
        lambda text: (
            text
            + "\n\nfrom django.core import checks\n\n\n"
            + "@checks.register()\n"
            + "def broken_check(app_configs, **kwargs):\n"
            + '    return [checks.Error("deliberately broken", id="testapp.E001")]\n'
        ),
        "(testapp.E001) deliberately broken",
        "(testapp.E001)",
    ),
]


def wait_for_status(server: RunningServer, status: int, path: str = "/hello/") -> None:
    def answered() -> bool:
        response = get_or_none(server, path)
        return response is not None and response.status == status

    wait_until(answered, RELOAD_TIMEOUT, f"{path} was not answered with {status}")


def error_id(page: str) -> int:
    match = re.search(r"var id = (\d+);", page)
    assert match, page
    return int(match.group(1))


def expect_error_page(server: RunningServer, path: str = "/hello/") -> str:
    response = server.get(path)
    assert response.status == 500, response.body[:2000]
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    return response.text


def printed_times(stderr: str, marker: str) -> int:
    """How many times an error was printed: a chained traceback ("During
    handling of the above exception...", as Python 3.11 prints some import
    errors) is one report, though it holds several "Traceback" lines."""
    chained = stderr.count("During handling of the above exception") + stderr.count(
        "The above exception was the direct cause"
    )
    if marker.startswith("Traceback"):
        return stderr.count(marker) - chained
    return stderr.count(marker)


@pytest.mark.parametrize("breakage", BREAKAGES, ids=[b.name for b in BREAKAGES])
@pytest.mark.usefixtures("server_mode")
def test_broken_code_shows_an_error_page_and_recovers(
    start_server: StartServer, project_dir: Path, breakage: Breakage
) -> None:
    server = start_server(ADDRPORT)
    before = pid_info(server)
    target = project_dir / breakage.file
    good = target.read_text()

    target.write_text(breakage.apply(good))

    wait_for_status(server, 500)
    page = expect_error_page(server, "/pid/")
    assert breakage.on_page in page
    if breakage.in_terminal.startswith("Traceback"):
        assert "Traceback (most recent call last)" in page
    # The replaced worker may still be finishing a request it had accepted
    # (a broken settings module fails faster than that): it goes by itself.
    wait_until(
        lambda: server.workers() == [],
        RELOAD_TIMEOUT,
        "the replaced worker did not exit",
    )
    # No respawn loop: the supervisor alone, every request answered with the
    # error, the error printed once. The warm process started for the next
    # save shows the interpreter's name until its first lines run, so a
    # process seen here passes if it is that one: a single pid, warm by now.
    seen: set[int] = set()
    deadline = time.monotonic() + QUIET_WINDOW
    while time.monotonic() < deadline:
        expect_error_page(server, "/static/files/hello.txt")
        seen.update(server.workers())
    assert len(seen) <= 1, f"worker processes came and went: {sorted(seen)}"
    wait_until(
        lambda: all(process_name(pid) == WARM_PROCESS_NAME for pid in seen),
        RELOAD_TIMEOUT,
        f"a process other than the warm one ran while the code was broken: {seen}",
    )
    assert printed_times(server.stderr_text(), breakage.in_terminal) == 1, (
        server.stderr_text()
    )

    # The page's long poll: answered at once for another error, pending for its own.
    number = error_id(page)
    other = server.get(f"{STATUS_PATH}?id={number + 1000}")
    assert other.status == 200
    assert other.json() == {"broken": True, "id": number}
    poll = StatusPoll(server, number)
    poll.start()
    # Connections are accepted in order: once a later one is answered, the
    # poll is in the error page's hands.
    expect_error_page(server)
    assert poll.is_alive(), poll.result

    target.write_text(good)
    fixed_at = time.monotonic()

    poll.join(POLL_ANSWER_TIMEOUT)
    assert not poll.is_alive(), "the pending status poll was not answered after the fix"
    assert time.monotonic() - fixed_at < POLL_ANSWER_TIMEOUT
    status, body = poll.result
    assert (status == 200 and json.loads(body) == {"broken": False, "id": number}) or (
        status == 404
    ), (status, body)
    after = wait_for_new_worker(server, before["boot_id"])
    assert server.get("/hello/").body == HELLO
    assert server.get(f"{STATUS_PATH}?id={number}").status == 404  # the worker's
    assert after["run_main"] == "true"


class StatusPoll(threading.Thread):
    """One long poll of the error page's status URL."""

    def __init__(self, server: RunningServer, number: int) -> None:
        super().__init__(name="status-poll", daemon=True)
        self.server = server
        self.number = number
        self.result: tuple[int, bytes] = (0, b"")

    def run(self) -> None:
        response = self.server.get(
            f"{STATUS_PATH}?id={self.number}", timeout=LONG_POLL + 10.0
        )
        self.result = (response.status, response.body)


def test_error_page_without_debug_hides_the_traceback(
    start_server: StartServer, project_dir: Path
) -> None:
    server = start_server(
        ADDRPORT,
        env={"TESTPROJECT_DEBUG": "0", "TESTPROJECT_ALLOWED_HOSTS": "127.0.0.1"},
    )
    before = pid_info(server)
    views = project_dir / "testapp" / "views.py"
    good = views.read_text()

    views.write_text(good + "\ndef broken(:\n")

    wait_for_status(server, 500)
    page = expect_error_page(server)
    assert "Traceback" not in page
    assert "SyntaxError" not in page
    assert str(project_dir) not in page
    assert printed_times(server.stderr_text(), "Traceback (most recent call last)") == 1

    views.write_text(good)

    wait_for_new_worker(server, before["boot_id"])
    assert server.get("/hello/").body == HELLO

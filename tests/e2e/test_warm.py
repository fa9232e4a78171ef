"""End to end: a warm process becomes the next worker, and the project cannot tell."""

from __future__ import annotations

import gc
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import RunningServer, StartServer
from tests.e2e.test_reload import (
    ADDRPORT,
    RELOAD_TIMEOUT,
    START_LOG_ENV,
    StartLog,
    start_log,  # noqa: F401 - a fixture
    touch_py,
    wait_for_new_worker,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

#: How long a warm process may take to import what the first worker did.
WARM_TIMEOUT = 30.0  # s

#: Appended to the copy's views.py: what a worker looks like from inside.
PROBE = """

# Added by the test: the worker as the project sees it.
import gc as _gc
import random as _random
import sys as _sys
import threading as _threading

from django.conf import settings as _settings


def warm_probe(request):
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the descriptor listdir() itself used
        fds.append(target.split(":[")[0])
    return JsonResponse(
        {
            "pid": os.getpid(),
            "boot_id": BOOT_ID,
            "random": _random.random(),
            "argv": _sys.argv,
            "path": _sys.path,
            "environ": dict(os.environ),
            "cwd": os.getcwd(),
            "threads": sorted(t.name for t in _threading.enumerate()),
            "fds": sorted(fds),
            "gc": [_gc.isenabled(), _gc.get_threshold(), _gc.get_freeze_count()],
            "mark": getattr(_settings, "RSP_TEST_MARK", None),
            "extlib": _sys.modules["rsp_extlib"].VALUE
            if "rsp_extlib" in _sys.modules
            else None,
            "threadlib": _sys.modules["rsp_threadlib"].REPORT
            if "rsp_threadlib" in _sys.modules
            else None,
        }
    )
"""

#: Appended to the copy's settings: one line per execution, with the pid.
SETTINGS_LOG = """
with open({log!r}, "a") as _log:
    _log.write(f"{{__import__('os').getpid()}}\\n")
"""

#: An installed package (in a folder named site-packages, which is never
#: watched) that the project imports.
EXTLIB = "VALUE = {value}\n"

#: An installed package that starts a thread when imported.
THREADLIB = """
import threading

from django.apps import apps

_started = threading.Event()


def _run():
    _started.set()
    threading.Event().wait()


threading.Thread(target=_run, name="rsp-threadlib", daemon=True).start()
_started.wait(5)
REPORT = {"apps_ready_at_import": apps.ready}
"""


@pytest.fixture
def probe_project(project_dir: Path, tmp_path: Path) -> Path:
    """The project copy with the probe view, and a site-packages folder on
    PYTHONPATH (returned) for the test's installed packages."""
    views = project_dir / "testapp" / "views.py"
    views.write_text(views.read_text() + PROBE)
    urls = project_dir / "testapp" / "urls.py"
    urls.write_text(
        urls.read_text()
        + '\nurlpatterns.append(path("warm-probe/", views.warm_probe))\n'
    )
    packages = tmp_path / "venv" / "lib" / "site-packages"
    packages.mkdir(parents=True)
    return packages


def probe(server: RunningServer) -> dict[str, Any]:
    response = server.get("/warm-probe/")
    assert response.status == 200, response.body[:2000]
    data: dict[str, Any] = response.json()
    return data


def install(packages: Path, project_dir: Path, name: str, source: str) -> None:
    """Put package ``name`` in ``packages`` and import it from the views."""
    (packages / f"{name}.py").write_text(source)
    views = project_dir / "testapp" / "views.py"
    views.write_text(views.read_text() + f"\nimport {name}  # noqa\n")


def start(
    start_server: StartServer, packages: Path, *args: str, **env: str
) -> RunningServer:
    return start_server(
        ADDRPORT, "-v", "3", *args, env={"PYTHONPATH": str(packages), **env}
    )


def wait_warm(server: RunningServer, start: int = 0) -> int:
    """The pid of the next warm process, once it has preloaded."""
    match = server.wait_for_stderr(
        r"^A warm process \(pid (\d+)\) is ready", timeout=WARM_TIMEOUT, start=start
    )
    return int(match.group(1))


def restart(server: RunningServer, project_dir: Path) -> dict[str, Any]:
    before = probe(server)
    lines = server.stderr.line_count()
    touch_py(project_dir / "testapp" / "views.py")
    wait_for_new_worker(server, before["boot_id"])
    server.wait_for_stderr(r"^Started the worker (warm|cold)", timeout=5, start=lines)
    return probe(server)


def started(server: RunningServer) -> list[str]:
    return re.findall(r"^Started the worker .*$", server.stderr_text(), re.MULTILINE)


def normalised_threads(names: list[str]) -> set[str]:
    return {re.sub(r"\d+", "N", name) for name in names}


def test_a_restart_is_warm_and_the_project_cannot_tell(
    start_server: StartServer,
    probe_project: Path,
    project_dir: Path,
    start_log: StartLog,  # noqa: F811
) -> None:
    server = start(start_server, probe_project, **{START_LOG_ENV: str(start_log.path)})
    cold = probe(server)
    warm_pid = wait_warm(server)

    warm = restart(server, project_dir)

    assert len(started(server)) == 1, server.stderr_text()
    assert re.fullmatch(
        r"Started the worker warm: \d+ modules were preloaded\.", started(server)[0]
    )
    # The warm process itself became the worker: a new pid, not the old one's.
    assert warm["pid"] == warm_pid != cold["pid"]
    # The project's module-level code ran again in it, once.
    start_log.wait_for(2)
    assert [line.split()[0] for line in start_log.lines()] == [
        str(cold["pid"]),
        str(warm_pid),
    ]
    assert warm["boot_id"] != cold["boot_id"]
    assert warm["random"] != cold["random"]
    # What a cold worker (the first one) found.
    assert warm["argv"] == cold["argv"]
    assert warm["path"] == cold["path"]
    assert warm["environ"] == cold["environ"]
    assert warm["cwd"] == cold["cwd"]
    # Nothing inherited from the preloading: no thread, no file.
    assert normalised_threads(warm["threads"]) == normalised_threads(cold["threads"])
    assert warm["fds"] == cold["fds"]
    # The garbage collector as a cold worker has it: what the warm process
    # froze for its start is given back once it serves.
    assert warm["gc"] == cold["gc"]
    enabled, _threshold, frozen = warm["gc"]
    assert enabled is True
    assert frozen == 0


def test_a_settings_edit_is_served_cold_then_executed_afresh_by_a_warm_worker(
    start_server: StartServer, probe_project: Path, project_dir: Path, tmp_path: Path
) -> None:
    executions = tmp_path / "settings.log"
    settings = project_dir / "testproject" / "settings.py"
    settings.write_text(settings.read_text() + SETTINGS_LOG.format(log=str(executions)))
    server = start(start_server, probe_project)
    assert probe(server)["mark"] is None
    wait_warm(server)  # it has loaded the settings to preload
    lines = server.stderr.line_count()
    before = probe(server)

    settings.write_text(settings.read_text() + '\nRSP_TEST_MARK = "edited"\n')

    wait_for_new_worker(server, before["boot_id"])
    assert probe(server)["mark"] == "edited"
    assert started(server) == [
        f"Started the worker cold: the warm process was stale ({settings} changed)."
    ]
    # The next warm process loads the edited settings; the worker it becomes
    # executes them again, in the same process.
    warm_pid = wait_warm(server, start=lines)
    after = restart(server, project_dir)
    assert after["pid"] == warm_pid
    assert after["mark"] == "edited"
    assert "Started the worker warm" in started(server)[-1], server.stderr_text()
    assert executions.read_text().split().count(str(warm_pid)) == 2


def test_each_warm_worker_is_a_new_process_with_its_own_random(
    start_server: StartServer, probe_project: Path, project_dir: Path
) -> None:
    server = start(start_server, probe_project)
    seen = [probe(server)]
    lines = 0
    for _ in range(2):
        wait_warm(server, start=lines)
        lines = server.stderr.line_count()
        seen.append(restart(server, project_dir))

    assert [line.split(":")[0] for line in started(server)] == [
        "Started the worker warm",
        "Started the worker warm",
    ]
    assert len({s["pid"] for s in seen}) == 3
    assert len({s["random"] for s in seen}) == 3


def test_a_package_that_starts_a_thread_at_import_is_left_to_the_worker(
    start_server: StartServer, probe_project: Path, project_dir: Path
) -> None:
    install(probe_project, project_dir, "rsp_threadlib", THREADLIB)
    server = start(start_server, probe_project)
    assert probe(server)["threadlib"] == {"apps_ready_at_import": True}
    # The first warm process tries it, finds the thread, and is replaced.
    server.wait_for_stderr(
        r"^Not preloading .*rsp_threadlib.*: it started a thread\.$",
        timeout=WARM_TIMEOUT,
    )
    lines = server.stderr.line_count()
    wait_warm(server, start=lines)

    after = restart(server, project_dir)

    assert "Started the worker warm" in started(server)[-1], server.stderr_text()
    # Imported by the worker after django.setup(), with one thread: its own.
    assert after["threadlib"] == {"apps_ready_at_import": True}
    assert after["threads"].count("rsp-threadlib") == 1


def test_a_changed_installed_package_discards_the_warm_process(
    start_server: StartServer, probe_project: Path, project_dir: Path
) -> None:
    install(probe_project, project_dir, "rsp_extlib", EXTLIB.format(value=1))
    server = start(start_server, probe_project)
    assert probe(server)["extlib"] == 1
    wait_warm(server)  # it has imported rsp_extlib, VALUE = 1
    lines = server.stderr.line_count()

    # An upgrade: site-packages is not watched, so nothing restarts for it.
    (probe_project / "rsp_extlib.py").write_text(EXTLIB.format(value=2))
    after = restart(server, project_dir)

    assert after["extlib"] == 2
    stale = server.wait_for_stderr(
        r"^Started the worker cold: the warm process was stale \((.*) changed\)\.$",
        timeout=5,
        start=lines,
    )
    assert stale.group(1) == str(probe_project / "rsp_extlib.py")
    # A new warm process is prepared with the new version.
    wait_warm(server, start=lines)


def test_a_killed_warm_process_is_harmless(
    start_server: StartServer, probe_project: Path, project_dir: Path
) -> None:
    server = start(start_server, probe_project)
    warm_pid = wait_warm(server)
    os.kill(warm_pid, signal.SIGKILL)
    wait_until(
        lambda: warm_pid not in server.group_members(),
        RELOAD_TIMEOUT,
        "the killed warm process was not reaped",
    )
    lines = server.stderr.line_count()

    after = restart(server, project_dir)

    assert after["pid"] != warm_pid
    assert started(server) == [
        "Started the worker cold: the warm process exited (code -9)."
    ]
    # The next warm process is prepared once the new worker serves.
    assert wait_warm(server, start=lines) not in (warm_pid, after["pid"])


def test_no_preload_restarts_cold_without_a_warm_process(
    start_server: StartServer, probe_project: Path, project_dir: Path
) -> None:
    server = start(start_server, probe_project, "--no-preload")
    worker = probe(server)["pid"]
    # Only the supervisor and its worker.
    assert sorted(server.group_members()) == sorted([server.pid, worker])

    restart(server, project_dir)

    assert started(server) == ["Started the worker cold: --no-preload."]
    assert "warm process" not in server.stderr_text()


def test_fixing_a_syntax_error_starts_warm(
    start_server: StartServer, probe_project: Path, project_dir: Path
) -> None:
    server = start(start_server, probe_project)
    wait_warm(server)
    views = project_dir / "testapp" / "views.py"
    good = views.read_text()
    lines = server.stderr.line_count()

    views.write_text(good + "\ndef broken(:\n")
    wait_until(
        lambda: server.get("/hello/").status == 500,
        RELOAD_TIMEOUT,
        "the error page never showed",
    )
    # The broken worker was the warm one; another is prepared for the fix.
    wait_warm(server, start=lines)
    views.write_text(good)

    wait_until(
        lambda: server.get("/hello/").status == 200,
        RELOAD_TIMEOUT,
        "the fix was never served",
    )
    assert [line.split(":")[0] for line in started(server)] == [
        "Started the worker warm",
        "Started the worker warm",
    ]


#: Appended to the copy's settings: a thread started as an error tracker's
#: init() starts one.
SETTINGS_THREAD = """
import threading as _threading

_threading.Thread(
    target=_threading.Event().wait, name="rsp-settings-thread", daemon=True
).start()
"""


def test_settings_that_start_a_thread_are_left_to_the_worker(
    start_server: StartServer, probe_project: Path, project_dir: Path
) -> None:
    settings = project_dir / "testproject" / "settings.py"
    settings.write_text(settings.read_text() + SETTINGS_THREAD)
    server = start(start_server, probe_project)
    server.wait_for_stderr(
        r"^Not preloading \(the settings\): it started a thread\.$",
        timeout=WARM_TIMEOUT,
    )
    lines = server.stderr.line_count()
    wait_warm(server, start=lines)  # the next one preloads without settings

    after = restart(server, project_dir)

    assert "Started the worker warm" in started(server)[-1], server.stderr_text()
    assert after["threads"].count("rsp-settings-thread") == 1


def test_a_noreload_server_gives_the_collector_back_before_serving(
    start_server: StartServer, probe_project: Path
) -> None:
    # The runner freezes what is loaded for the start (procstate.freeze) in
    # every mode; the single process must thaw it as a worker does.
    server = start_server(
        ADDRPORT, "--noreload", env={"PYTHONPATH": str(probe_project)}
    )
    enabled, threshold, frozen = probe(server)["gc"]
    assert enabled is True
    assert threshold == list(gc.get_threshold())  # Python's, as in this process
    assert frozen == 0

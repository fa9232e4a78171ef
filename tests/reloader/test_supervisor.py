"""The supervisor's decisions, driven by made-up events and recording workers (tier 4).

The supervisor takes a factory for its worker processes; these tests give it
one that records what the supervisor asks of each worker, so restarts,
offers, pending changes, the error page and warm processes are decided on a
real temporary project without starting a process.
"""

from __future__ import annotations

import itertools
import logging
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from watchfiles import Change

from runserver_plus.config import ServerConfig
from runserver_plus.reloader.process import WorkerExited, WorkerMessage
from runserver_plus.reloader.supervisor import FilesChanged, Supervisor

_pids = itertools.count(50_000)


class RecordingWorker:
    """What the supervisor sees of a worker process, recording its calls."""

    def __init__(self, generation: int, command: Sequence[str] | None) -> None:
        self.generation = generation
        self.command = command
        self.warm = command is not None
        self.state = "warm" if self.warm else "starting"
        self.went = False
        self.preloaded = 0
        self.pid = next(_pids)
        self.stderr_tail = ""
        self.sent: list[dict[str, Any]] = []
        self.killed = False

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def go(self, generation: int) -> bool:
        self.generation = generation
        self.state = "starting"
        self.sent.append({"command": "go"})
        return True

    def stop(self, drain_timeout: float) -> None:
        self.state = "stopping"

    def kill(self) -> None:
        self.killed = True

    def close(self) -> None:
        pass

    def commands(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m.get("command") == name]


class Driven:
    """A supervisor on a real project folder, and the workers it started."""

    def __init__(self, project: Path, listen: socket.socket, **config: Any) -> None:
        self.project = project
        self.spawned: list[RecordingWorker] = []
        self.said: list[str] = []
        settings = ServerConfig(
            addr="127.0.0.1", port=0, project_dir=str(project), **config
        )
        self.supervisor = Supervisor(
            settings, listen, self.said.append, spawn=self._spawn
        )

    def _spawn(self, generation: int, command: Sequence[str] | None) -> Any:
        worker = RecordingWorker(generation, command)
        self.spawned.append(worker)
        return worker

    @property
    def worker(self) -> RecordingWorker:
        worker: Any = self.supervisor.worker
        assert isinstance(worker, RecordingWorker)
        return worker

    @property
    def workers(self) -> list[RecordingWorker]:
        """The workers started, warm processes left out until they went."""
        return [w for w in self.spawned if not w.warm or w.state != "warm"]

    def start(self) -> RecordingWorker:
        self.supervisor._spawn()
        return self.ready(self.worker)

    def ready(self, worker: RecordingWorker) -> RecordingWorker:
        self.message(worker, event="ready")
        return worker

    def message(self, worker: RecordingWorker, **message: Any) -> None:
        self.supervisor._dispatch(WorkerMessage(worker, message))  # type: ignore[arg-type]

    def exited(self, worker: RecordingWorker, code: int) -> None:
        self.supervisor._dispatch(WorkerExited(worker, code))  # type: ignore[arg-type]

    def save(self, *names: str, text: str = "") -> None:
        changes = set()
        for name in names:
            path = self.project / name
            path.write_text(text or f"# {name} saved\n")
            changes.add((Change.modified, str(path)))
        self.supervisor._dispatch(FilesChanged(changes))

    def replay(self, *names: str) -> None:
        """A late event for files that did not change again."""
        changes = {(Change.modified, str(self.project / n)) for n in names}
        self.supervisor._dispatch(FilesChanged(changes))


@pytest.fixture
def listen() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "templates").mkdir()
    (tmp_path / "views.py").write_text("")
    (tmp_path / "templates" / "page.html").write_text("")
    return tmp_path


@pytest.fixture
def driven(project: Path, listen: socket.socket) -> Iterator[Driven]:
    run = Driven(project, listen, preload=False)
    yield run
    run.supervisor._stop_error_server()


def offer_templates(run: Driven, worker: RecordingWorker) -> None:
    """Django's template reloader, through watch_dir() in the worker."""
    run.message(
        worker, event="watch_dir", path=str(run.project / "templates"), glob="**/*"
    )


def test_a_py_save_stops_the_worker_and_starts_the_next(
    driven: Driven, caplog: pytest.LogCaptureFixture
) -> None:
    first = driven.start()
    caplog.set_level(logging.INFO, logger="django.utils.autoreload")

    driven.save("views.py")

    assert first.state == "stopping"
    assert [w.generation for w in driven.workers] == [1, 2]
    assert f"{driven.project / 'views.py'} changed, reloading." in caplog.messages


def test_a_template_save_is_offered_and_a_claim_means_no_restart(
    driven: Driven,
) -> None:
    worker = driven.start()
    offer_templates(driven, worker)

    driven.save("templates/page.html")

    [offer] = worker.commands("offer")
    assert offer["paths"] == [str(driven.project / "templates" / "page.html")]
    driven.message(
        worker, event="offer_result", id=offer["id"], claimed=True, unclaimed=[]
    )
    assert driven.workers == [worker]
    assert worker.state == "ready"


def test_what_a_starting_worker_offers_is_watched_once_it_is_ready(
    driven: Driven,
) -> None:
    # A worker's watch_dir() calls all come before its "ready"; the supervisor
    # applies them together then (a large project makes dozens).
    driven.supervisor._spawn()
    worker = driven.worker
    offer_templates(driven, worker)
    driven.ready(worker)
    assert worker.commands("watching") == [{"command": "watching"}]

    driven.save("templates/page.html")

    [offer] = worker.commands("offer")
    assert offer["paths"] == [str(driven.project / "templates" / "page.html")]


def test_an_offer_nobody_claims_restarts(driven: Driven) -> None:
    worker = driven.start()
    offer_templates(driven, worker)
    driven.save("templates/page.html")
    [offer] = worker.commands("offer")

    driven.message(
        worker,
        event="offer_result",
        id=offer["id"],
        claimed=False,
        unclaimed=offer["paths"],
    )

    assert worker.state == "stopping"
    assert len(driven.workers) == 2


def test_a_save_while_the_worker_starts_waits_until_it_is_ready(
    driven: Driven,
) -> None:
    driven.supervisor._spawn()
    starting = driven.worker

    driven.save("views.py")

    assert driven.workers == [starting]
    driven.ready(starting)
    # It may have read views.py before the save: it is replaced.
    assert starting.commands("watching")
    assert starting.state == "stopping"
    assert len(driven.workers) == 2


def test_a_late_event_of_a_restart_does_not_take_a_pending_offer_with_it(
    driven: Driven,
) -> None:
    # The race noted on issue 3: while the next worker starts, a late event
    # for the .py file it was started for comes with a template save.
    first = driven.start()
    offer_templates(driven, first)
    driven.save("views.py")
    second = driven.worker
    offer_templates(driven, second)

    driven.replay("views.py")
    driven.save("templates/page.html")
    assert second.sent == []
    driven.ready(second)

    assert len(driven.workers) == 2  # no restart for the replayed event
    [offer] = second.commands("offer")
    assert offer["paths"] == [str(driven.project / "templates" / "page.html")]


def test_a_py_save_and_a_template_save_while_starting_restart_once(
    driven: Driven,
) -> None:
    first = driven.start()
    offer_templates(driven, first)
    driven.save("views.py")
    second = driven.worker
    offer_templates(driven, second)

    driven.save("views.py", "templates/page.html", text="# again\n")
    driven.ready(second)

    assert second.state == "stopping"
    third = driven.workers[2]
    assert len(driven.workers) == 3
    assert second.commands("offer") == []
    # Both were read fresh by the third: neither is acted on again.
    driven.ready(third)
    driven.replay("views.py", "templates/page.html")
    assert len(driven.workers) == 3
    assert third.commands("offer") == []


def test_a_worker_that_fails_to_start_shows_the_error_page_until_a_save(
    driven: Driven,
) -> None:
    driven.supervisor._spawn()
    broken = driven.worker
    broken.stderr_tail = "Traceback ...\nSyntaxError: invalid syntax\n"

    driven.exited(broken, 1)

    assert driven.supervisor.worker is None
    page = driven.supervisor.error_page
    assert page is not None
    assert "SyntaxError: invalid syntax" in page.error_text
    assert driven.said[-1].startswith("The project failed to start;")

    driven.save("views.py")

    assert driven.supervisor.error_page is None
    assert [w.generation for w in driven.workers] == [1, 2]


def test_django_asking_for_a_restart_starts_the_next_worker(driven: Driven) -> None:
    first = driven.start()

    driven.exited(first, 3)

    assert [w.generation for w in driven.workers] == [1, 2]
    assert driven.supervisor.error_page is None


# Warm processes.


@pytest.fixture
def warm(project: Path, listen: socket.socket) -> Iterator[Driven]:
    run = Driven(project, listen, preload=True, verbosity=2)
    yield run
    run.supervisor._stop_error_server()


def warm_process(run: Driven) -> RecordingWorker:
    process: Any = run.supervisor.warm.process
    assert isinstance(process, RecordingWorker)
    return process


def test_a_serving_worker_has_a_warm_process_prepared(warm: Driven) -> None:
    first = warm.start()
    assert warm.supervisor.warm.process is None  # not before it serves

    warm.message(first, event="preloadable", modules=["json", "django.utils"])

    process = warm_process(warm)
    assert process.command is not None
    assert process.commands("preload")[0]["modules"] == ["json", "django.utils"]
    warm.message(first, event="preloadable", modules=["decimal"])
    assert process.commands("preload")[1]["modules"] == ["decimal"]


def test_a_save_hands_the_next_worker_to_the_warm_process(warm: Driven) -> None:
    first = warm.start()
    warm.message(first, event="preloadable", modules=["json"])
    process = warm_process(warm)

    warm.save("views.py")

    assert warm.worker is process
    assert process.commands("go") == [{"command": "go"}]
    warm.message(process, event="went", preloaded=12)
    assert warm.said[-1] == "Started the worker warm: 12 modules were preloaded."
    assert warm.supervisor.warm.process is None  # the next comes once it serves
    warm.ready(process)
    warm.message(process, event="serving")
    assert warm.supervisor.warm.process is None  # not while its first requests
    warm.message(process, event="preloadable", modules=["decimal"])
    following = warm_process(warm)
    assert following is not process
    assert following.commands("preload")[0]["modules"] == ["json", "decimal"]


def test_a_warm_process_that_found_an_unsafe_module_is_replaced_without_it(
    warm: Driven,
) -> None:
    first = warm.start()
    warm.message(first, event="preloadable", modules=["json", "spy", "decimal"])
    unsafe = warm_process(warm)

    warm.message(unsafe, event="unsafe", modules=["spy"], why="started a thread")

    replacement = warm_process(warm)
    assert replacement is not unsafe
    assert replacement.commands("preload")[0]["modules"] == ["json", "decimal"]
    assert warm.said[-1] == "Not preloading spy: it started a thread."


def test_a_stale_warm_process_gives_way_to_a_cold_worker(warm: Driven) -> None:
    first = warm.start()
    warm.message(first, event="preloadable", modules=["json"])
    process = warm_process(warm)
    warm.save("views.py")

    warm.message(process, event="stale", path="/site-packages/json/__init__.py")

    cold = warm.worker
    assert cold is not process
    assert not cold.warm
    assert warm.said[-1] == (
        "Started the worker cold: the warm process was stale "
        "(/site-packages/json/__init__.py changed)."
    )


def test_after_the_warm_process_died_the_next_save_starts_cold(warm: Driven) -> None:
    first = warm.start()
    warm.message(first, event="preloadable", modules=["json"])
    warm.exited(warm_process(warm), -9)

    warm.save("views.py")

    assert not warm.worker.warm
    assert (
        warm.said[-1] == "Started the worker cold: the warm process exited (code -9)."
    )


def test_the_fix_of_a_broken_project_starts_warm(warm: Driven) -> None:
    first = warm.start()
    warm.message(first, event="preloadable", modules=["json"])
    warm.save("views.py")
    broken = warm.worker
    warm.message(broken, event="went", preloaded=1)

    warm.exited(broken, 1)

    assert warm.supervisor.error_page is not None
    process = warm_process(warm)  # prepared with the error page
    warm.save("views.py")
    assert warm.worker is process

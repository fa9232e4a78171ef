"""The supervisor: owns the socket and the watcher, starts and stops workers.

Over 350 lines: it is the one place that decides (restart, offer, wait for
a starting worker, error page, warm or cold), from typed events; what it
watches (watching.py), the warm process (warmslot.py) and a worker process
(process.py) are modules of their own, and its decisions are tested
without processes (tests/reloader/test_supervisor.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import itertools
import logging
import os
import queue
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from runserver_plus.config import ServerConfig
from runserver_plus.reloader import procstate
from runserver_plus.reloader.companions import Companions
from runserver_plus.reloader.control import Received
from runserver_plus.reloader.errorpage import ErrorPage
from runserver_plus.reloader.process import (
    FallbackFailed,
    ProcessEvent,
    WorkerExited,
    WorkerMessage,
    WorkerProcess,
)
from runserver_plus.reloader.warmslot import WarmSlot
from runserver_plus.reloader.watching import Watching
from runserver_plus.shutdown import SIGNAL_CHECK, STOP_SIGNALS

if TYPE_CHECKING:
    from runserver_plus.reloader.watcher import Changes
    from runserver_plus.server.server import Server

logger = logging.getLogger("django.utils.autoreload")

#: How long a worker that Django's fallback took over may go on writing its
#: traceback before it is ended.
TRACEBACK_SETTLE = 0.3  # s


@dataclasses.dataclass(frozen=True)
class FilesChanged:
    """A batch of changes from the watcher."""

    changes: Changes


@dataclasses.dataclass(frozen=True)
class StopAsked:
    """Ctrl-C or SIGTERM reached the supervisor."""


Event = ProcessEvent | FilesChanged | StopAsked
#: Starts a worker process: its generation, and the command of a warm one
#: (None for a cold worker).
Spawn = Callable[[int, Sequence[str] | None], WorkerProcess]


class Supervisor:
    """The default mode: never serves the project itself; keeps the socket,
    restarts workers on changes and shows an error page while they fail."""

    def __init__(
        self,
        config: ServerConfig,
        listen: socket.socket,
        write_err: Callable[[str], None],
        spawn: Spawn | None = None,
    ) -> None:
        self.config = config
        self.listen = listen
        self.write_err = write_err
        # SimpleQueue: its put() is reentrant, so the signal handler may use it
        # while the main thread is inside get().
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.spawn: Spawn = spawn or (
            lambda generation, command: WorkerProcess(
                listen, self.events.put, generation, command
            )
        )
        self.worker: WorkerProcess | None = None
        #: The process that becomes the next worker (see warm.py).
        self.warm = WarmSlot(config, lambda command: self.spawn(0, command), self._say)
        self.retired: set[WorkerProcess] = set()
        self.generation = 0
        self.pending: list[str] = []  # changes seen while a worker starts
        self.stale_modules: set[str] = set()  # changed .py files since the last start
        self.offers: dict[int, list[str]] = {}
        self._offer_ids = itertools.count(1)
        self.error_page: ErrorPage | None = None
        self.error_server: Server | None = None
        self.stopping = False
        self.watching = Watching(config)
        self.companions = Companions(
            config.run_commands, config.project_dir, write_err, colour=config.colour
        )

    # --- running --------------------------------------------------------------

    def run(self) -> None:
        for directory in self.config.extra_watch_dirs:
            if not os.path.isdir(directory):
                self.write_err(
                    f"Warning: {directory} (from --watch-dir or "
                    "RUNSERVER_PLUS_WATCH_DIRS) is not a directory; it is not "
                    "watched."
                )
        previous = self._install_signals()
        try:
            # The worker first: it takes longest to start. A file saved before
            # the watch begins is read fresh by that worker anyway.
            self._spawn()
            self.watching.start(lambda changes: self.events.put(FilesChanged(changes)))
            procstate.thaw()  # frozen by the runner for this start
            while not self._done():  # bounded waits: see shutdown.SIGNAL_CHECK
                with contextlib.suppress(queue.Empty):
                    self._dispatch(self.events.get(timeout=SIGNAL_CHECK))
        except KeyboardInterrupt:
            # A second Ctrl-C: do not wait for the drain.
            if self.worker is not None:
                self.worker.kill()
        finally:
            self._restore_signals(previous)
            self.watching.stop()
            self._stop_error_server()
            for worker in [self.worker, self.warm.process, *self.retired]:
                if worker is not None:
                    worker.kill()
                    worker.close()
            self.listen.close()
            self.companions.stop()

    def _done(self) -> bool:
        return self.stopping and self.worker is None and not self.retired

    def _dispatch(self, event: Event) -> None:
        match event:
            case FilesChanged(changes):
                self._changed(changes)
            case WorkerMessage(worker, message):
                self._message(worker, message)
            case WorkerExited(worker, code):
                self._exited(worker, code)
            case FallbackFailed(worker) if worker is self.worker:
                # Django's own runserver is printing the error and will wait.
                # Let the traceback arrive whole (the error page shows it),
                # then end the worker; its exit shows the page.
                timer = threading.Timer(TRACEBACK_SETTLE, worker.kill)
                timer.daemon = True
                timer.start()
            case StopAsked():
                self._stop()

    # --- signals ----------------------------------------------------------------

    def _install_signals(self) -> dict[int, Any]:
        def handler(signum: int, frame: FrameType | None) -> None:
            if self.stopping:
                raise KeyboardInterrupt
            self.events.put(StopAsked())

        return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)

    def _stop(self) -> None:
        self.stopping = True
        self._stop_error_server()
        discarded = self.warm.discard()
        if discarded is not None:
            self.retired.add(discarded)  # closed once it has exited
        if self.worker is not None:
            self.worker.stop(self.config.drain_timeout)

    # --- workers ------------------------------------------------------------------

    def _spawn(self) -> None:
        if self.stopping:
            return  # a late event (a change, a ready worker) must not outlive a stop
        self._stop_error_server()
        self._remove_stale_bytecode()
        self.generation += 1
        logger.info("Watching for file changes with %s", "RunserverPlusReloader")
        worker = self.warm.take(self.generation)
        if worker is None:
            self._start_cold()
        else:
            self.worker = worker

    def _start_cold(self) -> None:
        if self.stopping:
            return
        reason = self.warm.cold_reason()
        if self.generation > 1:
            self._say(f"Started the worker cold: {reason}.")
        self.worker = self.spawn(self.generation, None)

    def _say(self, text: str, verbosity: int = 2) -> None:
        """A line about the reloader itself, from ``-v 2`` (or ``verbosity``) on."""
        if self.config.verbosity >= verbosity:
            self.write_err(text)

    def _remove_stale_bytecode(self) -> None:
        """Delete the cached bytecode of the modules that changed.

        A .pyc is trusted when the source's mtime (whole seconds) and size
        match what it recorded, so a second save within the same second that
        keeps the size (``version 1`` -> ``version 2``) would be served from
        the stale cache. Done just before a worker starts, after any worker
        that was starting has written its own.
        """
        for path in self.stale_modules:
            with contextlib.suppress(OSError, ValueError, NotImplementedError):
                os.remove(importlib.util.cache_from_source(path))
        self.stale_modules.clear()

    def _restart(self, reason: str) -> None:
        logger.info("%s changed, reloading.", reason)
        if self.worker is not None:
            self.worker.stop(self.config.drain_timeout)
            self.retired.add(self.worker)
            self.worker = None
        self._spawn()

    def _message(self, worker: WorkerProcess, message: Received) -> None:
        if worker is self.warm.process or (worker.warm and not worker.went):
            self._warm_message(worker, message)
            return
        current = worker is self.worker
        match message:
            case {"event": "watch_dir", "path": str(path), "glob": str(glob)}:
                self.watching.offer_dir(Path(path), glob)
                if not (current and worker.state == "starting"):
                    self.watching.apply()  # a late one: its worker serves
            case {"event": "modules", "files": [*files]}:
                self.watching.add_module_roots(str(f) for f in files)
            case {"event": "preloadable", "modules": [*modules]}:
                serving = current and worker.state == "ready" and not self.stopping
                self.warm.learn([str(m) for m in modules], serving=serving)
            case {"event": "ready"} if current and worker.state == "starting":
                worker.state = "ready"
                self.watching.apply()  # its watch_dir()s all came before ready
                worker.send({"command": "watching"})
                if self.pending and not self.stopping:
                    pending, self.pending = self.pending, []
                    self._handle_paths(pending)
            case {"event": "serving"} if current and not self.stopping:
                self.companions.start()  # once: after the first worker serves
            case {
                "event": "offer_result",
                "id": int(offer_id),
                "claimed": bool(claimed),
                "unclaimed": [*unclaimed],
            } if current:
                paths = self.offers.pop(offer_id, [])
                if paths and not claimed:
                    # Named by a file nobody claimed, as Django names it.
                    named = [p for p in unclaimed if p in paths]
                    self._restart((named or paths)[0])

    def _warm_message(self, worker: WorkerProcess, message: Received) -> None:
        """What a warm process says before it becomes the worker."""
        match message:
            case {"event": "unsafe", "modules": [*modules], "why": str(why)}:
                names = [str(m) for m in modules]
                if self.warm.found_unsafe(worker, names, why):
                    self.retired.add(worker)  # it exits by itself
            case {"event": "stale", "path": str(path)} if worker is self.worker:
                # Something it imported changed: this change starts cold, and
                # the next warm process imports the new code.
                self.worker = None
                self.retired.add(worker)
                self.warm.went_cold(f"the warm process was stale ({path} changed)")
                self._start_cold()
            case {"event": "preloaded", "preloaded": int(count)} if (
                not worker.preloaded
            ):
                worker.preloaded = count
                self._say(
                    f"A warm process (pid {worker.pid}) is ready: "
                    f"{count} modules preloaded.",
                    verbosity=3,
                )
            case {"event": "went", "preloaded": int(count)} if worker is self.worker:
                worker.went = True
                self._say(f"Started the worker warm: {count} modules were preloaded.")

    def _exited(self, worker: WorkerProcess, code: int) -> None:
        worker.close()
        self.retired.discard(worker)
        if self.warm.exited(worker, code):
            return
        if worker is not self.worker:
            return
        self.worker = None
        if self.stopping:
            return
        if worker.warm and not worker.went:
            # It never became the worker (it found something unsafe as it was
            # told to go, say): start this change cold.
            self.warm.went_cold(f"the warm process exited (code {code}) at its go")
            self._start_cold()
        elif code == 3:
            self._spawn()  # Django's "restart me" (its reloader ran in the worker)
        elif self.pending:
            # A change (perhaps the fix) came while this worker started:
            # start again rather than show an error that may be gone.
            pending, self.pending = self.pending, []
            self.watching.act_on(pending)
            self._restart(pending[0])
        elif worker.state == "starting":
            self._broken(worker.stderr_tail or f"The worker exited with code {code}.")
        else:
            self._broken(
                f"The server process exited unexpectedly (exit code {code}).\n\n"
                + worker.stderr_tail[-4000:],
                title="The server process stopped",
            )

    def _broken(self, text: str, title: str = "The project failed to start") -> None:
        """Serve the error page until the next change."""
        port = self.listen.getsockname()[1]
        self.write_err(
            f"{title}; runserver_plus answers every request "
            f"at {self.config.url}:{port}/ with the error until a file changes."
        )
        from runserver_plus.server.server import Server  # noqa: PLC0415 - rarely needed

        self._stop_error_server()
        self.error_page = ErrorPage(
            text, self.generation, debug=self.config.debug, title=title
        )
        self.error_server = Server(self.listen.dup(), self.error_page, self.config)
        threading.Thread(
            target=self.error_server.serve_forever,
            name="runserver_plus-errorpage",
            daemon=True,
        ).start()
        # The save that fixes the code starts warm too.
        if not self.stopping:
            self.warm.prepare()

    def _stop_error_server(self) -> None:
        if self.error_server is None:
            return
        assert self.error_page is not None
        self.error_page.finish()
        self.error_server.shutdown()
        server = self.error_server
        threading.Thread(
            target=server.drain, args=(self.config.drain_timeout,), daemon=True
        ).start()
        self.error_server = self.error_page = None

    # --- changes --------------------------------------------------------------------

    def _changed(self, changes: Changes) -> None:
        paths = self.watching.files(changes)
        if not self.stopping:
            self._handle_paths(paths)

    def _handle_paths(self, paths: list[str]) -> None:
        restart, offer = self.watching.sort(paths)
        if not restart and not offer:
            return
        self.stale_modules.update(p for p in restart if p.endswith(".py"))
        worker = self.worker
        if worker is not None and worker.state == "starting":
            # That worker may have read these before or after the change. All
            # are kept: when it is ready they are looked at again, and a
            # restart path that has not changed since must not take the
            # offers with it.
            self.pending.extend(restart + offer)
            return
        self.watching.act_on(restart + offer)
        if worker is None:
            self._restart((restart or offer)[0])  # broken: any change may fix it
        elif restart:
            self._restart(restart[0])
        else:
            offer_id = next(self._offer_ids)
            self.offers[offer_id] = offer
            worker.send({"command": "offer", "id": offer_id, "paths": offer})

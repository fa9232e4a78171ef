"""The supervisor: owns the socket and the watcher, starts and stops workers."""

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
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from django.utils import autoreload

from runserver_plus.config import ServerConfig
from runserver_plus.reloader.control import Message
from runserver_plus.reloader.errorpage import ErrorPage
from runserver_plus.reloader.preload import warm_command
from runserver_plus.reloader.process import (
    FallbackFailed,
    ProcessEvent,
    WorkerExited,
    WorkerMessage,
    WorkerProcess,
)
from runserver_plus.reloader.warm import BOOTSTRAP as WARM_BOOTSTRAP

if TYPE_CHECKING:
    from runserver_plus.reloader.rules import WatchRules
    from runserver_plus.reloader.watcher import Changes, Watcher
    from runserver_plus.server.server import Server

logger = logging.getLogger("django.utils.autoreload")

#: How long a worker that Django's fallback took over may go on writing its
#: traceback before it is ended.
TRACEBACK_SETTLE = 0.3  # s
#: How many warm processes may be found unsafe (a module that starts a thread
#: at import, say) and replaced in one session before preloading gives up.
MAX_UNSAFE_WARM = 10


@dataclasses.dataclass(frozen=True)
class FilesChanged:
    """A batch of changes from the watcher."""

    changes: Changes


@dataclasses.dataclass(frozen=True)
class StopAsked:
    """Ctrl-C or SIGTERM reached the supervisor."""


Event = ProcessEvent | FilesChanged | StopAsked
#: A file as the supervisor last acted on it: inode, size and modification
#: time, or None once it is gone.
FileState = tuple[int, int, int] | None


def file_state(path: str) -> FileState:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Supervisor:
    """The default mode: never serves the project itself; keeps the socket,
    restarts workers on changes and shows an error page while they fail."""

    def __init__(
        self,
        config: ServerConfig,
        listen: socket.socket,
        write_err: Callable[[str], None],
    ) -> None:
        self.config = config
        self.listen = listen
        self.write_err = write_err
        # SimpleQueue: its put() is reentrant, so the signal handler may use it
        # while the main thread is inside get().
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.worker: WorkerProcess | None = None
        #: The process that becomes the next worker (see warm.py), and why
        #: the next worker starts cold when there is none.
        self.warm: WorkerProcess | None = None
        self.cold_reason = "no warm process was ready yet"
        #: What the workers imported from outside the project, in import
        #: order, less what a warm process found unsafe.
        self.preloadable: dict[str, None] = {}
        self.unsafe: set[str] = set()
        self.unsafe_warm = 0
        self.retired: set[WorkerProcess] = set()
        self.generation = 0
        self.pending: list[str] = []  # changes seen while a worker starts
        self.stale_modules: set[str] = set()  # changed .py files since the last start
        #: Each changed file as it was when a worker was started or offered it.
        self.acted: dict[str, FileState] = {}
        self.offers: dict[int, list[str]] = {}
        self._offer_ids = itertools.count(1)
        self.error_page: ErrorPage | None = None
        self.error_server: Server | None = None
        self.stopping = False
        self.roots = {
            Path(d) for d in (config.project_dir, *config.extra_watch_dirs) if d
        }
        self.offered: set[tuple[Path, str]] = set()
        # Made by run() once the first worker is on its way: importing
        # watchfiles need not delay it.
        self.rules: WatchRules
        self.watcher: Watcher | None = None

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
            self._start_watching()
            while not self._done():
                self._dispatch(self.events.get())
        except KeyboardInterrupt:
            # A second Ctrl-C: do not wait for the drain.
            if self.worker is not None:
                self.worker.kill()
        finally:
            self._restore_signals(previous)
            if self.watcher is not None:
                self.watcher.stop()
            self._stop_error_server()
            for worker in [self.worker, self.warm, *self.retired]:
                if worker is not None:
                    worker.kill()
                    worker.close()
            self.listen.close()

    def _start_watching(self) -> None:
        from runserver_plus.reloader.watcher import Watcher  # noqa: PLC0415

        self.rules = self._make_rules()
        self.watcher = Watcher(
            lambda changes: self.events.put(FilesChanged(changes)),
            force_polling=self.config.force_polling,
        )
        self.watcher.watch(self.rules.directories())

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
        from runserver_plus.runner import STOP_SIGNALS  # noqa: PLC0415

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
        self._discard_warm()
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
        warm, self.warm = self.warm, None
        if warm is not None and warm.go(self.generation):
            self.worker = warm
            return
        if warm is not None:
            warm.kill()
            self.cold_reason = "the warm process was gone"
        self._start_cold()

    def _start_cold(self) -> None:
        if self.stopping:
            return
        if self.generation > 1:
            reason = self.cold_reason if self.config.preload else "--no-preload"
            self._say(f"Started the worker cold: {reason}.")
        self.worker = WorkerProcess(self.listen, self.events.put, self.generation)
        self.cold_reason = "no warm process was ready yet"

    def _prepare_warm(self) -> None:
        """Start the process that becomes the next worker, once one serves."""
        if self.stopping or self.warm is not None or not self.config.preload:
            return
        if self.unsafe_warm >= MAX_UNSAFE_WARM:
            self.cold_reason = "too many modules were unsafe to preload"
            return
        command = warm_command(
            autoreload.get_child_arguments(), os.getcwd(), WARM_BOOTSTRAP
        )
        if command is None:
            self.cold_reason = "this command line cannot start warm"
            return
        self.warm = WorkerProcess(self.listen, self.events.put, 0, command)
        self._send_preload(list(self.preloadable))

    def _send_preload(self, modules: list[str]) -> None:
        if self.warm is None or not modules:
            return
        project = self.config.project_dir or os.getcwd()
        self.warm.send(
            {
                "command": "preload",
                "modules": modules,
                # As the workers judge it: local packages elsewhere are
                # preloaded (a change to one makes the warm process stale).
                "roots": [project, *self.config.extra_watch_dirs],
                "lock_dirs": [project, os.path.dirname(project)],
            }
        )

    def _discard_warm(self) -> None:
        if self.warm is not None:
            self.warm.kill()
            self.retired.add(self.warm)  # closed once it has exited
            self.warm = None

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

    def _message(self, worker: WorkerProcess, message: Message) -> None:
        event = message.get("event")
        if worker is self.warm or (worker.warm and not worker.went):
            self._warm_message(worker, message)
        elif event == "watch_dir":
            self.offered.add((Path(message["path"]), str(message["glob"])))
            self._update_rules()
        elif event == "modules":
            self._add_module_roots(message.get("files", []))
        elif event == "preloadable":
            new = [
                str(m)
                for m in message.get("modules", [])
                if m not in self.preloadable and m not in self.unsafe
            ]
            self.preloadable.update(dict.fromkeys(new))
            if worker is self.worker and worker.state == "ready":
                if self.warm is None:
                    self._prepare_warm()  # the worker serves: the next may warm up
                else:
                    self._send_preload(new)
        elif worker is not self.worker:
            return
        elif event == "ready" and worker.state == "starting":
            worker.state = "ready"
            # Every watch_dir() of this worker came before "ready" and is
            # watched now: let it serve.
            worker.send({"command": "watching"})
            if self.pending and not self.stopping:
                pending, self.pending = self.pending, []
                self._handle_paths(pending)
        elif event == "offer_result":
            paths = self.offers.pop(int(message.get("id", 0)), [])
            if paths and not message.get("claimed"):
                # Named by a file nobody claimed, as Django names it.
                unclaimed = [p for p in message.get("unclaimed", []) if p in paths]
                self._restart((unclaimed or paths)[0])

    def _warm_message(self, worker: WorkerProcess, message: Message) -> None:
        """What a warm process says before it becomes the worker."""
        event = message.get("event")
        if event == "unsafe":
            modules = [str(m) for m in message.get("modules", [])]
            self.unsafe.update(modules)
            for module in modules:
                self.preloadable.pop(module, None)
            self._say(
                f"Not preloading {', '.join(modules[:3])}"
                f"{' ...' if len(modules) > 3 else ''}: it {message.get('why')}."
            )
            if worker is self.warm:
                # It exits by itself; the next one leaves these modules out.
                self.unsafe_warm += 1
                self.warm = None
                self.retired.add(worker)
                self._prepare_warm()
        elif event == "stale" and worker is self.worker:
            # Something it imported changed: this change starts cold, and
            # the next warm process imports the new code.
            self.worker = None
            self.retired.add(worker)
            self.cold_reason = (
                f"the warm process was stale ({message.get('path')} changed)"
            )
            self._start_cold()
        elif event == "preloaded" and not worker.preloaded:
            worker.preloaded = int(message.get("preloaded", 0))
            self._say(
                f"A warm process (pid {worker.pid}) is ready: "
                f"{message.get('preloaded', 0)} modules preloaded.",
                verbosity=3,
            )
        elif event == "went" and worker is self.worker:
            worker.went = True
            self._say(
                f"Started the worker warm: {message.get('preloaded', 0)} modules "
                "were preloaded."
            )

    def _exited(self, worker: WorkerProcess, code: int) -> None:
        worker.close()
        self.retired.discard(worker)
        if worker is self.warm:
            self.warm = None
            self.cold_reason = f"the warm process exited (code {code})"
            return
        if worker is not self.worker:
            return
        self.worker = None
        if self.stopping:
            return
        if worker.warm and not worker.went:
            # It never became the worker (it found something unsafe as it was
            # told to go, say): start this change cold.
            self.cold_reason = f"the warm process exited (code {code}) at its go"
            self._start_cold()
        elif code == 3:
            self._spawn()  # Django's "restart me" (its reloader ran in the worker)
        elif self.pending:
            # A change (perhaps the fix) came while this worker started:
            # start again rather than show an error that may be gone.
            pending, self.pending = self.pending, []
            self._act_on(pending)
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
        self._prepare_warm()

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
        rescan = False
        paths: list[str] = []
        for change, path in sorted(changes, key=lambda c: c[1]):
            if change.name == "added" and os.path.isdir(path):
                rescan = True
            elif change.name == "deleted" and self._watching().forget(Path(path)):
                rescan = True  # a directory went; if it comes back, watch it anew
            else:
                paths.append(path)
        if rescan:
            self._watching().watch(self.rules.directories())
        if self.stopping:
            return
        self._handle_paths(paths)

    def _handle_paths(self, paths: list[str]) -> None:
        from runserver_plus.reloader.rules import Action  # noqa: PLC0415

        restart: list[str] = []
        offer: list[str] = []
        for path in paths:
            action = self.rules.classify(path)
            if action is Action.IGNORE or not self._changed_since_acted(path):
                continue
            (restart if action is Action.RESTART else offer).append(path)
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
        self._act_on(restart + offer)
        if worker is None:
            self._restart((restart or offer)[0])  # broken: any change may fix it
        elif restart:
            self._restart(restart[0])
        else:
            offer_id = next(self._offer_ids)
            self.offers[offer_id] = offer
            worker.send({"command": "offer", "id": offer_id, "paths": offer})

    def _act_on(self, paths: list[str]) -> None:
        """Note how these files are now, just before a worker is started or
        offered them: it reads them as they are from here on."""
        for path in paths:
            self.acted[path] = file_state(path)

    def _changed_since_acted(self, path: str) -> bool:
        """False for a late event of a change already acted on.

        One save can reach the supervisor as two batches (the file's creation,
        then its write) when the watcher's thread was slow; the second must not
        restart the worker again. A file with the inode, size and modification
        time it had when last acted on has not changed since: Django's
        StatReloader compares the modification time alone.
        """
        return path not in self.acted or self.acted[path] != file_state(path)

    # --- rules ----------------------------------------------------------------------

    def _watching(self) -> Watcher:
        assert self.watcher is not None, "changes come only once run() watches"
        return self.watcher

    def _make_rules(self) -> WatchRules:
        from runserver_plus.reloader.rules import WatchRules  # noqa: PLC0415

        return WatchRules(
            roots=tuple(sorted(self.roots)),
            ignored=tuple(Path(p) for p in self.config.ignored_paths),
            include=self.config.watch_include,
            exclude=self.config.watch_exclude,
            offered=tuple(sorted(self.offered)),
        )

    def _update_rules(self) -> None:
        rules = self._make_rules()
        if rules != self.rules:
            self.rules = rules
            self._watching().watch(rules.directories())

    def _add_module_roots(self, files: list[str]) -> None:
        for file in files:
            directory = Path(file).parent
            if any(directory == r or r in directory.parents for r in self.roots):
                continue
            if self.rules.is_ignored_dir(directory):
                continue
            self.roots.add(directory)
        self._update_rules()

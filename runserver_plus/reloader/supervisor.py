"""The supervisor: owns the socket and the watcher, starts and stops workers."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from django.utils import autoreload

from runserver_plus.config import ServerConfig
from runserver_plus.reloader.companions import Companions
from runserver_plus.reloader.control import WORKER_ENV, Channel, Message, worker_marker
from runserver_plus.reloader.errorpage import ErrorPage

if TYPE_CHECKING:
    from runserver_plus.reloader.watcher import Changes, Watcher, WatchRules
    from runserver_plus.server.server import Server

logger = logging.getLogger("django.utils.autoreload")

#: Time a stopped worker gets beyond the drain bound before it is killed.
KILL_GRACE = 1.0  # s
#: How long a worker that Django's fallback took over may go on writing its
#: traceback before it is ended.
TRACEBACK_SETTLE = 0.3  # s
#: The tail of a worker's stderr kept for the error page.
STDERR_TAIL = 64 * 1024  # bytes
#: What Django's reloader thread prints when ``django.setup()`` failed and
#: Django's core runserver runs in the worker instead of ours.
_DJANGO_THREAD_FAILURE = b"Exception in thread django-main-thread"

Event = tuple[Any, ...]
#: A file as the supervisor last acted on it: inode, size and modification
#: time, or None once it is gone.
FileState = tuple[int, int, int] | None


def file_state(path: str) -> FileState:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _started_unbuffered() -> bool:
    """Whether the interpreter got ``-u`` (alone or in a cluster like ``-uB``)."""
    for arg in getattr(sys, "orig_argv", ())[1:]:
        if not arg.startswith("-") or arg.startswith("--"):
            return False  # the script or module: interpreter options are over
        if arg[1:].isalpha() and "u" in arg[1:]:
            return True
    return False


class WorkerProcess:
    """One worker: the same command line again, on the inherited socket."""

    def __init__(
        self, listen: socket.socket, events: queue.SimpleQueue[Event], generation: int
    ) -> None:
        self.generation = generation
        self.state = "starting"
        self._events = events
        ours, theirs = socket.socketpair()
        self.channel = Channel(ours)
        env = {
            **os.environ,
            autoreload.DJANGO_AUTORELOAD_ENV: "true",
            WORKER_ENV: worker_marker(listen.fileno(), theirs.fileno()),
        }
        if _started_unbuffered():
            env.setdefault("PYTHONUNBUFFERED", "1")  # -u is not in the child's args
        self._stderr_tail = bytearray()
        self._fallback_seen = False
        try:
            self.process = subprocess.Popen(
                autoreload.get_child_arguments(),
                env=env,
                pass_fds=(listen.fileno(), theirs.fileno()),
                stderr=subprocess.PIPE,
            )
        finally:
            theirs.close()
        self.started = time.monotonic()
        for target, name in (
            (self._read_messages, "messages"),
            (self._tee_stderr, "stderr"),
            (self._wait, "wait"),
        ):
            threading.Thread(
                target=target, name=f"runserver_plus-worker-{name}", daemon=True
            ).start()

    @property
    def stderr_tail(self) -> str:
        return self._stderr_tail.decode("utf-8", "replace")

    def _read_messages(self) -> None:
        for message in self.channel:
            self._events.put(("message", self, message))

    def _tee_stderr(self) -> None:
        """Pass the worker's stderr through, keeping its tail for the error page."""
        stream = self.process.stderr
        assert stream is not None
        out = getattr(sys.stderr, "buffer", None)
        while chunk := os.read(stream.fileno(), 65536):
            if out is not None:
                out.write(chunk)
                out.flush()
            else:
                sys.stderr.write(chunk.decode("utf-8", "replace"))
            self._stderr_tail += chunk
            del self._stderr_tail[:-STDERR_TAIL]
            if (
                self.state == "starting"
                and not self._fallback_seen
                and _DJANGO_THREAD_FAILURE in self._stderr_tail
            ):
                self._fallback_seen = True
                self._events.put(("fallback_failed", self))
        stream.close()

    def _wait(self) -> None:
        code = self.process.wait()
        self._events.put(("exit", self, code))

    def send(self, message: Message) -> None:
        self.channel.send(message)

    def stop(self, drain_timeout: float) -> None:
        """Ask for a drained stop; kill if it takes longer than the bound."""
        if self.state == "stopping":
            return
        self.state = "stopping"
        if not self.channel.send({"command": "stop"}):
            self.process.terminate()
        timer = threading.Timer(drain_timeout + KILL_GRACE, self.kill)
        timer.daemon = True
        timer.start()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()

    def close(self) -> None:
        self.channel.close()


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
            for worker in [self.worker, *self.retired]:
                if worker is not None:
                    worker.kill()
                    worker.close()
            self.listen.close()
            self.companions.stop()

    def _start_watching(self) -> None:
        from runserver_plus.reloader.watcher import Watcher  # noqa: PLC0415

        self.rules = self._make_rules()
        self.watcher = Watcher(
            lambda changes: self.events.put(("changes", changes)),
            force_polling=self.config.force_polling,
        )
        self.watcher.watch(self.rules.directories())

    def _done(self) -> bool:
        return self.stopping and self.worker is None and not self.retired

    def _dispatch(self, event: Event) -> None:
        kind = event[0]
        if kind == "changes":
            self._changed(event[1])
        elif kind == "message":
            self._message(event[1], event[2])
        elif kind == "exit":
            self._exited(event[1], event[2])
        elif kind == "fallback_failed":
            # Django's own runserver took over inside the worker after
            # django.setup() failed; it is printing the error and will wait.
            # Let the traceback arrive whole (the error page shows it), then
            # end the worker; its exit shows the page.
            worker: WorkerProcess = event[1]
            if worker is self.worker:
                timer = threading.Timer(TRACEBACK_SETTLE, worker.kill)
                timer.daemon = True
                timer.start()
        elif kind == "stop":
            self._stop()

    # --- signals ----------------------------------------------------------------

    def _install_signals(self) -> dict[int, Any]:
        from runserver_plus.runner import STOP_SIGNALS  # noqa: PLC0415

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.stopping:
                raise KeyboardInterrupt
            self.events.put(("stop",))

        return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)

    def _stop(self) -> None:
        self.stopping = True
        self._stop_error_server()
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
        self.worker = WorkerProcess(self.listen, self.events, self.generation)

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
        if event == "watch_dir":
            self.offered.add((Path(message["path"]), str(message["glob"])))
            self._update_rules()
        elif event == "modules":
            self._add_module_roots(message.get("files", []))
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
        elif event == "serving" and not self.stopping:
            self.companions.start()  # once: after the first worker serves
        elif event == "offer_result":
            paths = self.offers.pop(int(message.get("id", 0)), [])
            if paths and not message.get("claimed"):
                # Named by a file nobody claimed, as Django names it.
                unclaimed = [p for p in message.get("unclaimed", []) if p in paths]
                self._restart((unclaimed or paths)[0])

    def _exited(self, worker: WorkerProcess, code: int) -> None:
        worker.close()
        self.retired.discard(worker)
        if worker is not self.worker:
            return
        self.worker = None
        if self.stopping:
            return
        if code == 3:
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
        from runserver_plus.reloader.watcher import Action  # noqa: PLC0415

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
        from runserver_plus.reloader.watcher import WatchRules  # noqa: PLC0415

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

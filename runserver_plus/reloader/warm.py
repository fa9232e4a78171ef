"""The warm process: imports what the last worker did, then becomes the next worker.

The supervisor starts it (see ``process.WorkerProcess``) with the interpreter,
options, environment and inherited descriptors of a worker, but with
``BOOTSTRAP`` in place of the worker's script. It imports, best effort and at
a low priority, the modules the supervisor sends (those the last worker
loaded from outside the project), and waits. On ``go`` it checks that
nothing it imported has changed since it started, puts back what a worker
would have found (``sys.argv``, ``sys.path``, ``os.environ``, the working
directory, the SIGINT handler, a fresh ``random`` seed), and runs the
worker's script or module as ``__main__``: ``django.setup()``, the checks
and serving then happen here, as in a cold worker, minus the imports. The
preloaded objects are frozen out of the garbage collector's sight until
the worker serves (``procstate.freeze``), so the start does not walk them.

Which imports are kept: the project's settings are loaded first (many
installed packages read them at import: Django REST framework's views,
for one), then each module in turn. One that needs the app registry fails,
and a failed import is undone (the modules it added are removed). A module
whose import leaves something a worker must not inherit (a thread, an open
file, a module of the project) makes the whole process unusable: it
reports the modules to skip and exits, and the supervisor prepares another
without them. When loading the settings is what did that (an error
tracker's thread, say), the next warm process preloads without settings.
On ``go`` the settings module and what it imported of the project are
forgotten and Django's settings reset, so the worker executes them afresh;
a change to any of their files (or to a ``.env`` file) makes the warm
process stale first.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import queue
import random
import runpy
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import TracebackType

from runserver_plus import _compat
from runserver_plus.reloader import control, procstate
from runserver_plus.reloader.control import Channel
from runserver_plus.reloader.preload import (
    changed_since,
    is_project_path,
    lock_files,
    module_paths,
    system_prefixes,
)
from runserver_plus.reloader.procstate import ProcessState
from runserver_plus.server.sockets import adopt_socket

#: Run with ``python -c``; argv[1] is the first entry of the worker's sys.path.
BOOTSTRAP = (
    "import sys; sys.path[0] = sys.argv.pop(1); "
    "from runserver_plus.reloader.warm import main; main()"
)
#: How an unsafe report names the project's settings (see ``WarmSlot``).
SETTINGS_MARK = "(the settings)"
#: The process name ``ps`` and ``top`` show while it waits (Linux).
PROCESS_NAME = "runserver-warm"


def main() -> None:
    """The warm process, from its start to the worker's exit."""
    started = time.time_ns()
    marker = control.read_worker_marker()
    if marker is None:
        sys.exit("runserver_plus: a warm process needs the supervisor's marker.")
    target = sys.argv[1:]
    # What the worker must find, whatever the imports do to them.
    environ, path, cwd = dict(os.environ), list(sys.path), os.getcwd()
    # Ctrl-C in the terminal reaches the whole process group; the supervisor,
    # not the terminal, ends a warm process.
    previous_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
    name = procstate.rename(PROCESS_NAME)
    channel = Channel(adopt_socket(marker[1]))
    preloader = Preloader(channel)
    thread = threading.Thread(
        target=preloader.run, name="runserver_plus-preload", daemon=True
    )
    thread.start()
    go = False
    for message in channel:
        match message:
            case {
                "command": "preload",
                "modules": [*modules],
                "roots": [*roots],
                "lock_dirs": [*lock_dirs],
                "settings": bool(settings),
            }:
                preloader.add(modules, roots, lock_dirs, settings=settings)
            case {"command": "go"}:
                go = True
                break
    preloader.stop()
    thread.join()
    if not go:
        os._exit(0)  # the supervisor is gone: nothing to become
    stale = changed_since(preloader.imported_files(), started)
    if stale is not None:
        channel.send({"event": "stale", "path": stale})
        os._exit(0)
    channel.send({"event": "went", "preloaded": preloader.loaded})
    control.hand_over(channel)
    forget(preloader.settings_modules)
    if preloader.settings_modules:
        _compat.reset_settings()
    procstate.rename(name)
    os.environ.clear()
    os.environ.update(environ)
    sys.path[:] = path
    os.chdir(cwd)
    signal.signal(signal.SIGINT, previous_sigint)
    random.seed()  # from os.urandom, as at the import of random in a new process
    procstate.freeze()  # thawed once the worker serves
    run_as_main(target)


class Preloader:
    """Imports module names as they come, on its own thread, until stopped."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.pending: queue.SimpleQueue[Sequence[str]] = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.loaded = 0
        self.roots: tuple[str, ...] = ()
        self.lock_dirs: tuple[str, ...] = ()
        self.system = system_prefixes()
        self.with_settings = False
        #: What loading the settings imported: forgotten on go.
        self.settings_modules: set[str] = set()

    def add(
        self,
        modules: Sequence[str],
        roots: Sequence[str],
        lock_dirs: Sequence[str],
        *,
        settings: bool = False,
    ) -> None:
        """Import ``modules``, judging by ``roots`` what is the project's;
        with ``settings``, load the project's settings first."""
        self.roots = tuple(os.path.join(str(r), "") for r in roots)
        self.lock_dirs = tuple(str(d) for d in lock_dirs)
        self.with_settings = self.with_settings or settings
        self.pending.put([str(m) for m in modules])

    def stop(self) -> None:
        self.stopping.set()
        self.pending.put(())

    def run(self) -> None:
        procstate.lower_priority()
        batch = self.pending.get()  # the first comes with what to do
        if not self.with_settings:
            # Then a module that reads settings at import fails, as it must:
            # loading them here is what was found unsafe.
            os.environ.pop("DJANGO_SETTINGS_MODULE", None)
        else:
            self.settings_modules, why = self._load_settings()
            if why:
                self._give_up([SETTINGS_MARK], why)
        while not self.stopping.is_set():
            for name in batch:
                if self.stopping.is_set():
                    return
                added, why = self._load(name)
                if why:
                    self._give_up(sorted(added), why)
            if self.pending.empty():
                # What failed imports left is collected here, at the preload's
                # priority: the freeze at "go" then keeps only what is used.
                gc.collect()
                self.channel.send({"event": "preloaded", "preloaded": self.loaded})
            batch = self.pending.get()

    def _give_up(self, modules: list[str], why: str) -> None:
        """Nothing can take a thread or a setting back: this process must not
        become a worker. The supervisor starts another without ``modules``."""
        self.channel.send({"event": "unsafe", "modules": modules, "why": why})
        os._exit(0)

    def _load_settings(self) -> tuple[set[str], str]:
        """Load the project's settings; return the modules that added, and
        why the process is unfit when it is. Settings that fail to load (a
        syntax error) are left to the worker, which reports them."""
        before = set(sys.modules)
        state = procstate.process_state()
        try:
            from django.conf import settings  # noqa: PLC0415

            settings.INSTALLED_APPS  # noqa: B018 - loads the settings module
        except Exception:  # noqa: BLE001 - the worker shows the error
            forget(set(sys.modules) - before)
            return set(), ""
        added = set(sys.modules) - before
        self.loaded += len(added)
        self.settings_modules = added
        return added, self._unsafe(added, state, loading_settings=True)

    def _load(self, name: str) -> tuple[set[str], str]:
        """Import ``name``; return the modules it added and, when they leave
        this process unfit to become a worker, why."""
        if name in sys.modules:
            return set(), ""
        before = set(sys.modules)
        state = procstate.process_state()
        try:
            importlib.import_module(name)
        except (Exception, SystemExit):  # noqa: BLE001 - any failure: skip it
            # Needs settings or the app registry, or is broken: the worker
            # imports it in its own time. Undo the half import.
            forget(set(sys.modules) - before)
            return set(), ""
        added = set(sys.modules) - before
        self.loaded += len(added)
        return added, self._unsafe(added, state)

    def _unsafe(
        self, added: set[str], before: ProcessState, *, loading_settings: bool = False
    ) -> str:
        """Why the modules just imported leave this process unfit, or ''."""
        after = procstate.process_state()
        if after.threads > before.threads:
            return "started a thread"
        files = (before.files, after.files)
        if files[0] is not None and files[1] is not None and files[1] > files[0]:
            return "kept a file open"
        if after.configured and not before.configured and not loading_settings:
            return "configured Django's settings"
        for name in added - self.settings_modules:
            module = sys.modules.get(name)
            if module is not None and any(
                is_project_path(p, self.roots, self.system)
                for p in module_paths(module)
            ):
                return f"imported {name}, a module of the project"
        return ""

    def imported_files(self) -> list[str]:
        """Everything whose change makes this process stale: the files of its
        modules, the site-packages folders (``pip install`` and ``.pth``
        files change them) and the lock files."""
        files = [
            path
            for module in list(sys.modules.values())
            if module is not None
            for path in module_paths(module)
            if os.path.isabs(path)
        ]
        folders = [p for p in self.system if "-packages" in p]
        return [*files, *folders, *lock_files(self.lock_dirs)]


def run_as_main(target: list[str]) -> None:
    """Run the worker's script (or ``-m`` module) with its arguments, as
    ``python`` would: a traceback starts at the script, as in a cold worker."""
    try:
        if target[0] == "-m":
            sys.argv = [target[1], *target[2:]]
            runpy.run_module(target[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(target)
            runpy.run_path(target[0], run_name="__main__")
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001 - printed as python would
        sys.excepthook(type(exc), exc, _from_target(exc.__traceback__))
        sys.exit(1)


def _from_target(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` without its first frames: this module's and runpy's."""
    ours = {__file__, runpy.__file__, "<frozen runpy>"}
    while tb is not None and tb.tb_frame.f_code.co_filename in ours:
        tb = tb.tb_next
    return tb


def forget(names: set[str]) -> None:
    """Remove the modules ``names`` from ``sys.modules`` and from their parent
    packages, so that the next import executes them afresh."""
    for name in names:
        sys.modules.pop(name, None)
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            with contextlib.suppress(AttributeError):
                delattr(sys.modules[parent], child)

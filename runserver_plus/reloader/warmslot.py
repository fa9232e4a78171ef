"""The warm process the supervisor keeps ready: when to start one, what it preloads."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from django.utils import autoreload

from runserver_plus.config import ServerConfig
from runserver_plus.reloader.preload import warm_command
from runserver_plus.reloader.process import WorkerProcess
from runserver_plus.reloader.warm import BOOTSTRAP, SETTINGS_MARK

#: How many warm processes may be found unsafe (a module that starts a thread
#: at import, say) and replaced in one session before preloading gives up.
MAX_UNSAFE_WARM = 10
#: Why a worker starts cold when nothing else went wrong.
NOT_READY = "no warm process was ready yet"


class WarmSlot:
    """At most one warm process, and the modules the workers imported from
    outside the project (in import order, less those found unsafe)."""

    def __init__(
        self,
        config: ServerConfig,
        start: Callable[[Sequence[str]], WorkerProcess],
        say: Callable[[str], None],
    ) -> None:
        self.config = config
        self._start = start
        self._say = say
        self.process: WorkerProcess | None = None
        self.modules: dict[str, None] = {}
        self.unsafe: set[str] = set()
        self.replaced = 0
        self._cold_reason = NOT_READY

    def learn(self, modules: Sequence[str], *, serving: bool) -> None:
        """A worker reported what it imported: preload that too. A worker
        that serves is the moment to start a warm process, if none is ready."""
        new = [m for m in modules if m not in self.modules and m not in self.unsafe]
        self.modules.update(dict.fromkeys(new))
        if serving and self.process is None:
            self.prepare()
        elif serving:
            self._send(new)

    def prepare(self) -> None:
        """Start a warm process, unless one is there or none can be."""
        if self.process is not None or not self.config.preload:
            return
        if self.replaced >= MAX_UNSAFE_WARM:
            self._cold_reason = "too many modules were unsafe to preload"
            return
        command = warm_command(autoreload.get_child_arguments(), os.getcwd(), BOOTSTRAP)
        if command is None:
            self._cold_reason = "this command line cannot start warm"
            return
        self.process = self._start(command)
        self._send(list(self.modules))

    def _send(self, modules: list[str]) -> None:
        if self.process is None or not modules:
            return
        project = self.config.project_dir or os.getcwd()
        self.process.send(
            {
                "command": "preload",
                "modules": modules,
                # As the workers judge it: local packages elsewhere are
                # preloaded (a change to one makes the warm process stale).
                "roots": [project, *self.config.extra_watch_dirs],
                "lock_dirs": [project, os.path.dirname(project)],
                # Unless loading them once left something a worker must not
                # inherit (a thread an error tracker starts, say).
                "settings": SETTINGS_MARK not in self.unsafe,
            }
        )

    def take(self, generation: int) -> WorkerProcess | None:
        """The warm process, told to become worker ``generation``; None when
        there is none (``cold_reason()`` then says why)."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.go(generation):
            return process
        process.kill()  # its exit closes it, as any worker's
        self._cold_reason = "the warm process was gone"
        return None

    def cold_reason(self) -> str:
        """Why the worker starting now is cold; forgotten once said."""
        if not self.config.preload:
            return "--no-preload"
        reason, self._cold_reason = self._cold_reason, NOT_READY
        return reason

    def went_cold(self, reason: str) -> None:
        """The warm process told to go could not become the worker."""
        self._cold_reason = reason

    def found_unsafe(
        self, process: WorkerProcess, modules: list[str], why: str
    ) -> bool:
        """A warm process imported something a worker must not inherit; it
        exits by itself, and the next leaves these modules out. True when it
        was the waiting one (another is being prepared)."""
        self.unsafe.update(modules)
        for module in modules:
            self.modules.pop(module, None)
        listed = ", ".join(modules[:3]) + (" ..." if len(modules) > 3 else "")
        self._say(f"Not preloading {listed}: it {why}.")
        if process is not self.process:
            return False
        self.replaced += 1
        self.process = None
        self.prepare()
        return True

    def exited(self, process: WorkerProcess, code: int) -> bool:
        """True when ``process`` was the waiting warm process."""
        if process is not self.process:
            return False
        self.process = None
        self._cold_reason = f"the warm process exited (code {code})"
        return True

    def discard(self) -> WorkerProcess | None:
        """Kill the warm process (when stopping); return it to be reaped."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
        return process

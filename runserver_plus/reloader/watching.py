"""What the supervisor watches as the project grows, and which changes are new."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from runserver_plus.config import ServerConfig
from runserver_plus.reloader.rules import Action, WatchRules

if TYPE_CHECKING:
    from runserver_plus.reloader.watcher import Changes, Watcher

#: A file as the supervisor last acted on it: inode, size and modification
#: time, or None once it is gone.
FileState = tuple[int, int, int] | None


def file_state(path: str) -> FileState:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Watching:
    """The watch rules (roots, offered directories), the watcher that applies
    them, and how each changed file was when last acted on."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.roots = {
            Path(d) for d in (config.project_dir, *config.extra_watch_dirs) if d
        }
        self.offered: set[tuple[Path, str]] = set()
        self.rules = self._make_rules()
        #: Each changed file as it was when a worker was started or offered it.
        self.acted: dict[str, FileState] = {}
        # Made by start(), once the first worker is on its way: importing
        # watchfiles need not delay it.
        self.watcher: Watcher | None = None

    def start(self, on_changes: Callable[[Changes], None]) -> None:
        from runserver_plus.reloader.watcher import Watcher  # noqa: PLC0415

        self.watcher = Watcher(on_changes, force_polling=self.config.force_polling)
        self.watcher.watch(self.rules.directories())

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    def files(self, changes: Changes) -> list[str]:
        """The changed files of a batch, in path order; directories that came
        or went are watched anew."""
        rescan = False
        paths: list[str] = []
        for change, path in sorted(changes, key=lambda c: c[1]):
            if change.name == "added" and os.path.isdir(path):
                rescan = True
            elif change.name == "deleted" and self._watcher().forget(Path(path)):
                rescan = True  # a directory went; if it comes back, watch it anew
            else:
                paths.append(path)
        if rescan:
            self._watcher().watch(self.rules.directories())
        return paths

    def sort(self, paths: Iterable[str]) -> tuple[list[str], list[str]]:
        """The paths that ask for a restart, and those to offer to the worker,
        leaving out ignored files and changes already acted on."""
        restart: list[str] = []
        offer: list[str] = []
        for path in paths:
            action = self.rules.classify(path)
            if action is Action.IGNORE or not self._changed_since_acted(path):
                continue
            (restart if action is Action.RESTART else offer).append(path)
        return restart, offer

    def act_on(self, paths: Iterable[str]) -> None:
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

    def offer_dir(self, directory: Path, glob: str) -> None:
        """A ``watch_dir()`` of the worker: offer matching changes to it,
        once ``apply()`` watches them."""
        self.offered.add((directory, glob))

    def apply(self) -> None:
        """Watch what the offers so far ask for.

        Once per batch: a starting worker makes dozens of offers (a template
        and a locale folder per app), and each new set of rules means a new
        look at every directory, so one look per offer made the start of a
        large project wait a quarter of a second for its watch.
        """
        self._update_rules()

    def add_module_roots(self, files: Iterable[str]) -> None:
        """Watch the folders of imported modules outside the roots (local
        packages), unless ignored (site-packages, the standard library)."""
        for file in files:
            directory = Path(file).parent
            if any(directory == r or r in directory.parents for r in self.roots):
                continue
            if self.rules.is_ignored_dir(directory):
                continue
            self.roots.add(directory)
        self._update_rules()

    def _watcher(self) -> Watcher:
        assert self.watcher is not None, "changes come only once start() watches"
        return self.watcher

    def _make_rules(self) -> WatchRules:
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
            if self.watcher is not None:
                self.watcher.watch(rules.directories())

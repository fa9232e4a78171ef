"""What the supervisor watches: directories, ignores, and what a change means."""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
import re
import site
import sysconfig
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import watchfiles

#: Directory names never worth an OS watch: VCS, caches, dependencies, virtualenvs.
IGNORED_DIR_NAMES = frozenset(
    {
        ".direnv",
        ".eggs",
        ".git",
        ".hg",
        ".hypothesis",
        ".idea",
        ".mypy_cache",
        ".nox",
        ".pytest_cache",
        ".ruff_cache",
        ".svn",
        ".tox",
        ".venv",
        ".vscode",
        "__pycache__",
        "__pypackages__",
        "htmlcov",
        "node_modules",
        "site-packages",
        "venv",
    }
)

#: File names that are never a source change: bytecode, editor swap and backup
#: files, SQLite databases and their journals.
IGNORED_FILE_NAMES = re.compile(
    r"""
    \.py[cod]$ | \.sw[a-p]$ | ~$ | ^\.\# | ^\#.*\#$ | ^\.DS_Store$ | ^flycheck_
    | ^4913$ | \.___jb_\w+___$
    | \.(?:sqlite3?|db)(?:-journal|-wal|-shm)?$
    """,
    re.VERBOSE,
)


class Action(enum.Enum):
    """What a changed file asks of the supervisor."""

    IGNORE = "ignore"
    RESTART = "restart"  # Python code: a new worker
    OFFER = "offer"  # a watched non-Python file: the worker may handle it


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """A ``**``-aware glob as a regex over POSIX paths, the same on every Python."""
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif pattern[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            parts.append("[^/]")
            i += 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts) + r"\Z")


def _system_prefixes() -> tuple[str, ...]:
    """The standard library and site-packages: never watched."""
    paths = {
        sysconfig.get_paths()[key]
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
    }
    paths.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    if site.ENABLE_USER_SITE and site.USER_SITE:
        paths.add(site.USER_SITE)
    return tuple(os.path.join(os.path.realpath(p), "") for p in paths if p)


def _is_under(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == p.rstrip(os.sep) or path.startswith(p) for p in prefixes)


@dataclasses.dataclass(frozen=True)
class WatchRules:
    """Which directories are watched and what a change under them means."""

    #: Directories watched with everything below them (minus the ignores).
    roots: tuple[Path, ...]
    #: Directories ignored with everything below them (MEDIA_ROOT, ...).
    ignored: tuple[Path, ...] = ()
    #: Extra globs whose matches restart, and globs whose matches are ignored.
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    #: ``(directory, glob)`` registered through ``watch_dir``: offered first.
    offered: tuple[tuple[Path, str], ...] = ()

    # Compiled once per rules object; cached_property writes to the instance
    # dict directly, which a frozen dataclass allows.
    @functools.cached_property
    def _include(self) -> tuple[re.Pattern[str], ...]:
        return tuple(_user_glob(g) for g in self.include)

    @functools.cached_property
    def _exclude(self) -> tuple[re.Pattern[str], ...]:
        return tuple(_user_glob(g) for g in self.exclude)

    @functools.cached_property
    def _offered(self) -> tuple[tuple[Path, re.Pattern[str]], ...]:
        return tuple((d, glob_to_regex(g)) for d, g in self.offered)

    @functools.cached_property
    def _ignored(self) -> tuple[str, ...]:
        ignored = tuple(os.path.join(str(p), "") for p in self.ignored)
        return ignored + _system_prefixes()

    def is_ignored_dir(self, path: Path) -> bool:
        if path.name in IGNORED_DIR_NAMES or (path / "pyvenv.cfg").exists():
            return True
        return _is_under(str(path), self._ignored)

    def classify(self, path: str) -> Action:
        """What a change to ``path`` (absolute) asks for."""
        file = Path(path)
        if IGNORED_FILE_NAMES.search(file.name):
            return Action.IGNORE
        if any(part in IGNORED_DIR_NAMES for part in file.parts[:-1]):
            return Action.IGNORE
        if _is_under(path, self._ignored):
            return Action.IGNORE
        posix = file.as_posix()
        if any(_matches(rx, posix) for rx in self._exclude):
            return Action.IGNORE
        if file.suffix == ".py" or any(_matches(rx, posix) for rx in self._include):
            return Action.RESTART
        for directory, rx in self._offered:
            try:
                relative = file.relative_to(directory).as_posix()
            except ValueError:
                continue
            if rx.match(relative):
                return Action.OFFER
        return Action.IGNORE

    def directories(self) -> list[Path]:
        """Every directory to watch: the roots and the offered directories,
        walked once without descending into ignored ones."""
        found: list[Path] = []
        seen: set[Path] = set()
        starts = [*self.roots, *(d for d, _ in self.offered)]
        for start in starts:
            if not start.is_dir() or self.is_ignored_dir(start):
                continue
            for current, dirnames, _ in os.walk(start):
                here = Path(current)
                if here in seen:
                    dirnames[:] = []
                    continue
                seen.add(here)
                found.append(here)
                dirnames[:] = sorted(
                    d for d in dirnames if not self.is_ignored_dir(here / d)
                )
        return found


def _user_glob(pattern: str) -> re.Pattern[str]:
    """An option glob: a bare name pattern matches in any directory."""
    if not pattern.startswith(("/", "**")):
        pattern = "**/" + pattern
    return glob_to_regex(pattern)


def _matches(rx: re.Pattern[str], posix_path: str) -> bool:
    return (
        rx.match(posix_path.lstrip("/")) is not None or rx.match(posix_path) is not None
    )


Changes = set[tuple[watchfiles.Change, str]]


class Watcher:
    """OS file events for a growing set of directories, in background threads.

    Each directory gets one non-recursive watch, so ignored trees
    (``node_modules``) cost no watch at all. ``watchfiles`` cannot add paths to
    a running watch, and restarting it would lose the changes made meanwhile,
    so directories added later get a watch group (and thread) of their own.
    """

    #: watchfiles batches changes until nothing changed for ``STEP`` ms, for at
    #: most ``DEBOUNCE`` ms: a branch switch arrives as one batch.
    DEBOUNCE = 1600  # ms
    STEP = 50  # ms

    def __init__(
        self, on_changes: Callable[[Changes], None], *, force_polling: bool
    ) -> None:
        self._on_changes = on_changes
        self._force_polling = force_polling
        self._watched: set[Path] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def watch(self, directories: Iterable[Path]) -> None:
        """Make sure these directories are watched (others stay watched)."""
        with self._lock:
            new = [d for d in dict.fromkeys(directories) if d not in self._watched]
            if not new or self._stop.is_set():
                return
            self._watched.update(new)
            thread = threading.Thread(
                target=self._run,
                args=([str(d) for d in new],),
                name=f"runserver_plus-watcher-{len(self._threads) + 1}",
                daemon=True,
            )
            self._threads.append(thread)
        thread.start()

    @property
    def directories(self) -> set[Path]:
        with self._lock:
            return set(self._watched)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)

    def _run(self, directories: list[str]) -> None:
        existing = [d for d in directories if os.path.isdir(d)]
        if not existing:
            return
        for changes in watchfiles.watch(
            *existing,
            watch_filter=None,
            debounce=self.DEBOUNCE,
            step=self.STEP,
            stop_event=self._stop,
            rust_timeout=1000,
            recursive=False,
            force_polling=self._force_polling or None,
            raise_interrupt=False,
            ignore_permission_denied=True,
        ):
            self._on_changes(changes)

"""What the supervisor watches: directories, ignores, and what a change means."""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from watchfiles import Change

# The documented Rust backend of watchfiles.watch(): used directly to know
# when a new watch is live (see Watcher).
from watchfiles._rust_notify import RustNotify

from runserver_plus.reloader.doorbell import Doorbell, DoorbellError
from runserver_plus.reloader.preload import system_prefixes

logger = logging.getLogger("django.utils.autoreload")

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
        return ignored + system_prefixes()

    @functools.cached_property
    def _bases(self) -> tuple[Path, ...]:
        """Roots and offered directories, deepest first."""
        bases = {*self.roots, *(d for d, _ in self.offered)}
        return tuple(sorted(bases, key=lambda p: len(p.parts), reverse=True))

    def is_ignored_dir(self, path: Path) -> bool:
        if path.name in IGNORED_DIR_NAMES or _is_virtualenv(str(path)):
            return True
        return _is_under(str(path), self._ignored)

    def classify(self, path: str) -> Action:
        """What a change to ``path`` (absolute) asks for.

        Directory names are judged below the watched directory only, so a
        project may itself live in, say, ``~/venv/site``.
        """
        file = Path(path)
        if IGNORED_FILE_NAMES.search(file.name):
            return Action.IGNORE
        base = next((b for b in self._bases if b in file.parents), None)
        relative = file.relative_to(base) if base is not None else file
        for depth, part in enumerate(relative.parts[:-1], start=1):
            if part in IGNORED_DIR_NAMES:
                return Action.IGNORE
            if _is_virtualenv(
                str((base or Path(file.anchor)).joinpath(*relative.parts[:depth]))
            ):
                return Action.IGNORE
        if _is_under(path, self._ignored):
            return Action.IGNORE
        names = (relative.as_posix(), file.as_posix())
        if any(_matches(rx, names) for rx in self._exclude):
            return Action.IGNORE
        if file.suffix == ".py" or any(_matches(rx, names) for rx in self._include):
            return Action.RESTART
        for directory, rx in self._offered:
            if directory in file.parents and rx.match(
                file.relative_to(directory).as_posix()
            ):
                return Action.OFFER
        return Action.IGNORE

    def directories(self) -> list[Path]:
        """Every directory to watch: the roots and the offered directories,
        walked once without descending into ignored ones."""
        found: list[Path] = []
        seen: set[Path] = set()
        starts = [*self.roots, *(d for d, _ in self.offered)]
        for start in starts:
            # os.path: Path.is_dir() raises for a name too long (before 3.14).
            if not os.path.isdir(start) or self.is_ignored_dir(start):
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
    """An option glob, matched against the path below the watched directory
    (an absolute pattern against the absolute path); a bare name pattern
    matches in any directory."""
    if not pattern.startswith(("/", "**")):
        pattern = "**/" + pattern
    return glob_to_regex(pattern)


def _matches(rx: re.Pattern[str], names: tuple[str, str]) -> bool:
    relative, absolute = names
    return rx.match(absolute if rx.pattern.startswith("/") else relative) is not None


@functools.lru_cache(maxsize=4096)
def _is_virtualenv(directory: str) -> bool:
    """A virtualenv, whatever its name, has a pyvenv.cfg at its top."""
    return os.path.exists(os.path.join(directory, "pyvenv.cfg"))


Changes = set[tuple[Change, str]]


class Watcher:
    """OS file events for a set of directories, in one background thread.

    Each directory gets one non-recursive watch, so ignored trees
    (``node_modules``) cost no watch at all. watchfiles cannot add paths to a
    running watch, so new directories mean a new watch over all of them; stat
    snapshots taken before and after the hand-over find what changed in
    between, so no change is lost.
    """

    #: watchfiles batches changes until nothing changed for ``STEP`` ms, for at
    #: most ``DEBOUNCE`` ms: a branch switch arrives as one batch. An idle
    #: watch blocks on the doorbell and asks watchfiles only once it rings,
    #: so a batch is ready two steps after the last change.
    DEBOUNCE = 1600  # ms
    STEP = 25  # ms
    #: Without a doorbell (no inotify) watchfiles' wait steps all the time:
    #: a longer step costs fewer idle wake-ups (25 a second), for a latency
    #: of one to two steps.
    FALLBACK_STEP = 40  # ms
    #: After a ring or a batch, the watch goes on until nothing changed for
    #: ``SETTLE`` ms before it blocks again: an event can reach watchfiles
    #: after the batch it belongs to (its thread was busy), and must not wait
    #: for the next ring.
    SETTLE = 1000  # ms
    #: How often forced polling looks (for mounts without OS events).
    POLL_INTERVAL = 0.3  # s

    def __init__(
        self,
        on_changes: Callable[[Changes], None],
        *,
        force_polling: bool,
        doorbell: bool = True,
    ) -> None:
        self._on_changes = on_changes
        self._force_polling = force_polling
        self._watched: set[Path] = set()
        self._lock = threading.Lock()
        #: What the watched directories held when last looked at, and which
        #: directories that covers: a new watch compares against it.
        self._baseline: dict[str, Stat] = {}
        self._baselined: set[str] = set()
        self._stop = threading.Event()
        #: Set when the directories change (or on stop): ends the current watch.
        self._renew = threading.Event()
        #: Blocks the idle watch until something changes (None: step instead).
        self._doorbell = None if force_polling or not doorbell else Doorbell.open()
        self._ringing = self._doorbell is not None  # False once it failed
        self._thread = threading.Thread(
            target=self._run, name="runserver_plus-watcher", daemon=True
        )

    def watch(self, directories: Iterable[Path]) -> None:
        """Make sure these directories are watched (others stay watched)."""
        with self._lock:
            new = [d for d in dict.fromkeys(directories) if d not in self._watched]
            if not new or self._stop.is_set():
                return
            self._watched.update(new)
            # Looked at now, in the caller's thread: a change made from here on
            # is reported even if it lands before the new watch is live.
            names = [str(d) for d in new]
            self._baseline.update(_snapshot(names))
            self._baselined.update(names)
            if not self._thread.is_alive():
                self._thread.start()
            self._wake()

    def forget(self, directory: Path) -> bool:
        """A watched directory was removed: its OS watch died with it, so a
        directory made again at that path needs a new one. True if it was
        watched."""
        with self._lock:
            if directory not in self._watched:
                return False
            self._watched.discard(directory)
            return True

    @property
    def directories(self) -> set[Path]:
        with self._lock:
            return set(self._watched)

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            self._wake()
        if self._thread.is_alive():
            self._thread.join(5)
        with self._lock:
            if self._doorbell is not None and not self._thread.is_alive():
                self._doorbell.close()
                self._doorbell = None

    def _wake(self) -> None:
        """End the current watch: the directories changed, or stop(). Called
        with the lock held, so the doorbell is not closed meanwhile."""
        self._renew.set()
        if self._doorbell is not None:
            self._doorbell.interrupt()

    def _current(self) -> list[str]:
        return sorted(str(d) for d in self.directories if os.path.isdir(d))

    def _run(self) -> None:
        if self._force_polling:
            self._poll()
            return
        while not self._stop.is_set():
            self._renew.clear()
            directories = self._current()
            if not directories:
                self._renew.wait()
                continue
            self._ring_for(directories)
            with RustNotify(directories, False, False, 0, False, True) as notify:
                # The new watch is live: report what changed while no watch
                # covered the directories (since watch() or the last batch).
                self._catch_up(directories)
                settling = False  # a ring or a batch came: look until quiet
                while not self._renew.is_set():
                    if self._doorbell is None or not self._ringing:
                        step, timeout = self.FALLBACK_STEP, 0
                    elif settling or self._doorbell.wait():
                        self._doorbell.wait(0)  # rings for what is looked at now
                        step, timeout = self.STEP, self.SETTLE
                    else:
                        continue  # interrupted: the directories changed
                    raw = notify.watch(self.DEBOUNCE, step, timeout, self._renew)
                    settling = isinstance(raw, set)
                    if isinstance(raw, set):
                        self._on_changes({(Change(c), p) for c, p in raw})
                        self._rebase(directories)

    def _ring_for(self, directories: list[str]) -> None:
        """Cover the directories with the doorbell before watchfiles watches
        them; without one (no inotify, or its watch limit reached), step."""
        if self._doorbell is None or not self._ringing:
            return
        try:
            self._doorbell.cover(directories)
        except DoorbellError as error:
            logger.debug("Stepping instead of blocking: %s", error)
            self._ringing = False

    def _catch_up(self, directories: list[str]) -> None:
        current = _snapshot(directories)
        with self._lock:
            missed = _diff(self._baseline, current, within=self._baselined)
            self._baseline, self._baselined = current, set(directories)
        if missed:
            self._on_changes(missed)

    def _rebase(self, directories: list[str]) -> None:
        """Take the batch just reported as seen (directories that watch()
        added meanwhile keep their own baseline)."""
        current = _snapshot(directories)
        watched = set(directories)
        with self._lock:
            kept = {
                path: stat
                for path, stat in self._baseline.items()
                if os.path.dirname(path) not in watched
            }
            self._baseline = {**kept, **current}

    def _poll(self) -> None:
        """Poll with our own stat snapshots, comparing nanosecond mtimes and
        sizes: watchfiles' poller misses a second save within the same second."""
        directories = self._current()
        before = _snapshot(directories)
        while not self._stop.wait(self.POLL_INTERVAL):
            known, directories = set(directories), self._current()
            after = _snapshot(directories)
            changes = _diff(before, after, within=known)
            deadline = time.monotonic() + self.DEBOUNCE / 1000
            while changes and time.monotonic() < deadline:
                if self._stop.wait(self.STEP / 1000):
                    return
                latest = _snapshot(directories)
                more = _diff(after, latest, within=known)
                if not more:
                    break
                changes |= more
                after = latest
            before = after
            if changes:
                self._on_changes(changes)


Stat = tuple[int, int]


def _snapshot(directories: Iterable[str]) -> dict[str, Stat]:
    """``path -> (mtime_ns, size)`` for the entries of each directory."""
    found: dict[str, Stat] = {}
    for directory in directories:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue  # removed since: its parent reports that
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            found[entry.path] = (st.st_mtime_ns, st.st_size)
    return found


def _diff(
    before: dict[str, Stat], after: dict[str, Stat], *, within: set[str]
) -> Changes:
    """The changes between two snapshots, in the directories of ``within``
    (a directory new to the watch has nothing to compare with)."""
    changes: Changes = set()
    for path, stat in after.items():
        if os.path.dirname(path) not in within:
            continue
        old = before.get(path)
        if old is None:
            changes.add((Change.added, path))
        elif old != stat:
            changes.add((Change.modified, path))
    changes.update(
        (Change.deleted, p)
        for p in before.keys() - after.keys()
        if os.path.dirname(p) in within
    )
    return changes

"""The watch engine: OS file events for a set of directories, in one thread."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from watchfiles import Change

# The documented Rust backend of watchfiles.watch(): used directly to know
# when a new watch is live (see Watcher).
from watchfiles._rust_notify import RustNotify

from runserver_plus.reloader.doorbell import Doorbell, DoorbellError

logger = logging.getLogger("django.utils.autoreload")

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
            with RustNotify(
                watch_paths=directories,
                debug=False,
                force_polling=False,
                poll_delay_ms=0,
                recursive=False,
                ignore_permission_denied=True,
            ) as notify:
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
                    raw = notify.watch(
                        debounce_ms=self.DEBOUNCE,
                        step_ms=step,
                        timeout_ms=timeout,
                        stop_event=self._renew,
                    )
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

"""The watch engine: real OS events (and polling) on a real temporary directory."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runserver_plus.reloader.watcher import Changes, Watcher
from tests.helpers import make_dirs, wait_until

EVENT_TIMEOUT = 10.0  # s, from a write to the batch that reports it
#: How long one write waits for its event before the file is written again: a
#: watch is set up on the watcher's thread, and a write before it is unseen.
POKE_INTERVAL = 0.5  # s


# Watcher: real OS events (and polling) on a real temporary directory.


@pytest.fixture(params=["events", "stepping", "polling"])
def watcher(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[Watcher, queue.Queue[Changes]]]:
    # events: OS events, idle on the doorbell; stepping: OS events without a
    # doorbell (macOS, Windows, inotify limits); polling: --watch-poll.
    batches: queue.Queue[Changes] = queue.Queue()
    watcher = Watcher(
        batches.put,
        force_polling=request.param == "polling",
        doorbell=request.param == "events",
    )
    try:
        yield watcher, batches
    finally:
        watcher.stop()


def poke_until_seen(
    batches: queue.Queue[Changes], file: Path, timeout: float = EVENT_TIMEOUT
) -> Changes:
    """Write ``file`` until a batch reports it; return that batch.

    A watch starts on the watcher's own thread and says nothing when it is in
    place, so a write may come first: the file is written again after each
    ``POKE_INTERVAL`` without news, until the deadline.
    """
    seen: list[Changes] = []

    def reported() -> Changes | None:
        file.write_text(f"poke {len(seen)}\n")
        try:
            while True:
                changes = batches.get(timeout=POKE_INTERVAL)
                seen.append(changes)
                if any(path == str(file) for _, path in changes):
                    return changes
        except queue.Empty:
            return None

    changes = wait_until(reported, timeout, f"no change reported for {file}: {seen}")
    assert changes is not None
    return changes


def test_watcher_reports_a_written_file(
    tmp_path: Path, watcher: tuple[Watcher, queue.Queue[Changes]]
) -> None:
    watch, batches = watcher
    watch.watch([tmp_path])

    changes = poke_until_seen(batches, tmp_path / "views.py")

    assert all(isinstance(path, str) for _, path in changes)
    assert watch.directories == {tmp_path}


def test_watcher_adds_a_directory_later(
    tmp_path: Path, watcher: tuple[Watcher, queue.Queue[Changes]]
) -> None:
    first = tmp_path / "first"
    later = tmp_path / "later"
    make_dirs(tmp_path, "first", "later")
    watch, batches = watcher
    watch.watch([first])
    poke_until_seen(batches, first / "a.py")

    watch.watch([first, later])

    poke_until_seen(batches, later / "b.py")
    # The first directory is still watched.
    poke_until_seen(batches, first / "a.py")
    assert watch.directories == {first, later}


def write_in_second(file: Path, text: str, second: int, fraction_ns: int) -> None:
    """Write ``file`` and give it an mtime inside the given wall-clock second:
    two saves within one second, without waiting for the clock."""
    file.write_text(text)
    mtime = second * 1_000_000_000 + fraction_ns
    os.utime(file, ns=(mtime, mtime))


def test_polling_sees_two_saves_within_one_second(tmp_path: Path) -> None:
    # --watch-poll is for mounts without OS events; an editor may save twice
    # in a second there too (a save, then a quick fix).
    batches: queue.Queue[Changes] = queue.Queue()
    watcher = Watcher(batches.put, force_polling=True)
    try:
        watcher.watch([tmp_path])
        poke_until_seen(batches, tmp_path / "warm-up.py")
        file = tmp_path / "views.py"
        second = int(time.time())

        write_in_second(file, "x = 1\n", second, 100_000_000)
        wait_for_change(batches, file)
        write_in_second(file, "x = 2  # the quick fix\n", second, 600_000_000)

        wait_for_change(batches, file)
    finally:
        watcher.stop()


def wait_for_change(batches: queue.Queue[Changes], file: Path) -> None:
    deadline = time.monotonic() + EVENT_TIMEOUT
    seen: list[Changes] = []
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            changes = batches.get(timeout=remaining)
        except queue.Empty:
            break
        seen.append(changes)
        if any(path == str(file) for _, path in changes):
            return
    raise AssertionError(f"no change reported for {file} in {EVENT_TIMEOUT} s: {seen}")


def test_watcher_stop_ends_its_threads(tmp_path: Path) -> None:
    batches: queue.Queue[Changes] = queue.Queue()
    watcher = Watcher(batches.put, force_polling=False)
    make_dirs(tmp_path, "a", "b")
    watcher.watch([tmp_path / "a"])
    watcher.watch([tmp_path / "b"])
    poke_until_seen(batches, tmp_path / "b" / "x.py")

    watcher.stop()

    assert not [
        t for t in threading.enumerate() if t.name.startswith("runserver_plus-watcher")
    ]
    # A stopped watcher takes no new directories.
    watcher.watch([tmp_path])
    assert watcher.directories == {tmp_path / "a", tmp_path / "b"}

"""The doorbell: an inotify wait that returns when a directory changes (tier 4)."""

from __future__ import annotations

import errno
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runserver_plus.reloader.doorbell import Doorbell, DoorbellError

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="inotify is Linux's"
)

RING_TIMEOUT = 10.0  # s, from a change to the ring
#: A wait for a ring that must not come does not wait: the kernel queues an
#: inotify event within the system call that causes it, so once that call
#: has returned, a ring is already there or will not come.
SILENCE = 0  # s


@pytest.fixture
def doorbell() -> Iterator[Doorbell]:
    bell = Doorbell.open()
    assert bell is not None, "inotify is available on Linux"
    try:
        yield bell
    finally:
        bell.close()


def test_a_write_rings(tmp_path: Path, doorbell: Doorbell) -> None:
    doorbell.cover([str(tmp_path)])

    (tmp_path / "views.py").write_text("x = 1\n")

    assert doorbell.wait(RING_TIMEOUT)
    # The ring took the queued events: nothing is left to ring for.
    assert not doorbell.wait(SILENCE)


@pytest.mark.parametrize(
    "change",
    ["create", "modify", "delete", "rename in", "rename out", "mkdir", "chmod"],
)
def test_each_kind_of_change_rings(
    tmp_path: Path, doorbell: Doorbell, change: str
) -> None:
    watched, elsewhere = tmp_path / "watched", tmp_path / "elsewhere"
    watched.mkdir()
    elsewhere.mkdir()
    existing = watched / "existing.html"
    existing.write_text("old\n")
    outside = elsewhere / "outside.py"
    outside.write_text("x = 1\n")
    doorbell.cover([str(watched)])
    assert not doorbell.wait(SILENCE)

    if change == "create":
        (watched / "new.py").write_text("x = 1\n")
    elif change == "modify":
        with existing.open("a") as file:
            file.write("more\n")
    elif change == "delete":
        existing.unlink()
    elif change == "rename in":
        outside.rename(watched / "moved.py")
    elif change == "rename out":
        existing.rename(elsewhere / "moved.html")
    elif change == "mkdir":
        (watched / "app").mkdir()
    else:
        existing.chmod(0o600)

    assert doorbell.wait(RING_TIMEOUT)


def test_reading_does_not_ring(tmp_path: Path, doorbell: Doorbell) -> None:
    # Templates and static files are read on every request: that is no change.
    template = tmp_path / "page.html"
    template.write_text("<p>hello</p>\n")
    doorbell.cover([str(tmp_path)])

    assert template.read_text() == "<p>hello</p>\n"
    os.listdir(tmp_path)

    assert not doorbell.wait(SILENCE)


def test_a_change_in_an_uncovered_directory_does_not_ring(
    tmp_path: Path, doorbell: Doorbell
) -> None:
    covered, other = tmp_path / "covered", tmp_path / "node_modules"
    covered.mkdir()
    other.mkdir()
    doorbell.cover([str(covered)])

    (other / "index.js").write_text("x\n")

    assert not doorbell.wait(SILENCE)


def test_interrupt_ends_a_blocked_wait(tmp_path: Path, doorbell: Doorbell) -> None:
    doorbell.cover([str(tmp_path)])
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(doorbell.wait()))
    waiter.start()

    doorbell.interrupt()

    waiter.join(RING_TIMEOUT)
    assert not waiter.is_alive()
    assert results == [False]


def test_an_interrupt_before_the_wait_is_kept(doorbell: Doorbell) -> None:
    doorbell.interrupt()
    doorbell.interrupt()  # a second one is not an error either

    assert not doorbell.wait(RING_TIMEOUT)  # returns at once, not on the timeout


def test_covering_a_directory_twice_and_a_vanished_one(
    tmp_path: Path, doorbell: Doorbell
) -> None:
    doorbell.cover([str(tmp_path), str(tmp_path / "gone")])
    doorbell.cover([str(tmp_path)])

    (tmp_path / "a.py").write_text("x = 1\n")

    assert doorbell.wait(RING_TIMEOUT)


def test_a_file_counts_as_vanished(tmp_path: Path, doorbell: Doorbell) -> None:
    # A directory replaced by a file (ENOTDIR) is skipped: its parent rings.
    file = tmp_path / "settings.py"
    file.write_text("x = 1\n")

    doorbell.cover([str(file)])


def test_a_directory_that_cannot_be_covered_is_an_error(
    tmp_path: Path, doorbell: Doorbell
) -> None:
    # The watcher steps instead when this happens (also for the watch limit).
    too_long = tmp_path / ("d" * (os.pathconf(tmp_path, "PC_NAME_MAX") + 1))

    with pytest.raises(DoorbellError) as raised:
        doorbell.cover([str(too_long)])

    assert raised.value.errno == errno.ENAMETOOLONG
    assert raised.value.filename == str(too_long)

"""A blocking "something changed" signal for the watcher (Linux inotify).

watchfiles' Rust wait (``RustNotify.watch``) collects OS events in a
background thread but can only be asked for them in fixed steps, so an idle
watch wakes 25 times a second for nothing. The doorbell is a second inotify
instance on the same directories that nobody reads events from: the watcher
blocks on it while nothing happens, and asks watchfiles for the batch only
after it rings. watchfiles still reports what changed.

Only the doorbell's existence is platform-specific: where inotify is not
available (macOS, Windows) ``Doorbell.open()`` returns None and the watcher
keeps stepping.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import sys
from collections.abc import Callable, Iterable

# <sys/inotify.h>: everything that changes a directory's entries or a file's
# content. Not IN_OPEN or IN_ACCESS: reading a template must not ring.
_IN_MODIFY = 0x00000002
_IN_ATTRIB = 0x00000004
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_FROM = 0x00000040
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_DELETE = 0x00000200
_IN_DELETE_SELF = 0x00000400
_IN_MOVE_SELF = 0x00000800
_IN_ONLYDIR = 0x01000000
_MASK = (
    _IN_MODIFY
    | _IN_ATTRIB
    | _IN_CLOSE_WRITE
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
    | _IN_ONLYDIR
)
_READ_SIZE = 65536  # bytes: the queued events are discarded, not parsed


class DoorbellError(OSError):
    """A directory could not be covered (watch limit reached, permissions)."""


class Doorbell:
    """Rings when anything changes in the covered directories."""

    def __init__(self, fd: int, add_watch: Callable[[int, bytes, int], int]) -> None:
        self._fd = fd
        self._add_watch = add_watch
        self._wake_r, self._wake_w = os.pipe()
        for end in (self._wake_r, self._wake_w):
            os.set_blocking(end, False)

    @classmethod
    def open(cls) -> Doorbell | None:
        """A doorbell, or None where inotify is not available."""
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            init = libc.inotify_init1
            add_watch = libc.inotify_add_watch
        except (OSError, AttributeError):
            return None  # a libc without inotify
        init.argtypes = [ctypes.c_int]
        init.restype = ctypes.c_int
        add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        add_watch.restype = ctypes.c_int
        fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return None  # the per-user instance limit is reached
        return cls(fd, add_watch)

    def cover(self, directories: Iterable[str]) -> None:
        """Ring for changes in these directories too (covering one again is
        harmless). ``DoorbellError`` when one cannot be covered."""
        for directory in directories:
            if self._add_watch(self._fd, os.fsencode(directory), _MASK) < 0:
                code = ctypes.get_errno()
                if code in (errno.ENOENT, errno.ENOTDIR):
                    continue  # removed meanwhile: its parent's change rings
                raise DoorbellError(code, os.strerror(code), directory)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until something changes (True), or until ``interrupt()`` or
        the timeout (False). The events are discarded: a ring means "look"."""
        ready, _, _ = select.select([self._fd, self._wake_r], [], [], timeout)
        if self._wake_r in ready:
            _drain(self._wake_r)
            return False
        if self._fd in ready:
            _drain(self._fd)
            return True
        return False

    def interrupt(self) -> None:
        """Make the current or the next ``wait()`` return; from any thread."""
        with contextlib.suppress(BlockingIOError):  # a wake-up is pending already
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            os.close(fd)


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, _READ_SIZE):
            pass

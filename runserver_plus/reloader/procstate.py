"""What a process holds that a worker must not inherit, and how ps shows it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading

#: The nice value of the preloading thread (Linux sets it per thread, so the
#: worker this process becomes keeps the normal priority).
PRELOAD_NICE = 10


def rename(name: str | None) -> str | None:
    """Set this process's name as ``ps`` shows it; return the one it had
    (None where the platform has no such name)."""
    if name is None:
        return None
    try:
        with open("/proc/self/comm", "r+") as comm:
            previous = comm.read().rstrip("\n")
            comm.seek(0)
            comm.write(name)
    except OSError:
        return None
    return previous


def lower_priority() -> None:
    """Preload at a low priority, so that a serving worker is never slowed.

    Only this thread: the process keeps its priority for when it serves, and
    an unprivileged process could not raise it back. Linux alone sets the
    priority per thread; elsewhere preloading runs at the normal priority.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PRELOAD_NICE)


@dataclasses.dataclass(frozen=True)
class ProcessState:
    """What an import must not change in a process that becomes a worker."""

    threads: int
    files: int | None
    configured: bool


def process_state() -> ProcessState:
    return ProcessState(thread_count(), file_count(), settings_configured())


def settings_configured() -> bool:
    conf = sys.modules.get("django.conf")
    settings = getattr(conf, "settings", None)
    # LazySettings.configured does not load the settings.
    return bool(getattr(settings, "configured", False))


def thread_count() -> int:
    """Threads of this process, including those ``threading`` does not know."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def file_count() -> int | None:
    """Open descriptors of this process, where the platform lists them."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return len(os.listdir(folder))
    return None

"""What a process holds that a worker must not inherit, and how ps shows it."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import sys
import threading

#: The nice value of the preloading thread (Linux sets it per thread, so the
#: worker this process becomes keeps the normal priority).
PRELOAD_NICE = 10


#: The collector's first threshold during a start (``freeze``): Python's 700
#: means a young collection every 700 allocations, over a hundred while a
#: large project's models, admin and URLconf are built; at this one the
#: collector took a third of the time it took after the freeze alone.
START_THRESHOLD = 10_000


class _Frozen:
    """Whether this process froze its loaded objects (see ``freeze``), and
    the collector's thresholds before."""

    now = False
    threshold: tuple[int, ...] = ()


def freeze() -> None:
    """Leave what is loaded so far out of the garbage collections of the
    start that follows.

    Every full collection walks every object of every module loaded: on the
    benchmark's large project (2,300 modules) one takes 60-70 ms, and a warm
    start of about a second spent 100-140 ms in the collector, mostly walking
    what it had preloaded (70-90 ms once frozen, 22-31 ms with the threshold
    as well; gc.callbacks in the worker).
    Frozen (``gc.freeze``), those objects are skipped, and until the start
    is over young collections run less often (``START_THRESHOLD``). The
    runner does it for every start, cold ones too, so that warm and cold
    workers start with the same collector.
    ``thaw()`` undoes both once the process serves (or watches, for the
    supervisor), so that a serving process's collector sees what it would
    have seen without.
    """
    gc.freeze()
    if not _Frozen.now:
        _Frozen.threshold = gc.get_threshold()
        gc.set_threshold(START_THRESHOLD, *_Frozen.threshold[1:])
    _Frozen.now = True


def thaw() -> None:
    """Undo ``freeze()``, if this process did it: the thresholds come back
    (unless the project set its own meanwhile) and the frozen objects are
    collected again."""
    if _Frozen.now:
        _Frozen.now = False
        if gc.get_threshold() == (START_THRESHOLD, *_Frozen.threshold[1:]):
            gc.set_threshold(*_Frozen.threshold)
        gc.unfreeze()


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

"""Stop signals: a first SIGINT or SIGTERM asks for a drained stop, a second ends it."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

#: Signals that stop the server gracefully.
STOP_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGBREAK")
    if hasattr(signal, name)
)


#: The longest a main thread blocks at a time while it waits for a stop.
#: Python runs a signal's handler on the main thread, and only when that
#: thread runs: a signal the kernel hands to another thread (any thread may
#: take a process's signal) interrupts nothing there, and a main thread
#: blocked for good in a lock would never see it. Seen once in some fifteen
#: runs of a test: a --noreload server that ignored SIGTERM. Waking once a
#: second bounds that delay at a second.
SIGNAL_CHECK = 1.0  # s


class StopRequested(BaseException):
    """Raised in the main thread by the first stop signal.

    An exception rather than ``Event.set()`` in the handler: the handler runs
    on the main thread between bytecodes, possibly while that thread holds the
    very lock ``set()`` needs. A ``BaseException``, like ``KeyboardInterrupt``,
    so that ``except Exception`` does not swallow it.
    """


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """SIGINT/SIGTERM raise ``StopRequested``; a second one ``KeyboardInterrupt``
    (stop draining now)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals only reach the main thread; the caller stops us
        return
    received = 0

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal received
        received += 1
        if received > 1:
            raise KeyboardInterrupt
        raise StopRequested

    previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}
    for signum in STOP_SIGNALS:
        previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)

"""Deadline-bounded condition waits shared by the test suite."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    message: str,
    interval: float = 0.01,
) -> T:
    """Return the first truthy value of ``predicate()``, polled until ``timeout``.

    This is a condition wait with a deadline, not synchronisation by sleep: it
    returns as soon as the condition holds, and fails loudly when it never does.
    Between polls it blocks on ``Event().wait(interval)``, which nothing sets.
    Raises ``AssertionError(message + details)`` when the deadline passes; the
    details give the timeout and the predicate's last value.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"{message} (still false after {timeout} s; last value: {value!r})"
            )
        pause.wait(min(interval, remaining))


def make_dirs(root: Path, *relatives: str) -> None:
    """Create each of ``relatives`` below ``root``, with its parents."""
    for relative in relatives:
        (root / relative).mkdir(parents=True, exist_ok=True)

"""End to end: the project cannot load at the very first start (Django's fallback)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.e2e.harness import BANNER_RE, StartServer
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

#: Django's StatReloader polls once a second; the fallback relies on it.
RECOVERY_TIMEOUT = 30.0  # s
EXIT_TIMEOUT = 10.0  # s


def test_a_project_broken_at_the_first_start_is_served_by_us_once_fixed(
    project_dir: Path, start_server: StartServer
) -> None:
    # django.setup() fails, so Django swaps in its core runserver (ours is
    # not even imported) and its reloader waits for the fix.
    models = project_dir / "testapp" / "models.py"
    good = models.read_text()
    models.write_text(good + "\nraise RuntimeError('broken at the first start')\n")
    server = start_server("127.0.0.1:0", expect_ready=False)
    server.wait_for_stderr(r"RuntimeError: broken at the first start", 30)

    # Django's StatReloader takes its first mtime snapshot a moment after the
    # error, and a fix saved before that becomes its baseline (a known race of
    # Django's, not ours): save the fix with a newer mtime until it restarts.
    stamp = [models.stat().st_mtime]

    def save_fix() -> bool:
        if BANNER_RE.search(server.stdout_text()):
            return True
        stamp[0] += 2
        models.write_text(good)
        os.utime(models, (stamp[0], stamp[0]))
        return False

    wait_until(save_fix, RECOVERY_TIMEOUT, "Django's reloader never restarted", 1.0)
    # Its child now loads our command as the child of Django's reloader
    # (RUN_MAIN=true, no supervisor of ours).
    server.wait_ready(RECOVERY_TIMEOUT)
    response = server.get("/hello/")
    assert response.status == 200
    assert response.body == b"Hello, world!\n"
    assert (response.headers.get("Server") or "").startswith("runserver_plus/")

    server.signal_group(signal.SIGINT)
    assert server.process.wait(EXIT_TIMEOUT) == 0

"""End to end: a quick second save is served, not its predecessor's cached bytecode."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from tests.e2e.harness import RunningServer, StartServer
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

RELOAD_TIMEOUT = 15.0  # s, from a save to the new code answering


def save_hello(views: Path, text: str, mtime_ns: int | None = None) -> None:
    source = views.read_text()
    start = source.index('HttpResponse("') + len('HttpResponse("')
    end = source.index('\\n"', start)
    views.write_text(source[:start] + text + source[end:])
    if mtime_ns is not None:
        os.utime(views, ns=(mtime_ns, mtime_ns))


def serves(server: RunningServer, text: str) -> bool:
    return server.get("/hello/").body == f"{text}\n".encode()


def test_a_same_size_save_in_the_same_second_is_served(
    start_server: StartServer, project_dir: Path
) -> None:
    # Bytecode is written, as on most machines (an empty value means unset).
    server = start_server("127.0.0.1:0", env={"PYTHONDONTWRITEBYTECODE": ""})
    views = project_dir / "testapp" / "views.py"
    save_hello(views, "Hello, version 1!")
    wait_until(lambda: serves(server, "Hello, version 1!"), RELOAD_TIMEOUT, "v1")
    # The worker that serves version 1 imported it and cached its bytecode,
    # which Python trusts while the source keeps its size and its mtime in
    # whole seconds. Save version 2 like a quick second save: same size,
    # same second.
    assert os.path.exists(importlib.util.cache_from_source(str(views)))
    first = views.stat().st_mtime_ns
    same_second = first - first % 1_000_000_000 + (first + 1) % 1_000_000_000
    save_hello(views, "Hello, version 2!", same_second)
    wait_until(
        lambda: serves(server, "Hello, version 2!"),
        RELOAD_TIMEOUT,
        "the second save was served from stale bytecode",
    )

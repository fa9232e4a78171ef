"""Fixtures shared by the in-process server tests."""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live import SERVER_MODE, LogRecorder, record_server_log


@pytest.fixture
def log() -> Iterator[LogRecorder]:
    """What the server logs through ``django.server`` during the test."""
    with record_server_log() as recorder:
        yield recorder


@pytest.fixture
def collect_leaks() -> Iterator[None]:
    """Collect garbage after the test, so a file or socket the server leaked
    raises its ResourceWarning in the test that leaked it."""
    yield
    gc.collect()


@pytest.fixture(autouse=True)
def ca_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test, and every server it starts, keeps its certificate authority
    in a temporary directory: never the user's own."""
    directory = tmp_path_factory.mktemp("ca") / "ca"
    monkeypatch.setenv("RUNSERVER_PLUS_CA_DIR", str(directory))
    return directory


@pytest.fixture
def nss_only_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH with certutil and nothing else: no system store tool, no sudo,
    no browser, so trust steps touch temporary NSS databases only. Returns
    certutil's path; skips without certutil, except on CI (see .ci/run)."""
    certutil = shutil.which("certutil")
    if certutil is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no certutil (CI installs libnss3-tools: see .ci/run)")
        pytest.skip("no certutil: `apt-get install libnss3-tools` to run this")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "certutil").symlink_to(certutil)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir / "certutil"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests that use ``server_mode`` run on both drivers, except those marked
    ``wsgi_only`` (what they check is WSGI's: environ keys, start_response,
    the file wrapper; asgiref's adapter does those its own way)."""
    if "server_mode" in metafunc.fixturenames:
        wsgi_only = metafunc.definition.get_closest_marker("wsgi_only")
        modes = ["wsgi"] if wsgi_only else ["wsgi", "asgi"]
        metafunc.parametrize("server_mode", modes, indirect=True)


@pytest.fixture
def server_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test's ``serve_app`` on each driver: threaded WSGI, asyncio ASGI."""
    token = SERVER_MODE.set(request.param)
    yield request.param
    SERVER_MODE.reset(token)

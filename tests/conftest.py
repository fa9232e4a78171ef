"""Fixtures shared by the in-process server tests."""

from __future__ import annotations

import gc
from collections.abc import Iterator

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

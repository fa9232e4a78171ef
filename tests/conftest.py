"""Fixtures shared by the in-process server tests."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tests.live import LogRecorder, record_server_log


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

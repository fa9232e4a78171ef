"""The collector during a start: ``procstate.freeze`` and ``thaw`` (tier 1)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from runserver_plus.reloader import procstate


@pytest.fixture
def collector() -> Iterator[tuple[int, ...]]:
    """This process's collector as found, put back whatever the test does."""
    threshold = gc.get_threshold()
    yield threshold
    procstate.thaw()
    gc.set_threshold(*threshold)
    gc.unfreeze()


def test_a_start_freezes_what_is_loaded_and_serving_thaws_it(
    collector: tuple[int, ...],
) -> None:
    loaded = [[n] for n in range(1000)]  # tracked by the collector

    procstate.freeze()
    assert gc.get_freeze_count() >= len(loaded)
    assert gc.get_threshold() == (procstate.START_THRESHOLD, *collector[1:])

    procstate.thaw()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == collector


def test_a_second_freeze_keeps_the_thresholds_found_first(
    collector: tuple[int, ...],
) -> None:
    # The warm process freezes at its go, then the runner again.
    procstate.freeze()
    procstate.freeze()
    procstate.thaw()
    assert gc.get_threshold() == collector


def test_thresholds_the_project_set_during_the_start_are_kept(
    collector: tuple[int, ...],
) -> None:
    procstate.freeze()
    gc.set_threshold(5000, 20, 20)  # the project's own, say in settings
    procstate.thaw()
    assert gc.get_threshold() == (5000, 20, 20)
    assert gc.get_freeze_count() == 0


def test_thaw_without_freeze_changes_nothing(collector: tuple[int, ...]) -> None:
    gc.freeze()  # not ours: a project's, say
    frozen = gc.get_freeze_count()
    procstate.thaw()
    assert gc.get_freeze_count() == frozen
    assert gc.get_threshold() == collector

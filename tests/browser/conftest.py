"""Headless Chromium through Playwright, and the e2e fixtures for a project copy."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

# The e2e fixtures (a migrated project copy, start_server) and the hook that
# attaches the servers' output to a failed test's report.
from tests.e2e.conftest import (  # noqa: F401
    migrated_project,
    project_dir,
    pytest_runtest_makereport,
    start_server,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

#: Chromium flags for a headless run in CI and containers: no sandbox (root in
#: a container), and nothing that talks to the network on its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Upper bound for Playwright actions (goto, evaluate) a test does not bound itself.
ACTION_TIMEOUT = 10_000  # ms
LAUNCH_TIMEOUT = 30_000  # ms


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI installs it: see .ci/run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def launch_chromium() -> Iterator[Callable[[dict[str, str] | None], Browser]]:
    """Launch a headless Chromium (with the environment given, if any); skips
    when it cannot run here, except on CI (``CI=true``), whose .ci/run
    installs it: there it fails. Each browser launched is closed at the end."""
    executable = shutil.which("chromium")
    if executable is None:
        _unavailable("no Chromium: `apt-get install chromium` (Debian) to run this")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("no Playwright: `pip install playwright` to run this")
    launched: list[Browser] = []
    with sync_playwright() as playwright:

        def launch(env: dict[str, str] | None = None) -> Browser:
            chromium = playwright.chromium.launch(
                executable_path=executable,
                args=CHROMIUM_ARGS,
                headless=True,
                timeout=LAUNCH_TIMEOUT,
                env=None if env is None else {**env},
            )
            launched.append(chromium)
            return chromium

        try:
            yield launch
        finally:
            for chromium in launched:
                chromium.close()


@pytest.fixture(scope="session")
def browser(launch_chromium: Callable[[dict[str, str] | None], Browser]) -> Browser:
    """One headless Chromium for the session."""
    return launch_chromium(None)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile: no cache, no SharedWorker from another test."""
    context = browser.new_context()
    context.set_default_timeout(ACTION_TIMEOUT)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()

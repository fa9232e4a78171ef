"""End to end in headless Chromium: --https with and without a trusted authority."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.test_livereload_browser import (
    CHANGE_TIMEOUT,
    H1_EDITED,
    edit,
    open_live_page,
    reloaded,
)
from tests.e2e.harness import StartServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ACTION_TIMEOUT = 10_000  # ms
TITLE = "runserver_plus test page"


def nss_home(home: Path, ca_file: Path | None) -> None:
    """A home whose NSS database (Chromium's trust store on Linux) holds
    ``ca_file`` as a trusted authority, or nothing."""
    certutil = shutil.which("certutil")
    if certutil is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no certutil (CI installs libnss3-tools: see .ci/run)")
        pytest.skip("no certutil: `apt-get install libnss3-tools` to run this")
    database = home / ".pki" / "nssdb"
    database.mkdir(parents=True)
    run = [certutil, "-d", f"sql:{database}"]
    subprocess.run([*run, "-N", "--empty-password"], check=True, timeout=30)
    if ca_file is not None:
        add = [*run, "-A", "-t", "C,,", "-n", "runserver_plus test CA"]
        subprocess.run([*add, "-i", str(ca_file)], check=True, timeout=30)


@pytest.fixture
def browser_with_home(
    launch_chromium: Callable[[dict[str, str] | None], Browser], tmp_path: Path
) -> Iterator[Callable[[Path | None], BrowserContext]]:
    """A Chromium of its own whose $HOME (and so NSS database) is temporary."""
    contexts: list[BrowserContext] = []

    def start(ca_file: Path | None) -> BrowserContext:
        home = tmp_path / "home"
        nss_home(home, ca_file)
        chromium = launch_chromium({**os.environ, "HOME": str(home)})
        context = chromium.new_context()
        context.set_default_timeout(ACTION_TIMEOUT)
        contexts.append(context)
        return context

    yield start
    for context in contexts:
        context.close()


def test_a_trusted_authority_loads_the_page_and_live_reload_works_over_tls(
    start_server: StartServer,
    browser_with_home: Callable[[Path | None], BrowserContext],
    project_dir: Path,
    ca_dir: Path,
) -> None:
    server = start_server("127.0.0.1:0", "--https", "--livereload")
    page = browser_with_home(ca_dir / "ca.pem").new_page()
    seen = open_live_page(server, page)
    assert page.url.startswith("https://127.0.0.1:")
    assert page.title() == TITLE
    assert page.evaluate("window.isSecureContext") is True

    edit(project_dir / "testapp/templates/testapp/page.html", "<h1>", "<h1>Edited ")

    reloaded(page, H1_EDITED, CHANGE_TIMEOUT)
    assert seen == [server.url("/page/")]


def test_without_the_authority_chromium_shows_the_interstitial(
    start_server: StartServer,
    browser_with_home: Callable[[Path | None], BrowserContext],
) -> None:
    from playwright.sync_api import Error

    server = start_server("127.0.0.1:0", "--https", "--noreload")
    page = browser_with_home(None).new_page()
    with pytest.raises(Error, match="net::ERR_CERT_AUTHORITY_INVALID"):
        page.goto(server.url("/page/"))


def test_plain_http_is_redirected_to_https_in_the_browser(
    start_server: StartServer,
    browser_with_home: Callable[[Path | None], BrowserContext],
    ca_dir: Path,
) -> None:
    server = start_server("127.0.0.1:0", "--https", "--noreload")
    page = browser_with_home(ca_dir / "ca.pem").new_page()
    response = page.goto(server.url("/page/").replace("https://", "http://"))
    assert response is not None
    assert response.ok
    assert page.url == server.url("/page/")
    assert page.title() == TITLE

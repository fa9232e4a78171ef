"""End to end: the test project's front page lists its views, and each link works."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.e2e.harness import StartServer

pytestmark = pytest.mark.e2e

#: What a link on the front page answers, when it is not 200.
NOT_200 = {"/boom/": 500, "/admin/": 302}


class Links(HTMLParser):
    """The ``href`` of every link and the ``action`` of every form, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.actions: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.hrefs.append(str(values["href"]))
        elif tag == "form" and values.get("action"):
            self.actions.append(str(values["action"]))


def test_the_front_page_links_every_view_and_each_link_answers(
    start_server: StartServer, project_dir: Path
) -> None:
    server = start_server("127.0.0.1:0", "--noreload")

    front = server.get("/")

    assert front.status == 200
    assert front.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<h1>runserver_plus test project</h1>" in front.text
    links = Links()
    links.feed(front.text)
    paths = {href.split("?")[0] for href in links.hrefs + links.actions}
    # Every view of testapp's URLconf is there, so the list cannot fall behind.
    routes = re.findall(
        r'path\("([^"]+)"', (project_dir / "testapp" / "urls.py").read_text()
    )
    assert len(routes) >= 10
    # A route with a parameter is named on the page, not linked.
    named = {f"/{r}" for r in routes if "<" in r and r.split("<")[0] in front.text}
    missing = {f"/{route}" for route in routes if route} - paths - named
    assert not missing, f"not on the front page: {sorted(missing)}"
    assert "/admin/" in paths
    statics = [href for href in links.hrefs if href.startswith("/static/")]
    assert len(statics) >= 6
    for href in links.hrefs:
        response = server.get(href, timeout=15.0)
        expected = NOT_200.get(href, 200)
        assert response.status == expected, f"{href}: {response.status}"
    (action,) = links.actions
    upload = server.request("POST", action, body=b"hello")
    assert upload.json()["length"] == 5


def test_the_front_page_gets_live_reload(start_server: StartServer) -> None:
    server = start_server("127.0.0.1:0", "--livereload")

    front = server.get("/")

    assert '<script src="/__runserver_plus__/livereload.js" defer>' in front.text

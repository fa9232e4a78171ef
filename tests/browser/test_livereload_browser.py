"""End to end in headless Chromium: what --livereload does to open pages."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.harness import RunningServer, StartServer
from tests.helpers import wait_until

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

pytestmark = pytest.mark.e2e

TRIGGER = "/__runserver_plus__/reload"
EVENTS = "/__runserver_plus__/events"

#: From a save to what the page shows, when no process restarts.
CHANGE_TIMEOUT = 10_000  # ms
#: From a save (or a fix) to the page served by a new worker.
RESTART_TIMEOUT = 15_000  # ms
#: From a page load to its client holding the event stream.
LIVE_TIMEOUT = 10.0  # s
#: From a broken save to the error page being served.
BROKEN_TIMEOUT = 10.0  # s
#: An open event stream must end this soon after a .py save: well below the
#: drain bound (3 s), which a stream holding the drain up would reach.
STREAM_END_TIMEOUT = 2.0  # s

TITLE = "runserver_plus test page"
MARK = "window.__marker = 1"
#: True once the page's client took a stylesheet swap: its link carries the stamp.
SWAPPED = "() => document.querySelector('link[href*=\"livereload=\"]') !== null"
STYLESHEET_LINKS = "document.querySelectorAll('link[rel=stylesheet]').length"
CONTENT_COLOR = "getComputedStyle(document.getElementById('content')).color"
#: The page shows the template edit the tests make (null-safe while loading).
H1_EDITED = "document.querySelector('h1')?.textContent.startsWith('Edited ') === true"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new, 1))


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def wait_live(server: RunningServer, *pages: Page) -> str:
    """Wait until every page's client holds the event stream; the trigger's answer.

    The stream lives in a SharedWorker whose requests the page does not see,
    so the test asks for stylesheet swaps until each page has done one.
    """
    answers: list[str] = []

    def every_page_swapped() -> bool:
        answers.append(server.request("POST", TRIGGER + "?css").text)
        return all(page.evaluate(SWAPPED) for page in pages)

    wait_until(
        every_page_swapped,
        LIVE_TIMEOUT,
        "the live reload client never took a message",
        interval=0.1,
    )
    return answers[-1]


def navigations(page: Page) -> list[str]:
    """The URLs the page's main frame navigates to from now on."""
    seen: list[str] = []
    page.on(
        "framenavigated",
        lambda frame: seen.append(frame.url) if frame is page.main_frame else None,
    )
    return seen


def open_live_page(server: RunningServer, page: Page) -> list[str]:
    """Load /page/, wait for its stream, mark the page; its later navigations."""
    page.goto(server.url("/page/"))
    wait_live(server, page)
    page.evaluate(MARK)
    return navigations(page)


def reloaded(page: Page, condition: str, timeout: int) -> None:
    """Wait until the page was reloaded (the mark is gone) and shows ``condition``."""
    page.wait_for_function(
        f"() => window.__marker === undefined && ({condition})", timeout=timeout
    )


@pytest.fixture
def server(start_server: StartServer) -> RunningServer:
    return start_server("127.0.0.1:0", "--livereload")


# --- changes without a restart ------------------------------------------------------


@pytest.mark.browser
def test_a_template_edit_reloads_the_page(
    server: RunningServer, page: Page, project_dir: Path
) -> None:
    seen = open_live_page(server, page)

    edit(project_dir / "testapp/templates/testapp/page.html", "<h1>", "<h1>Edited ")

    reloaded(page, H1_EDITED, CHANGE_TIMEOUT)
    assert seen == [server.url("/page/")]


CSS_CASES = {
    # STATICFILES_DIRS, through a SharedWorker (Chromium, Firefox).
    "staticfiles-dirs": ("static/css/site.css", True),
    # An app's static/ directory (AppDirectoriesFinder).
    "app-directory": ("testapp/static/testapp/app.css", True),
    # Browsers without SharedWorker: the page holds the stream itself.
    "no-shared-worker": ("static/css/site.css", False),
}


@pytest.mark.browser
@pytest.mark.parametrize(("css", "shared_worker"), CSS_CASES.values(), ids=CSS_CASES)
def test_a_css_edit_restyles_the_page_without_a_reload(
    start_server: StartServer,
    context: BrowserContext,
    project_dir: Path,
    css: str,
    shared_worker: bool,
) -> None:
    # Two stylesheets, so that the swap has more than one link to replace.
    edit(
        project_dir / "templates/base.html",
        "</head>",
        '<link rel="stylesheet" href="{% static \'testapp/app.css\' %}">\n</head>',
    )
    if not shared_worker:
        context.add_init_script("delete window.SharedWorker;")
    server = start_server("127.0.0.1:0", "--livereload")
    page = context.new_page()
    page.goto(server.url("/page/"))
    assert page.evaluate(STYLESHEET_LINKS) == 2
    wait_live(server, page)
    page.evaluate(MARK)
    seen = navigations(page)
    assert page.evaluate(CONTENT_COLOR) != "rgb(1, 2, 3)"

    append(project_dir / css, "\n#content { color: rgb(1, 2, 3); }\n")

    page.wait_for_function(
        f"() => {CONTENT_COLOR} === 'rgb(1, 2, 3)'", timeout=CHANGE_TIMEOUT
    )
    assert page.evaluate("window.__marker") == 1
    assert seen == []
    # The old links go once the new ones have loaded: no pile-up.
    page.wait_for_function(f"() => {STYLESHEET_LINKS} === 2", timeout=CHANGE_TIMEOUT)


@pytest.mark.browser
def test_css_files_saved_together_leave_one_link_per_stylesheet(
    start_server: StartServer, page: Page, project_dir: Path
) -> None:
    # A build (or a branch switch) saves several stylesheets in one go: each
    # arrives as its own message while the previous swap is still loading.
    edit(
        project_dir / "templates/base.html",
        "</head>",
        '<link rel="stylesheet" href="{% static \'testapp/app.css\' %}">\n</head>',
    )
    server = start_server("127.0.0.1:0", "--livereload")
    page.goto(server.url("/page/"))
    assert page.evaluate(STYLESHEET_LINKS) == 2
    wait_live(server, page)
    page.wait_for_function(f"() => {STYLESHEET_LINKS} === 2", timeout=CHANGE_TIMEOUT)
    page.evaluate(MARK)

    append(project_dir / "static/css/site.css", "\n#content { color: rgb(1, 2, 3); }\n")
    append(
        project_dir / "testapp/static/testapp/app.css",
        "\n#content { background-color: rgb(4, 5, 6); }\n",
    )

    page.wait_for_function(
        f"() => {CONTENT_COLOR} === 'rgb(1, 2, 3)' && getComputedStyle("
        "document.getElementById('content')).backgroundColor === 'rgb(4, 5, 6)'",
        timeout=CHANGE_TIMEOUT,
    )
    assert page.evaluate("window.__marker") == 1
    page.wait_for_function(f"() => {STYLESHEET_LINKS} === 2", timeout=CHANGE_TIMEOUT)


@pytest.mark.browser
def test_a_javascript_edit_reloads_the_page(
    server: RunningServer, page: Page, project_dir: Path
) -> None:
    open_live_page(server, page)
    assert page.evaluate("document.getElementById('content').dataset.loaded") == "yes"

    edit(project_dir / "static/js/app.js", '= "yes"', '= "edited"')

    reloaded(
        page,
        "document.getElementById('content')?.dataset.loaded === 'edited'",
        CHANGE_TIMEOUT,
    )


@pytest.mark.browser
def test_every_tab_reloads_and_they_share_one_stream(
    server: RunningServer, context: BrowserContext, project_dir: Path
) -> None:
    tabs = [context.new_page() for _ in range(3)]
    for tab in tabs:
        tab.goto(server.url("/page/"))
    assert wait_live(server, *tabs) == "Reloading 1 stream(s).\n"
    for tab in tabs:
        tab.evaluate(MARK)

    edit(project_dir / "testapp/templates/testapp/page.html", "<h1>", "<h1>Edited ")

    for tab in tabs:
        reloaded(tab, H1_EDITED, CHANGE_TIMEOUT)


@pytest.mark.browser
def test_the_trigger_reloads_open_pages(server: RunningServer, page: Page) -> None:
    seen = open_live_page(server, page)

    response = server.request("POST", TRIGGER)

    assert response.status == 200
    reloaded(page, "document.querySelector('#content') !== null", CHANGE_TIMEOUT)
    assert seen == [server.url("/page/")]


CSP_MIDDLEWARE = '''"""Sets a strict Content-Security-Policy on every response."""


def csp(get_response):
    def middleware(request):
        response = get_response(request)
        response["Content-Security-Policy"] = "default-src 'self'"
        return response

    return middleware
'''

CSP_SETTINGS = """from testproject.settings import *  # noqa: F403

MIDDLEWARE = [*MIDDLEWARE, "testproject.csp.csp"]  # noqa: F405
"""

#: Collects CSP violations from the start of every document.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


@pytest.mark.browser
def test_it_works_under_a_csp_that_allows_only_self(
    start_server: StartServer, context: BrowserContext, project_dir: Path
) -> None:
    (project_dir / "testproject/csp.py").write_text(CSP_MIDDLEWARE)
    (project_dir / "testproject/csp_settings.py").write_text(CSP_SETTINGS)
    server = start_server(
        "127.0.0.1:0",
        "--livereload",
        env={"DJANGO_SETTINGS_MODULE": "testproject.csp_settings"},
    )
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    response = page.goto(server.url("/page/"))
    assert response is not None
    assert response.headers["content-security-policy"] == "default-src 'self'"
    wait_live(server, page)
    page.evaluate(MARK)

    append(project_dir / "static/css/site.css", "\n#content { color: rgb(1, 2, 3); }\n")
    page.wait_for_function(
        f"() => {CONTENT_COLOR} === 'rgb(1, 2, 3)'", timeout=CHANGE_TIMEOUT
    )
    assert page.evaluate("window.__marker") == 1
    edit(project_dir / "testapp/templates/testapp/page.html", "<h1>", "<h1>Edited ")
    reloaded(page, H1_EDITED, CHANGE_TIMEOUT)

    assert page.evaluate("window.__violations") == []


# --- restarts -------------------------------------------------------------------------


@pytest.mark.browser
def test_a_py_edit_reloads_the_page_from_the_new_worker(
    server: RunningServer, page: Page, project_dir: Path
) -> None:
    before = server.get("/pid/").json()
    seen = open_live_page(server, page)

    edit(project_dir / "testapp/views.py", f'"{TITLE}"', '"Edited by a .py save"')

    reloaded(page, "document.title === 'Edited by a .py save'", RESTART_TIMEOUT)
    after = server.get("/pid/").json()
    assert after["boot_id"] != before["boot_id"]
    assert after["pid"] != before["pid"]
    assert seen == [server.url("/page/")]


def wait_broken(server: RunningServer) -> None:
    """Wait until the supervisor serves its error page."""

    def error_page() -> bool:
        try:
            return server.get("/hello/").status == 500
        except http.client.RemoteDisconnected:
            # A connection the stopping worker took but dropped: not what
            # these tests are about (tests/e2e/test_reload.py is).
            return False

    wait_until(error_page, BROKEN_TIMEOUT, "the error page never came", interval=0.05)


@pytest.mark.browser
def test_the_error_page_reloads_itself_once_the_code_is_fixed(
    server: RunningServer, page: Page, project_dir: Path
) -> None:
    views = project_dir / "testapp/views.py"
    good = views.read_text()
    views.write_text(good + "\ndef broken(:\n")
    wait_broken(server)
    response = page.goto(server.url("/page/"))
    assert response is not None
    assert response.status == 500
    assert page.title() == "The project failed to start"
    assert "SyntaxError" in page.inner_text("pre")
    page.evaluate(MARK)

    views.write_text(good)

    reloaded(page, "document.querySelector('#content') !== null", RESTART_TIMEOUT)
    assert page.title() == TITLE


ERROR_TITLE = "The project failed to start"
#: A save that breaks the import of a module.
SYNTAX_ERROR = ("testapp/views.py", "\ndef broken(:\n")
#: A save that only fails a system check (models.py is imported by setup()).
FAILING_CHECK = (
    "testapp/models.py",
    "\nfrom django.core import checks\n\n\n"
    "@checks.register\n"
    "def fails(app_configs, **kwargs):\n"
    '    return [checks.Error("broken on purpose", id="testapp.E001")]\n',
)
#: From the error page being served to an open tab showing it (issue 14).
ERROR_SHOWN_TIMEOUT = 1.0  # s


@pytest.mark.browser
@pytest.mark.parametrize(
    ("module", "breakage"), [SYNTAX_ERROR, FAILING_CHECK], ids=["syntax", "check"]
)
def test_an_open_page_shows_the_error_when_the_code_breaks_and_comes_back(
    server: RunningServer, page: Page, project_dir: Path, module: str, breakage: str
) -> None:
    url = server.url("/page/?from=test")
    page.goto(url)
    wait_live(server, page)
    seen = navigations(page)
    history = page.evaluate("history.length")
    source = project_dir / module
    good = source.read_text()

    source.write_text(good + breakage)
    wait_broken(server)
    served = time.monotonic()
    page.wait_for_function(
        f"() => document.title === {ERROR_TITLE!r}", timeout=RESTART_TIMEOUT
    )
    shown = time.monotonic() - served

    assert shown < ERROR_SHOWN_TIMEOUT, f"the error page came {shown:.2f} s late"
    assert ("SyntaxError" if module.endswith("views.py") else "testapp.E001") in (
        page.inner_text("pre")
    )
    assert page.url == url
    source.write_text(good)
    page.wait_for_function(
        f"() => document.title === {TITLE!r}", timeout=RESTART_TIMEOUT
    )
    assert page.url == url
    assert seen == [url, url]  # shown in place, and back in place
    assert page.evaluate("history.length") == history


def test_an_open_event_stream_never_delays_a_restart(
    server: RunningServer, project_dir: Path
) -> None:
    old_worker = server.get("/pid/").json()["pid"]
    stream = server.connection(timeout=STREAM_END_TIMEOUT + 5)
    try:
        stream.request("GET", EVENTS, headers={"Accept": "text/event-stream"})
        response = stream.getresponse()
        assert response.status == 200
        assert b"event: hello" in response.read1(65536)

        edit(project_dir / "testapp/views.py", f'"{TITLE}"', '"Edited"')
        saved = time.monotonic()
        rest = b""
        while chunk := response.read1(65536):  # until the stream ends
            rest += chunk
        ended = time.monotonic() - saved
    finally:
        stream.close()

    assert ended < STREAM_END_TIMEOUT, f"the stream ended {ended:.2f} s after the save"
    assert b"event: change" not in rest  # a restart just ends the stream
    wait_until(
        lambda: old_worker not in server.group_members(),
        STREAM_END_TIMEOUT,
        f"the old worker {old_worker} is still running",
    )
    wait_until(
        lambda: server.get("/pid/").json()["pid"] != old_worker,
        RESTART_TIMEOUT / 1000,
        "no new worker served",
    )


def test_the_events_stream_of_a_new_worker_has_a_new_boot_id(
    server: RunningServer, project_dir: Path
) -> None:
    def boot_id() -> str | None:
        conn = server.connection()
        try:
            conn.request("GET", EVENTS)
            response = conn.getresponse()
            text = response.read1(65536).decode()
        finally:
            conn.close()
        if "data: " not in text:
            return None  # a worker that is stopping ends its streams at once
        data = text.split("data: ", 1)[1].split("\n", 1)[0]
        return str(json.loads(data)["boot"])

    first = boot_id()
    assert first is not None
    assert boot_id() == first
    edit(project_dir / "testapp/views.py", f'"{TITLE}"', '"Edited"')
    wait_until(
        lambda: boot_id() not in (None, first), 15.0, "the boot id never changed"
    )


def test_the_trigger_refuses_get(server: RunningServer) -> None:
    assert server.get(TRIGGER).status == 405
    assert server.request("POST", TRIGGER).status == 200

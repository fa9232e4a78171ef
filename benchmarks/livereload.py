"""From a saved file to what the browser shows: ours vs django-browser-reload.

Usage: ``.venv/bin/python benchmarks/livereload.py [--trials N] [--seed S]``.

Needs headless Chromium (Debian's ``chromium``), and the Python packages
``playwright`` and ``django-browser-reload`` in the running interpreter
(``pip install playwright django-browser-reload``; never ``playwright
install``: the system Chromium is used).

Two copies of testproject/ run side by side on 127.0.0.1: one under
``runserver --livereload`` (runserver_plus), one under Django's own
``runserver`` with django-browser-reload configured by a settings module
written into that copy. One Chromium drives a page on each. For every trial
the script saves a file in a copy and measures, in the same run and
interleaved (ours, theirs, theirs, ours, ...):

- CSS: from saving ``static/css/site.css`` to ``#content`` having the new
  computed colour (runserver_plus swaps the stylesheet in place;
  django-browser-reload reloads the page);
- template: from saving ``testapp/page.html`` to the reloaded page showing
  the new markup.

Prints medians, p90s and the ratio ours / theirs with PASS/FAIL against the
target (at most 0.5), writes benchmarks/results/livereload.json, and exits 0
when both targets pass, 1 when one fails, 2 when the benchmark cannot run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .servers import (
    ServerError,
    copy_testproject,
    free_port,
    migrate,
    server_env,
    spawn_group,
    stop_group,
)

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "livereload.json"

TARGET_RATIO = 0.5  # ours / theirs, at most
DEFAULT_TRIALS = 12  # edits per kind and server
START_TIMEOUT = 60.0  # s, from spawn to /page/ answering 200
STOP_TIMEOUT = 10.0  # s, from SIGTERM to exit, before SIGKILL
TRIAL_TIMEOUT = 10_000  # ms, from a save to the browser showing it
WARMUP_WAIT = 3_000  # ms, per unmeasured edit before the trials
WARMUP_ATTEMPTS = 10
REQUEST_TIMEOUT = 10.0  # s, per HTTP request of the script
POLL_INTERVAL = 0.1  # s, between two readiness requests
#: Pause between trials, drawn at random so that edits do not fall in step
#: with Django's one-second file polling; the clients reconnect meanwhile.
SETTLE = (1.0, 2.0)  # s

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

OURS = "runserver_plus"
THEIRS = "django_browser_reload"
TITLES = {
    OURS: "runserver_plus --livereload",
    THEIRS: "django-browser-reload",
}
KINDS = {
    "css": "CSS edit -> new computed style",
    "template": "template edit -> reloaded page",
}

CSS_FILE = "static/css/site.css"
TEMPLATE_FILE = "testapp/templates/testapp/page.html"
CONTENT_COLOR = "getComputedStyle(document.getElementById('content')).color"

#: Written into django-browser-reload's copy: its README's three steps.
THEIR_SETTINGS = """\"\"\"testproject with django-browser-reload (benchmarks).\"\"\"

from testproject.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "django_browser_reload"]  # noqa: F405
MIDDLEWARE = [  # noqa: F405
    *MIDDLEWARE,  # noqa: F405
    "django_browser_reload.middleware.BrowserReloadMiddleware",
]
ROOT_URLCONF = "testproject.browser_reload_urls"
"""
THEIR_URLS = """\"\"\"testproject's URLs plus django-browser-reload's.\"\"\"

from django.urls import include, path

from testproject.urls import urlpatterns as project_urlpatterns

urlpatterns = [
    *project_urlpatterns,
    path("__reload__/", include("django_browser_reload.urls")),
]
"""


class BenchmarkError(RuntimeError):
    """The benchmark cannot run here (a dependency is missing)."""


@dataclass
class Server:
    """``manage.py runserver`` with a reloader, in its own session, logging to files."""

    name: str
    project: Path
    args: list[str]
    env: dict[str, str]
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        logs = self.project.parent / f"log-{self.name}"
        logs.mkdir(exist_ok=True)
        command = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{self.port}"]
        with (
            open(logs / "stdout", "wb") as stdout,
            open(logs / "stderr", "wb") as stderr,
        ):
            self.proc = spawn_group(
                [*command, *self.args],
                cwd=self.project,
                env=self.env,
                stdout=stdout,
                stderr=stderr,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(OSError):
                if self.get("/page/").status == 200:
                    return
            try:
                # The pause between attempts doubles as the liveness check.
                self.proc.wait(timeout=POLL_INTERVAL)
            except subprocess.TimeoutExpired:
                continue
        self.stop()
        raise ServerError(f"{self.name} did not serve /page/ in time.\n{self.output()}")

    def get(self, path: str) -> Any:
        return urllib.request.urlopen(self.url + path, timeout=REQUEST_TIMEOUT)

    def page_html(self) -> str:
        with self.get("/page/") as response:
            return str(response.read().decode())

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.exit_code = self.proc.returncode
            raise ServerError(
                f"{self.name} exited with code {self.exit_code}.\n{self.output()}"
            )

    def stop(self) -> int | None:
        """Stop the server's process group: supervisor or reloader, and its
        children (``stop_group``)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            self.exit_code = stop_group(proc, STOP_TIMEOUT)
        return self.exit_code

    def output(self, limit: int = 4000) -> str:
        parts = []
        for stream in ("stdout", "stderr"):
            path = self.project.parent / f"log-{self.name}" / stream
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {self.name} {stream} ---\n{text[-limit:]}")
        return "\n".join(parts)


@dataclass
class Samples:
    """One server's latencies for one kind of edit."""

    latencies_ms: list[float] = field(default_factory=list)
    timeouts: int = 0
    #: CSS trials after which the page had been reloaded (the mark was gone).
    reloads: int = 0

    def summary(self) -> dict[str, Any]:
        data = sorted(self.latencies_ms)
        return {
            "samples_ms": [round(x, 1) for x in self.latencies_ms],
            "median_ms": statistics.median(data) if data else None,
            "p90_ms": p90(data) if data else None,
            "min_ms": data[0] if data else None,
            "max_ms": data[-1] if data else None,
            "timeouts": self.timeouts,
            "page_reloads": self.reloads,
        }


def p90(data: list[float]) -> float:
    if len(data) < 2:
        return data[0]
    return statistics.quantiles(data, n=10, method="inclusive")[8]


@dataclass
class Target:
    """One server with its project copy and the Chromium page showing it."""

    server: Server
    page: Any
    css_original: str
    template_original: str

    @property
    def project(self) -> Path:
        return self.server.project


def check_dependencies() -> str:
    """The Chromium executable; raise BenchmarkError naming what is missing."""
    missing = []
    chromium = shutil.which("chromium")
    if chromium is None:
        missing.append("Chromium (Debian: apt-get install chromium)")
    for module, package in (
        ("playwright", "playwright"),
        ("django_browser_reload", "django-browser-reload"),
    ):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{package} (pip install {package})")
    if missing:
        raise BenchmarkError("missing: " + "; ".join(missing))
    assert chromium is not None
    return chromium


def fresh_mtimes(directory: Path) -> None:
    """Date every file now, as if just edited.

    Django's static view sends Last-Modified without Cache-Control, so a
    browser may reuse a stylesheet for 10 % of its age without asking
    (heuristic freshness, RFC 9111 4.2.2): with the checkout's old dates,
    django-browser-reload's page reload would show the old CSS for minutes.
    Fresh dates give it the case of a file being worked on.
    """
    now = time.time()
    for path in directory.rglob("*"):
        if path.is_file():
            os.utime(path, (now, now))


def prepare(workdir: Path) -> tuple[Server, Server]:
    ours_dir = copy_testproject(workdir / "ours")
    theirs_dir = copy_testproject(workdir / "theirs")
    (theirs_dir / "testproject/browser_reload_settings.py").write_text(THEIR_SETTINGS)
    (theirs_dir / "testproject/browser_reload_urls.py").write_text(THEIR_URLS)
    for project in (ours_dir, theirs_dir):
        migrate(project)
        fresh_mtimes(project / "static")
    theirs_env = server_env(django_runserver=True)
    theirs_env["DJANGO_SETTINGS_MODULE"] = "testproject.browser_reload_settings"
    ours = Server(OURS, ours_dir, ["--livereload"], server_env(django_runserver=False))
    theirs = Server(THEIRS, theirs_dir, [], theirs_env)
    return ours, theirs


def save(path: Path, text: str) -> float:
    """Write ``text`` and return the time right before the write."""
    started = time.perf_counter()
    path.write_text(text)
    return started


def css_trial(target: Target, token: int, timeout: int = TRIAL_TIMEOUT) -> float | None:
    """Save a colour; ms until #content has it, or None on timeout."""
    colour = f"rgb({token % 250}, {token // 250 % 250}, 7)"
    page = target.page
    page.evaluate("window.__marker = 1")
    started = save(
        target.project / CSS_FILE,
        target.css_original + f"\n#content {{ color: {colour}; }}\n",
    )
    try:
        page.wait_for_function(f"() => {CONTENT_COLOR} === '{colour}'", timeout=timeout)
    except Exception:  # playwright's TimeoutError
        return None
    return (time.perf_counter() - started) * 1000


def template_trial(
    target: Target, token: int, timeout: int = TRIAL_TIMEOUT
) -> float | None:
    """Save new markup; ms until the reloaded page shows it, or None on timeout."""
    marker = f"trial-{token}"
    started = save(
        target.project / TEMPLATE_FILE,
        target.template_original.replace("<h1>", f'<h1 data-trial="{marker}">', 1),
    )
    try:
        target.page.wait_for_function(
            "() => { const h = document.querySelector('h1');"
            f" return h !== null && h.dataset.trial === '{marker}'; }}",
            timeout=timeout,
        )
    except Exception:  # playwright's TimeoutError
        return None
    return (time.perf_counter() - started) * 1000


def warm_up(target: Target) -> None:
    """Unmeasured edits of each kind until one shows: the client holds its
    stream and the watcher has its first snapshot (Django's StatReloader
    misses a change made before its first tick)."""
    for attempt in range(WARMUP_ATTEMPTS):
        token = 100_000 + attempt
        if css_trial(target, token, WARMUP_WAIT) is not None:
            break
    else:
        raise ServerError(f"{target.server.name}: no CSS edit ever showed")
    for attempt in range(WARMUP_ATTEMPTS):
        token = 100_000 + attempt
        if template_trial(target, token, WARMUP_WAIT) is not None:
            break
    else:
        raise ServerError(f"{target.server.name}: no template edit ever showed")


def run(trials: int, seed: int, chromium: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    rng = random.Random(seed)
    samples = {kind: {OURS: Samples(), THEIRS: Samples()} for kind in KINDS}
    with tempfile.TemporaryDirectory(prefix="rsp-livereload-") as tmp:
        ours, theirs = prepare(Path(tmp))
        servers = [ours, theirs]
        try:
            for server in servers:
                server.start()
            injected = {
                OURS: "/__runserver_plus__/livereload.js" in ours.page_html(),
                THEIRS: "django-browser-reload" in theirs.page_html(),
            }
            if not all(injected.values()):
                raise ServerError(f"a client script is missing: {injected}")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=chromium, args=CHROMIUM_ARGS, headless=True
                )
                try:
                    targets = {}
                    for server in servers:
                        context = browser.new_context()
                        page = context.new_page()
                        page.goto(server.url + "/page/")
                        targets[server.name] = Target(
                            server,
                            page,
                            (server.project / CSS_FILE).read_text(),
                            (server.project / TEMPLATE_FILE).read_text(),
                        )
                    for target in targets.values():
                        warm_up(target)
                    browser_version = browser.version
                    token = 0
                    for round_ in range(trials):
                        order = [OURS, THEIRS] if round_ % 2 == 0 else [THEIRS, OURS]
                        for kind in KINDS:
                            for name in order:
                                token += 1
                                target = targets[name]
                                trial = css_trial if kind == "css" else template_trial
                                latency = trial(target, token)
                                sample = samples[kind][name]
                                if latency is None:
                                    sample.timeouts += 1
                                else:
                                    sample.latencies_ms.append(latency)
                                if (
                                    kind == "css"
                                    and target.page.evaluate("window.__marker") != 1
                                ):
                                    sample.reloads += 1
                                target.server.check_alive()
                                # A bounded pause, not synchronisation: see SETTLE.
                                time.sleep(rng.uniform(*SETTLE))
                finally:
                    browser.close()
        finally:
            exit_codes = {server.name: server.stop() for server in servers}
    return build_results(samples, trials, seed, browser_version, exit_codes)


def build_results(
    samples: dict[str, dict[str, Samples]],
    trials: int,
    seed: int,
    browser_version: str,
    exit_codes: dict[str, int | None],
) -> dict[str, Any]:
    import django

    results: dict[str, Any] = {
        "environment": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "python": platform.python_version(),
            "django": django.get_version(),
            "django_browser_reload": metadata.version("django-browser-reload"),
            "playwright": metadata.version("playwright"),
            "chromium": browser_version,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "settings": {
            "trials": trials,
            "seed": seed,
            "settle_s": list(SETTLE),
            "trial_timeout_ms": TRIAL_TIMEOUT,
            "target_ratio": TARGET_RATIO,
            OURS: "manage.py runserver --livereload",
            THEIRS: "Django's manage.py runserver (StatReloader) with "
            "django-browser-reload",
        },
        "exit_codes": exit_codes,
        "kinds": {},
    }
    for kind, title in KINDS.items():
        ours = samples[kind][OURS].summary()
        theirs = samples[kind][THEIRS].summary()
        ratio = (
            ours["median_ms"] / theirs["median_ms"]
            if ours["median_ms"] and theirs["median_ms"]
            else None
        )
        passed = (
            ratio is not None
            and ratio <= TARGET_RATIO
            and ours["timeouts"] == 0
            and (kind != "css" or ours["page_reloads"] == 0)
        )
        results["kinds"][kind] = {
            "title": title,
            OURS: ours,
            THEIRS: theirs,
            "ratio": ratio,
            "pass": passed,
        }
    return results


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def print_table(results: dict[str, Any]) -> None:
    env = results["environment"]
    trials = results["settings"]["trials"]
    print(
        f"\nLive reload: from a save to the browser showing it ({trials} edits of "
        "each kind per server, interleaved)\n"
        f"Python {env['python']}, Django {env['django']}, django-browser-reload "
        f"{env['django_browser_reload']}, Chromium {env['chromium']}, "
        f"{env['cpus']} CPUs\n"
    )
    print(f"{'':32}{'runserver_plus':^22}  {'django-browser-reload':^22}")
    print(
        f"{'':32}{'median':>11}{'p90':>11}  {'median':>11}{'p90':>11}"
        f"  {'ratio':>7}  target"
    )
    for data in results["kinds"].values():
        ours, theirs = data[OURS], data[THEIRS]
        ratio = "-" if data["ratio"] is None else f"{data['ratio']:.2f}x"
        verdict = "PASS" if data["pass"] else "FAIL"
        print(
            f"{data['title']:32}{ms(ours['median_ms']):>11}{ms(ours['p90_ms']):>11}"
            f"  {ms(theirs['median_ms']):>11}{ms(theirs['p90_ms']):>11}"
            f"  {ratio:>7}  <= {TARGET_RATIO}x {verdict}"
        )
    print()
    for kind, data in results["kinds"].items():
        for name in (OURS, THEIRS):
            extra = data[name]
            notes = [f"timeouts {extra['timeouts']}"]
            if kind == "css":
                notes.append(f"page reloads {extra['page_reloads']}")
            print(f"  {kind:9}{TITLES[name]:29}" + ", ".join(notes))
    print(f"\nServer exit codes: {results['exit_codes']}")
    print(f"Results: {RESULTS.relative_to(BENCH_DIR.parent)}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--trials",
        type=int,
        default=DEFAULT_TRIALS,
        help=f"edits of each kind per server (default {DEFAULT_TRIALS}, minimum 10)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the pauses")
    args = parser.parse_args(argv)
    if args.trials < 10:
        parser.error("--trials must be at least 10")
    try:
        chromium = check_dependencies()
        results = run(args.trials, args.seed, chromium)
    except BenchmarkError as error:
        print(f"Cannot run the live reload benchmark: {error}", file=sys.stderr)
        return 2
    except ServerError as error:
        print(f"A server failed: {error}", file=sys.stderr)
        return 1
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    return 0 if all(data["pass"] for data in results["kinds"].values()) else 1

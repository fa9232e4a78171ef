"""Compare runserver_plus's reloader with Django's runserver's, interleaved, in one run.

Usage: ``.venv/bin/python benchmarks/reload.py [--edits N] [--syntax-trials N]
[--starts N] [--idle-seconds S] [--testproject-only | --large-only]``.

runserver_plus (warm restarts on), Django's runserver and Django with
django-watchfiles run in their default reloading mode on copies of
testproject, then of a large project generated from installed packages
(reload_large.py). Measured on each: .py save -> new code served (and failed
requests meanwhile), template save -> new text served, syntax error fixed ->
200 again, cold start, and, while idle, CPU, inotify watches and the memory
(PSS) of each server's processes; on testproject the idle window has a large
generated tree. Prints a table per project with ratios (ours / Django) and
PASS/FAIL lines, writes benchmarks/results/reload.json, and exits 1 when a
target fails, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from .reload_large import LARGE_APPS, LARGE_MODELS, add_large_project
from .reload_large import SETTINGS as LARGE_SETTINGS
from .reload_large import WATCHFILES_SETTINGS as LARGE_WATCHFILES_SETTINGS
from .reload_procs import ReloadingServer, probe
from .reload_project import add_large_tree, clone, prepare_project
from .reload_report import json_safe, print_report, print_targets, summarise
from .reload_trials import (
    DJANGO,
    NO_PRELOAD,
    OURS,
    SETTLE,
    WARM_READY_TIMEOUT,
    WATCHFILES,
    cold_starts,
    idle_and_watches,
    interleave,
    py_edit_trial,
    reloader_line,
    settle,
    syntax_trial,
    template_trial,
)
from .servers import ServerError, server_env

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "reload.json"
EXPECTED_RELOADER = {
    OURS: "RunserverPlusReloader",
    DJANGO: "StatReloader",
    WATCHFILES: "WatchfilesReloader",
}


def note_load(raw: dict[str, Any], phase: str) -> None:
    """Record the load average: other processes on the machine skew timings."""
    load = os.getloadavg()
    raw.setdefault("load_average", []).append({"phase": phase, "1min": load[0]})
    cpus = os.cpu_count() or 1
    if load[0] > 0.5 * cpus:
        print(
            f"  (load average {load[0]:.2f} on {cpus} CPUs before {phase}: "
            "something else is running; timings will be noisy)",
            flush=True,
        )


def make_server(
    role: str, project: Path, settings: tuple[str, str], name: str = ""
) -> ReloadingServer:
    """A server of ``role`` on ``project``, with the project's settings module
    (``settings[1]`` adds django-watchfiles). runserver_plus runs with ``-v 3``:
    the supervisor then says how each worker started and when a warm process is
    ready, and prints nothing more."""
    if role in (OURS, NO_PRELOAD):
        env = server_env(django_runserver=False)
        env["DJANGO_SETTINGS_MODULE"] = settings[0]
        extra = ("-v", "3") if role == OURS else ("--no-preload", "-v", "3")
        return ReloadingServer(
            name or role, project, env, extra, kind=OURS, preload=role == OURS
        )
    env = server_env(django_runserver=True)
    env["DJANGO_SETTINGS_MODULE"] = settings[1] if role == WATCHFILES else settings[0]
    return ReloadingServer(name or role, project, env, kind=role)


def check_reloader(server: ReloadingServer, line: str) -> None:
    expected = EXPECTED_RELOADER[server.kind]
    if line != expected:
        raise ServerError(
            f"{server.name} ran with {line!r}, not {expected}:\n{server.output()}"
        )


def measure_project(
    args: argparse.Namespace,
    rng: random.Random,
    copies: dict[str, Path],
    *,
    idle_copy: Path,
    idle_what: str,
    settings: tuple[str, str],
) -> dict[str, Any]:
    """Every phase on one project: ``copies`` has a copy per server for the
    saves (with NO_PRELOAD, a reference row of the .py saves), ``idle_copy``
    is the one all servers run on for the idle window."""
    raw: dict[str, Any] = {}
    servers = {role: make_server(role, path, settings) for role, path in copies.items()}
    try:
        for name, server in servers.items():
            print(f"Starting {name} (reloader on) ...", flush=True)
            server.start()
            for path in ("/hello/", "/page/", "/bench-version/", "/pid/"):
                if not probe(server.port, path).ok:
                    server.fail(f"{path} did not answer 200 after start")
        settle(rng)
        with_projects = {name: (s, s.project) for name, s in servers.items()}
        without_reference = {
            name: item for name, item in with_projects.items() if name != NO_PRELOAD
        }
        phases = (
            ("1. .py saves", "py_edit", args.edits, py_edit_trial, ".py save", "e",
             with_projects),
            ("2. template saves", "template_edit", args.edits, template_trial,
             "template", "t", without_reference),
            ("3. syntax error, then fix", "syntax_fix", args.syntax_trials,
             syntax_trial, "syntax fix", "s", without_reference),
        )  # fmt: skip
        for heading, key, count, trial, title, prefix, chosen in phases:
            print(heading, flush=True)
            note_load(raw, key)
            raw[key] = interleave(
                chosen, count, trial, title=title, prefix=prefix, rng=rng
            )
            if NO_PRELOAD in servers and key == "py_edit":
                servers[NO_PRELOAD].stop()  # only the .py saves have it
        raw["reloader_lines"] = {
            n: reloader_line(s.log_text()) for n, s in servers.items()
        }
    finally:
        raw["exit_codes"] = {name: server.stop() for name, server in servers.items()}
    for name, server in servers.items():
        check_reloader(server, raw["reloader_lines"][name])

    print("4. cold starts", flush=True)
    note_load(raw, "cold_start")
    raw["cold_start"] = cold_starts(
        {n: s for n, s in servers.items() if n != NO_PRELOAD}, args.starts
    )

    print(
        f"5. idle CPU over {args.idle_seconds:.0f} s, inotify watches and memory, "
        f"{idle_what}",
        flush=True,
    )
    idle = {
        role: make_server(role, idle_copy, settings, name=f"{role}-idle")
        for role in servers
        if role != NO_PRELOAD
    }
    note_load(raw, "idle")
    try:
        raw["idle"] = idle_and_watches(idle, args.idle_seconds, idle_what)
    finally:
        for server in idle.values():
            server.stop()
    for name, item in raw["idle"].items():
        check_reloader(idle[name], item["reloader_line"])
    return raw


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    print(f"Preparing testproject copies in {workdir} ...", flush=True)
    prepared = prepare_project(workdir)
    roles = [OURS, DJANGO]
    if importlib.util.find_spec("django_watchfiles") is not None:
        roles.append(WATCHFILES)
    else:
        print(
            "  django-watchfiles is not installed (pip install django-watchfiles): "
            "its comparison is skipped",
            flush=True,
        )
    raw: dict[str, Any] = {}
    if not args.large_only:
        copies = {role: clone(prepared, workdir / role) for role in roles}
        tree_copy = clone(prepared, workdir / "tree")
        tree = add_large_tree(tree_copy)
        print(f"  large tree: {tree}", flush=True)
        print("=== testproject", flush=True)
        raw["testproject"] = measure_project(
            args,
            rng,
            copies,
            idle_copy=tree_copy,
            idle_what="testproject with the large tree",
            settings=("testproject.settings", "bench_watchfiles_settings"),
        )
        raw["testproject"]["large_tree"] = tree
    if not args.testproject_only:
        needed = [
            "rest_framework",
            "django_filters",
            *(["wagtail"] if args.cms else []),
        ]
        if any(importlib.util.find_spec(name) is None for name in needed):
            raise ServerError(
                "the large project needs djangorestframework, django-filter and "
                "(unless --no-cms) wagtail: pip install -e '.[benchmark]'; or run "
                "with --testproject-only"
            )
        large = clone(prepared, workdir / "large-prepared")
        about = add_large_project(
            large, args.large_apps, args.large_models, cms=args.cms
        )
        print(f"=== large project: {about}", flush=True)
        copies = {
            role: clone(large, workdir / f"large-{role}")
            for role in [*roles, NO_PRELOAD]
        }
        raw["large"] = measure_project(
            args,
            rng,
            copies,
            idle_copy=copies[OURS],
            idle_what="the large project",
            settings=(LARGE_SETTINGS, LARGE_WATCHFILES_SETTINGS),
        )
        raw["large"]["project"] = about
    return raw


def describe_large(project: dict[str, int], summary: dict[str, Any]) -> str:
    cold = summary["cold_start"]
    modules = summary["idle"][OURS]["modules_in_worker"]
    return (
        f"{project['apps']} generated apps, {project['models']} models"
        f"{', a Wagtail site' if project.get('cms') else ''}; "
        f"{modules} modules in runserver_plus's worker; cold start "
        f"{cold[OURS]['median_s']:.2f} s (runserver_plus), "
        f"{cold[DJANGO]['median_s']:.2f} s (Django)"
    )


def environment() -> dict[str, Any]:
    import django
    import watchfiles

    versions = {
        "python": platform.python_version(),
        "django": django.get_version(),
        "watchfiles": watchfiles.__version__,
    }
    from importlib.metadata import PackageNotFoundError, version

    for package in ("django-watchfiles", "djangorestframework", "django-filter"):
        # Not installed: its comparison or project is skipped.
        with contextlib.suppress(PackageNotFoundError):
            versions[package.replace("-", "_")] = version(package)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        **versions,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--edits",
        type=int,
        default=10,
        help=".py and template edits per server (default 10)",
    )
    parser.add_argument(
        "--syntax-trials",
        type=int,
        default=5,
        help="syntax error + fix cycles per server (default 5)",
    )
    parser.add_argument(
        "--starts",
        type=int,
        default=7,
        help="measured cold starts per server (default 7)",
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=20.0, help="idle CPU window (default 20)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the settle pauses")
    parser.add_argument(
        "--large-apps",
        type=int,
        default=LARGE_APPS,
        help=f"generated apps of the large project (default {LARGE_APPS})",
    )
    parser.add_argument(
        "--large-models",
        type=int,
        default=LARGE_MODELS,
        help=f"models per generated app (default {LARGE_MODELS})",
    )
    parser.add_argument(
        "--no-cms",
        dest="cms",
        action="store_false",
        help="the large project without Wagtail: mostly the generated code",
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--testproject-only", action="store_true", help="skip the large project"
    )
    only.add_argument(
        "--large-only", action="store_true", help="only the large project"
    )
    args = parser.parse_args(argv)
    if (
        min(args.edits, args.syntax_trials, args.starts, args.large_apps) < 1
        or args.large_models < 1
        or args.idle_seconds < 1
    ):
        parser.error("counts must be at least 1 and --idle-seconds at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("reload.py reads /proc: it runs on Linux only", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="rsp-reload-") as tmp:
        try:
            raw = measure(args, Path(tmp))
        except ServerError as error:
            print(f"Benchmark aborted: {error}", file=sys.stderr)
            return 2
    summaries = {project: summarise(raw[project], project) for project in raw}
    for project, summary in summaries.items():
        about = (
            "copies of testproject; idle with the large tree "
            f"{raw[project]['large_tree']}"
            if project == "testproject"
            else describe_large(raw[project]["project"], summary)
        )
        print_report(summary, raw[project], project, about)
    targets = [item for summary in summaries.values() for item in summary["targets"]]
    print_targets(targets)
    RESULTS.parent.mkdir(exist_ok=True)
    document = {
        "environment": environment(),
        "settings": {
            "edits": args.edits,
            "syntax_trials": args.syntax_trials,
            "starts": args.starts,
            "idle_seconds": args.idle_seconds,
            "seed": args.seed,
            "large_apps": args.large_apps,
            "large_models": args.large_models,
            "large_cms": args.cms,
            "poll_interval_s": 0.01,
            "settle_s": SETTLE,
            "warm_ready_timeout_s": WARM_READY_TIMEOUT,
        },
        **summaries,
        "targets": targets,
        "raw": raw,
    }
    RESULTS.write_text(json.dumps(json_safe(document), indent=2) + "\n")
    print(f"\nWrote {RESULTS.relative_to(BENCH_DIR.parent)}")
    return 0 if all(item["passed"] for item in targets) else 1

"""Compare runserver_plus's reloader with Django's runserver's, interleaved, in one run.

Usage: ``.venv/bin/python benchmarks/reload.py [--edits N] [--syntax-trials N]
[--starts N] [--idle-seconds S]``.

Both servers run in their default reloading mode on copies of testproject.
Measured: .py edit -> new code served (and failed requests meanwhile),
template edit -> new text served, syntax error fixed -> 200 again, idle CPU
and inotify watches with a large generated tree (also against
django-watchfiles), and cold start. Prints a table with ratios (ours /
Django) and PASS/FAIL lines, writes benchmarks/results/reload.json, and exits
1 when a target fails, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
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

from reload_procs import ReloadingServer, probe
from reload_project import add_large_tree, clone, prepare_project
from reload_report import json_safe, print_report, summarise
from reload_trials import (
    DJANGO,
    OURS,
    SETTLE,
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
from servers import ServerError, server_env

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "reload.json"


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


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    print(f"Preparing testproject copies in {workdir} ...", flush=True)
    prepared = prepare_project(workdir)
    ours_project = clone(prepared, workdir / OURS)
    django_project = clone(prepared, workdir / DJANGO)
    large_project = clone(prepared, workdir / "large")
    tree = add_large_tree(large_project)
    print(f"  large tree: {tree}", flush=True)

    raw: dict[str, Any] = {"large_tree": tree}
    servers = {
        OURS: ReloadingServer(OURS, ours_project, server_env(django_runserver=False)),
        DJANGO: ReloadingServer(
            DJANGO, django_project, server_env(django_runserver=True)
        ),
    }
    try:
        for name, server in servers.items():
            print(f"Starting {name} (reloader on) ...", flush=True)
            server.start()
            for path in ("/hello/", "/page/", "/bench-version/", "/pid/"):
                if not probe(server.port, path).ok:
                    server.fail(f"{path} did not answer 200 after start")
        settle(rng)
        with_projects = {name: (s, s.project) for name, s in servers.items()}
        phases = (
            ("1. .py edits", "py_edit", args.edits, py_edit_trial, ".py edit", "e"),
            ("2. template edits", "template_edit", args.edits, template_trial,
             "template", "t"),
            ("3. syntax error, then fix", "syntax_fix", args.syntax_trials,
             syntax_trial, "syntax fix", "s"),
        )  # fmt: skip
        for heading, key, count, trial, title, prefix in phases:
            print(heading, flush=True)
            note_load(raw, key)
            raw[key] = interleave(
                with_projects, count, trial, title=title, prefix=prefix, rng=rng
            )
        raw["reloader_lines"] = {
            n: reloader_line(s.log_text()) for n, s in servers.items()
        }
    finally:
        raw["exit_codes"] = {name: server.stop() for name, server in servers.items()}

    print("6. cold starts", flush=True)
    note_load(raw, "cold_start")
    raw["cold_start"] = cold_starts(servers, args.starts)

    print(
        f"4./5. idle CPU over {args.idle_seconds:.0f} s, inotify watches, large tree",
        flush=True,
    )
    large = {
        OURS: ReloadingServer(
            f"{OURS}-large", large_project, server_env(django_runserver=False)
        ),
        DJANGO: ReloadingServer(
            f"{DJANGO}-large", large_project, server_env(django_runserver=True)
        ),
    }
    if importlib.util.find_spec("django_watchfiles") is not None:
        env = server_env(django_runserver=True)
        env["DJANGO_SETTINGS_MODULE"] = "bench_watchfiles_settings"
        large[WATCHFILES] = ReloadingServer(WATCHFILES, large_project, env)
    else:
        print(
            "  django-watchfiles is not installed (pip install django-watchfiles): "
            "its comparison is skipped",
            flush=True,
        )
    note_load(raw, "idle")
    try:
        raw["idle"] = idle_and_watches(large, args.idle_seconds)
    finally:
        for server in large.values():
            server.stop()
    expected = {
        OURS: "RunserverPlusReloader",
        DJANGO: "StatReloader",
        WATCHFILES: "WatchfilesReloader",
    }
    for name, item in raw["idle"].items():
        if item["reloader_line"] != expected[name]:
            raise ServerError(
                f"{name} ran with {item['reloader_line']!r}, "
                f"not {expected[name]}:\n{large[name].output()}"
            )
    return raw


def environment() -> dict[str, Any]:
    import django
    import watchfiles

    versions = {
        "python": platform.python_version(),
        "django": django.get_version(),
        "watchfiles": watchfiles.__version__,
    }
    if importlib.util.find_spec("django_watchfiles") is not None:
        from importlib.metadata import version

        versions["django_watchfiles"] = version("django-watchfiles")
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
    args = parser.parse_args(argv)
    if min(args.edits, args.syntax_trials, args.starts) < 1 or args.idle_seconds < 1:
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
    summary = summarise(raw)
    print_report(summary, raw)
    RESULTS.parent.mkdir(exist_ok=True)
    document = {
        "environment": environment(),
        "settings": {
            "edits": args.edits,
            "syntax_trials": args.syntax_trials,
            "starts": args.starts,
            "idle_seconds": args.idle_seconds,
            "seed": args.seed,
            "poll_interval_s": 0.01,
            "settle_s": SETTLE,
        },
        **summary,
        "raw": raw,
    }
    RESULTS.write_text(json.dumps(json_safe(document), indent=2) + "\n")
    print(f"\nWrote {RESULTS.relative_to(BENCH_DIR.parent)}")
    return 0 if all(item["passed"] for item in summary["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

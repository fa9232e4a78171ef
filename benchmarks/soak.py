"""Soak: keep-alive clients through .py reloads, runserver_plus then Django's runserver.

Usage: ``.venv/bin/python benchmarks/soak.py [--clients 64] [--seconds 120]
[--edit-every 10] [--seed 1] [--baseline DIR]``.

Each server runs in its default reloading mode on its own copy of
testproject while ``--clients`` keep-alive clients send ``/hello/``,
``POST /echo/`` (body checked by hash) and static files with and without
Range (checked byte for byte), and ``views.py`` is edited every
``--edit-every`` seconds. Every request that got no complete, correct
response is an error, by kind. ``--baseline DIR`` runs a third server: the
runserver_plus package found in DIR (another checkout, say ``git archive
main runserver_plus | tar -x -C DIR``), to compare with "today". Prints a
table and PASS/FAIL lines, writes
benchmarks/results/soak.json, and exits 1 when a target fails, 2 when the
benchmark could not run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .reload_procs import ReloadingServer, group_pids, poll
from .reload_project import VERSION_LINE, clone, prepare_project, write_source
from .servers import ServerError, print_table, server_env
from .soak_client import KINDS, SoakClient, Tally

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "soak.json"

OURS = "runserver_plus"
DJANGO = "django"
BASELINE = "baseline"
#: Static files the clients fetch, under static/ in the copy.
STATIC_FILES = (
    "files/hello.txt",
    "files/data.json",
    "files/big.bin",
    "css/site.css",
    "js/app.js",
)
#: The first RSS reading is taken this long before the first edit: the first
#: worker has served the whole mix by then (its lazy imports and caches are
#: in), so that what follows measures growth across restarts.
RSS_BEFORE_EDIT = 0.5  # s
RELOAD_DEADLINE = 15.0  # s, from a save to the new code answering
MAX_POLLS = 2000  # per save
JOIN_TIMEOUT = 30.0  # s, for a client thread after its stop time
#: How long a replaced worker may take to exit before the last RSS reading.
SETTLE_TIMEOUT = 10.0  # s
RSS_GROWTH_TARGET = 0.10  # at most 10% more RSS at the end than at the start
#: Save to new response, median, against the baseline's: "no worse", with
#: room for a shared machine's noise.
SAVE_TO_NEW_TARGET = 1.10


def rss_bytes(pgid: int) -> dict[int, int]:
    """VmRSS of every process of the group, in bytes."""
    sizes = {}
    for pid in group_pids(pgid):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue  # exited meanwhile
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                sizes[pid] = int(line.split()[1]) * 1024
    return sizes


def edit(server: ReloadingServer, project: Path, label: str) -> dict[str, Any]:
    """Change BENCH_VERSION in views.py; time until a response carries it."""
    views = project / "testapp" / "views.py"
    text = VERSION_LINE.sub(f'BENCH_VERSION = "{label}"', views.read_text())
    saved, _ = write_source(views, text)
    result = poll(
        server.port,
        "/bench-version/",
        lambda probe: probe.ok and probe.body.split()[:1] == [label.encode()],
        max_seconds=RELOAD_DEADLINE,
        max_polls=MAX_POLLS,
    )
    if result.hit is None:
        server.check_alive()
        server.fail(f"edit {label} was not served within {RELOAD_DEADLINE:.0f} s")
    assert result.hit is not None
    return {"seconds": result.hit.done - saved, "probe_failures": result.failures}


def soak(
    server: ReloadingServer, project: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """One server's run: clients, edits on schedule, RSS before and after."""
    files = {name: (project / "static" / name).read_bytes() for name in STATIC_FILES}
    server.start("/bench-version/")
    try:
        started = time.monotonic()
        stop_at = started + args.seconds
        clients = [
            SoakClient(server.port, files, args.seed * 1000 + n, stop_at)
            for n in range(args.clients)
        ]
        for client in clients:
            client.start()
        pause = threading.Event()
        first_edit = started + min(args.edit_every, args.seconds)
        pause.wait(max(0.0, first_edit - RSS_BEFORE_EDIT - time.monotonic()))
        rss_start = rss_bytes(server.pgid)  # (the waits pace the run)
        edits = []
        for number in range(1, args.seconds // args.edit_every + 1):
            edit_at = started + number * args.edit_every
            if edit_at >= stop_at:
                break
            pause.wait(max(0.0, edit_at - time.monotonic()))  # the schedule
            edits.append(edit(server, project, f"v{number}"))
            server.check_alive()
        pause.wait(max(0.0, stop_at - time.monotonic()))
        for client in clients:
            client.join(JOIN_TIMEOUT)
        stuck = sum(client.is_alive() for client in clients)
        for client in clients:
            client.halt.set()
        # A worker still draining would count twice: wait (bounded) for the
        # server's steady pair of processes.
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while len(group_pids(server.pgid)) > 2 and time.monotonic() < deadline:
            pause.wait(0.1)  # polling /proc, bounded by SETTLE_TIMEOUT
        rss_end = rss_bytes(server.pgid)
        server.check_alive()
        reloads = [
            line
            for line in server.log_text().splitlines()
            if line.endswith(" changed, reloading.")
        ]
    finally:
        exit_code = server.stop()
    tally = Tally()
    for client in clients:
        tally.add(client.tally)
    return {
        "requests_sent": tally.sent,
        "answered": tally.ok,
        "errors": {kind: tally.errors.get(kind, 0) for kind in KINDS},
        "error_examples": tally.examples,
        "connections": tally.connections,
        "closed_while_idle": tally.closed_idle,
        "clients_stuck": stuck,
        "edits": len(edits),
        "restarts_seen": len(reloads),
        "reload_lines": reloads,
        "save_to_new_response_s": [e["seconds"] for e in edits],
        "probe_failures": [e["probe_failures"] for e in edits],
        "rss_start": rss_start,
        "rss_end": rss_end,
        "exit_code": exit_code,
    }


def summary_rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = [
        [
            "server",
            "requests",
            *KINDS,
            "restarts",
            "RSS start",
            "RSS end",
            "save->new (median, max)",
        ]
    ]
    for name, result in results.items():
        start = sum(result["rss_start"].values())
        end = sum(result["rss_end"].values())
        times = result["save_to_new_response_s"] or [float("nan")]
        rows.append(
            [
                name,
                f"{result['requests_sent']:,}",
                *(str(result["errors"][kind]) for kind in KINDS),
                str(result["restarts_seen"]),
                f"{start / 2**20:.1f} MiB",
                f"{end / 2**20:.1f} MiB",
                f"{statistics.median(times):.3f} s, {max(times):.3f} s",
            ]
        )
    return rows


def judge(
    ours: dict[str, Any], baseline: dict[str, Any] | None
) -> list[tuple[str, bool]]:
    errors = sum(ours["errors"].values())
    start = sum(ours["rss_start"].values())
    end = sum(ours["rss_end"].values())
    growth = end / start - 1 if start else float("inf")
    verdicts = [
        (
            f"errors over {ours['restarts_seen']} restarts: {errors} (target 0)",
            not errors,
        ),
        (
            f"RSS growth {growth:+.1%} (target under {RSS_GROWTH_TARGET:.0%})",
            growth < RSS_GROWTH_TARGET,
        ),
        (
            f"every edit restarted the worker ({ours['edits']} edits, "
            f"{ours['restarts_seen']} restarts seen)",
            ours["restarts_seen"] >= ours["edits"] > 0,
        ),
        ("no client stuck", ours["clients_stuck"] == 0),
    ]
    if baseline is not None and baseline["save_to_new_response_s"]:
        now = statistics.median(ours["save_to_new_response_s"])
        before = statistics.median(baseline["save_to_new_response_s"])
        verdicts.append(
            (
                f"save -> new response, median {now:.3f} s against the baseline's "
                f"{before:.3f} s (target at most {SAVE_TO_NEW_TARGET:.2f}x)",
                now <= before * SAVE_TO_NEW_TARGET,
            )
        )
    return verdicts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--edit-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also run the runserver_plus package in DIR (put first on PYTHONPATH)",
    )
    args = parser.parse_args(argv)
    if not Path("/proc").is_dir():
        print("soak.py needs Linux /proc (RSS, process groups).", file=sys.stderr)
        return 2
    if not 1 <= args.clients <= 512 or args.edit_every < 1 or args.seconds < 1:
        parser.error("--clients 1-512, --edit-every and --seconds at least 1")
    runs = [(OURS, server_env(django_runserver=False))]
    if args.baseline is not None:
        if not (args.baseline / "runserver_plus" / "__init__.py").is_file():
            parser.error(f"no runserver_plus package in {args.baseline}")
        env = server_env(django_runserver=False)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(args.baseline.resolve()), *filter(None, [env.get("PYTHONPATH")])]
        )
        runs.append((BASELINE, env))
    runs.append((DJANGO, server_env(django_runserver=True)))
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="rsp-soak-") as tmp:
        workdir = Path(tmp)
        try:
            prepared = prepare_project(workdir)
            for name, env in runs:
                project = clone(prepared, workdir / name)
                server = ReloadingServer(name, project, env)
                print(
                    f"{name}: {args.clients} clients for {args.seconds} s, an edit "
                    f"every {args.edit_every} s ...",
                    flush=True,
                )
                results[name] = soak(server, project, args)
        except ServerError as error:
            print(f"The benchmark could not run: {error}", file=sys.stderr)
            return 2
    print_table(summary_rows(results))
    verdicts = judge(results[OURS], results.get(BASELINE))
    for text, passed in verdicts:
        print(f"{'PASS' if passed else 'FAIL'}  runserver_plus: {text}")
    for name, result in results.items():
        for example in result["error_examples"][:5]:
            print(f"  {name} error: {example}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "arguments": {k: str(v) for k, v in vars(args).items()},
                "results": results,
                "verdicts": [{"text": t, "pass": p} for t, p in verdicts],
            },
            indent=2,
        )
    )
    print(f"\nFull results: {RESULTS.relative_to(BENCH_DIR.parent)}")
    return 0 if all(passed for _, passed in verdicts) else 1

"""Compare runserver_plus with Django's runserver on testproject, interleaved.

Usage: ``.venv/bin/python benchmarks/run.py [--rounds N] [--seconds S]``.
Prints a table of medians with ratios (ours / Django) and PASS/FAIL lines for
the targets, writes benchmarks/results/latest.json, and exits 1 when a target
fails or a server errors.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .handshakes import measure as measure_handshakes
from .load import LoadError, LoadResult, ensure_wrk, run_wrk
from .servers import (
    ServerError,
    ServerProcess,
    copy_testproject,
    migrate,
    print_table,
    server_env,
)

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "latest.json"

STATIC_FILE = "files/bench-5mb.bin"
STATIC_SIZE = 5 * 1024 * 1024  # bytes
CEILING_MAX_REQUESTS = 200_000
CEILING_EXTRA_TIME = 60.0  # s, for django.setup() and the warm-up
#: A 1-minute load average above this before the run means other processes
#: compete for the CPUs: the figures, the ceiling above all, will be low.
BUSY_LOAD = 1.0

OURS = "runserver_plus"
DJANGO = "django"
#: runserver_plus --https, compared with OURS in plain HTTP.
OURS_TLS = "runserver_plus --https"

#: The scenarios measured over TLS too: (key of SCENARIOS, title).
TLS_SCENARIOS = (
    ("hello_c8", "/hello/ keep-alive, 8 connections"),
    ("static_5mb", "5 MB static file, 1 connection"),
)
#: New connections with one request each: full handshakes over TLS.
HANDSHAKES = "handshakes"
HANDSHAKES_TITLE = "new connection per request (full handshakes)"
HANDSHAKE_CLIENTS = 2  # client processes

#: The scenario held to the in-process ceiling.
CEILING_SCENARIO = "hello_c8"
#: (key, title, path, wrk threads, wrk connections, unit)
SCENARIOS = (
    ("hello_c8", "/hello/ keep-alive, 8 connections", "/hello/", 2, 8, "req/s"),
    ("hello_c64", "/hello/ keep-alive, 64 connections", "/hello/", 2, 64, "req/s"),
    (
        "static_5mb",
        "5 MB static file, 1 connection",
        f"/static/{STATIC_FILE}",
        1,
        1,
        "MiB/s",
    ),
)


def figure(result: LoadResult, unit: str) -> float:
    return result.mib_per_second if unit == "MiB/s" else result.requests_per_second


def run_ceiling(project: Path, seconds: float) -> dict[str, Any]:
    """Django's WSGIHandler called in a loop in a fresh subprocess."""
    try:
        result = subprocess.run(
            [
                sys.executable,
                str(BENCH_DIR / "ceiling.py"),
                str(project),
                str(seconds),
                str(CEILING_MAX_REQUESTS),
            ],
            cwd=project,
            env=server_env(django_runserver=True),
            capture_output=True,
            text=True,
            timeout=seconds + CEILING_EXTRA_TIME,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ServerError(
            f"ceiling.py did not finish within {seconds + CEILING_EXTRA_TIME:.0f} s"
        ) from None
    if result.returncode != 0:
        raise ServerError(f"ceiling.py failed:\n{result.stdout}{result.stderr}")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def warm_up(wrk: str, server: ServerProcess) -> None:
    """One short run per URL, so imports and first-request work are not measured."""
    for _key, _title, path, threads, connections, _unit in SCENARIOS:
        run_wrk(
            wrk, server.url + path, threads=threads, connections=connections, seconds=1
        )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs else float("inf")


def format_figure(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.1f} {unit}"


def measure(args: argparse.Namespace, wrk: str, workdir: Path) -> dict[str, Any]:
    """Every round: each scenario against ours then Django's; the ceiling just
    before and just after ours on 8 connections, the figure it is held to."""
    project = copy_testproject(workdir)
    (project / "static" / STATIC_FILE).write_bytes(os.urandom(STATIC_SIZE))
    print(f"Migrating the testproject copy in {project} ...", flush=True)
    migrate(project)

    tls_env = server_env(django_runserver=False)
    # Its own certificate authority, never the user's.
    tls_env["RUNSERVER_PLUS_CA_DIR"] = str(workdir / "ca")
    servers = {
        OURS: ServerProcess(OURS, project, server_env(django_runserver=False)),
        DJANGO: ServerProcess(DJANGO, project, server_env(django_runserver=True)),
        OURS_TLS: ServerProcess(
            OURS_TLS, project, tls_env, args=["--https"], scheme="https"
        ),
    }
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {
        key: {OURS: [], DJANGO: [], OURS_TLS: []} for key, *_ in SCENARIOS
    }
    handshakes: dict[str, list[dict[str, float]]] = {OURS: [], OURS_TLS: []}
    ceilings: list[dict[str, Any]] = []
    exit_codes: dict[str, int | None] = {}

    def ceiling() -> dict[str, Any]:
        result = run_ceiling(project, args.seconds)
        print(
            f"  {'in-process ceiling (WSGIHandler)':38} {'':15} "
            f"{format_figure(result['requests_per_second'], 'req/s')}",
            flush=True,
        )
        return result

    try:
        for name, server in servers.items():
            print(f"Starting {name} ...", flush=True)
            server.start()
            warm_up(wrk, server)
        for round_number in range(1, args.rounds + 1):
            print(f"Round {round_number}/{args.rounds}", flush=True)
            for key, title, path, threads, connections, unit in SCENARIOS:
                for name, server in servers.items():
                    if name == OURS_TLS and key not in dict(TLS_SCENARIOS):
                        continue
                    paired = key == CEILING_SCENARIO and name == OURS
                    before = ceiling() if paired else None
                    server.check_alive()
                    result = run_wrk(
                        wrk,
                        server.url + path,
                        threads=threads,
                        connections=connections,
                        seconds=args.seconds,
                    )
                    raw[key][name].append(dataclass_dict(result))
                    errors = f", {result.errors} errors" if result.errors else ""
                    print(
                        f"  {title:38} {name:15} "
                        f"{format_figure(figure(result, unit), unit)}{errors}",
                        flush=True,
                    )
                    if paired:
                        ceilings.append({"before": before, "after": ceiling()})
            for name in (OURS, OURS_TLS):
                server = servers[name]
                server.check_alive()
                rate, failed = measure_handshakes(
                    server.url + "/hello/", args.seconds, HANDSHAKE_CLIENTS
                )
                handshakes[name].append({"per_second": rate, "errors": failed})
                errors = f", {failed} errors" if failed else ""
                print(
                    f"  {HANDSHAKES_TITLE[:38]:38} {name:15} "
                    f"{format_figure(rate, 'conn/s')}{errors}",
                    flush=True,
                )
        for server in servers.values():
            server.check_alive()
    finally:
        for name, server in servers.items():
            exit_codes[name] = server.stop()
    return {
        "raw": raw,
        "handshakes": handshakes,
        "ceiling": ceilings,
        "exit_codes": exit_codes,
    }


def dataclass_dict(result: LoadResult) -> dict[str, Any]:
    data = dict(vars(result))
    data.update(
        requests_per_second=result.requests_per_second,
        mib_per_second=result.mib_per_second,
        errors=result.errors,
    )
    return data


def summarise(measured: dict[str, Any]) -> dict[str, Any]:
    """Medians, ratios and target verdicts from the raw per-round figures."""
    scenarios: dict[str, Any] = {}
    for key, title, _path, _threads, connections, unit in SCENARIOS:
        per_server = {}
        for name in (OURS, DJANGO):
            runs = measured["raw"][key][name]
            field = "mib_per_second" if unit == "MiB/s" else "requests_per_second"
            per_server[name] = {
                "median": median([run[field] for run in runs]),
                "errors": sum(run["errors"] for run in runs),
                "latency_p50_ms": median(
                    [run["latency_p50_us"] / 1000 for run in runs]
                ),
            }
        scenarios[key] = {
            "title": title,
            "unit": unit,
            "connections": connections,
            **per_server,
            "ratio": ratio(per_server[OURS]["median"], per_server[DJANGO]["median"]),
        }
    ceiling_runs = [
        run[when]["requests_per_second"]
        for run in measured["ceiling"]
        for when in ("before", "after")
    ]
    # Each round's figure against the ceiling measured around it: the speed
    # of a shared machine drifts more between rounds than within seconds.
    ceiling_ratios = [
        ratio(
            ours["requests_per_second"],
            statistics.fmean(
                (
                    run["before"]["requests_per_second"],
                    run["after"]["requests_per_second"],
                )
            ),
        )
        for ours, run in zip(
            measured["raw"][CEILING_SCENARIO][OURS], measured["ceiling"], strict=True
        )
    ]
    targets = [
        target(
            "keep-alive /hello/, 8 connections: ours >= 8x Django",
            scenarios["hello_c8"]["ratio"],
            8.0,
        ),
        target(
            "5 MB static file: ours >= 2x Django MiB/s",
            scenarios["static_5mb"]["ratio"],
            2.0,
        ),
    ]
    errors = {
        name: sum(scenarios[key][name]["errors"] for key in scenarios)
        for name in (OURS, DJANGO)
    }
    tls = summarise_tls(measured)
    errors[OURS] += sum(item["errors"] for item in tls.values())
    return {
        "scenarios": scenarios,
        "tls": tls,
        "ceiling_requests_per_second": median(ceiling_runs),
        "ceiling_ratios": ceiling_ratios,
        "targets": targets,
        "errors": errors,
    }


def summarise_tls(measured: dict[str, Any]) -> dict[str, Any]:
    """Each TLS figure as a ratio to the same figure in plain HTTP, same run."""
    tls: dict[str, Any] = {}
    units = {key: unit for key, *_, unit in SCENARIOS}
    for key, title in TLS_SCENARIOS:
        unit = units[key]
        field = "mib_per_second" if unit == "MiB/s" else "requests_per_second"
        runs = measured["raw"][key]
        plain = median([run[field] for run in runs[OURS]])
        secure = median([run[field] for run in runs[OURS_TLS]])
        tls[key] = {
            "title": title,
            "unit": unit,
            "plain": plain,
            "tls": secure,
            "ratio": ratio(secure, plain),
            "errors": sum(run["errors"] for run in runs[OURS_TLS]),
        }
    shakes = measured["handshakes"]
    plain = median([run["per_second"] for run in shakes[OURS]])
    secure = median([run["per_second"] for run in shakes[OURS_TLS]])
    tls[HANDSHAKES] = {
        "title": HANDSHAKES_TITLE,
        "unit": "conn/s",
        "plain": plain,
        "tls": secure,
        "ratio": ratio(secure, plain),
        "errors": sum(run["errors"] for name in shakes for run in shakes[name]),
    }
    return tls


def target(title: str, value: float, minimum: float) -> dict[str, Any]:
    return {
        "title": title,
        "value": value,
        "minimum": minimum,
        "passed": value >= minimum,
    }


def print_report(summary: dict[str, Any], exit_codes: dict[str, int | None]) -> None:
    rows = [("scenario (medians)", OURS, "Django", "ours/Django", "errors ours/Django")]
    for item in summary["scenarios"].values():
        unit = item["unit"]
        rows.append(
            (
                item["title"],
                format_figure(item[OURS]["median"], unit),
                format_figure(item[DJANGO]["median"], unit),
                f"{item['ratio']:.2f}x",
                f"{item[OURS]['errors']}/{item[DJANGO]['errors']}",
            )
        )
    rows.append(
        (
            "in-process ceiling (WSGIHandler loop)",
            format_figure(summary["ceiling_requests_per_second"], "req/s"),
            "",
            "",
            "",
        )
    )
    print_table(rows)
    tls_rows = [("over TLS (medians)", "plain HTTP", "HTTPS", "HTTPS/plain", "errors")]
    for item in summary["tls"].values():
        unit = item["unit"]
        tls_rows.append(
            (
                item["title"],
                format_figure(item["plain"], unit),
                format_figure(item["tls"], unit),
                f"{item['ratio']:.2f}x",
                str(item["errors"]),
            )
        )
    print_table(tls_rows)
    by_round = " ".join(f"{value:.2f}x" for value in summary["ceiling_ratios"])
    # For information: the target of half the ceiling is retired.
    print(f"\nours on 8 connections / the ceiling around it, by round: {by_round}")
    for item in summary["targets"]:
        verdict = "PASS" if item["passed"] else "FAIL"
        print(f"{verdict}  {item['title']}: {item['value']:.2f}x")
    for name, code in exit_codes.items():
        print(f"{name} exit code after SIGTERM: {code}")


def load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def environment(load_before: float | None) -> dict[str, Any]:
    import django

    wrk_version = subprocess.run(
        ["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.splitlines()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "python": platform.python_version(),
        "django": django.get_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "wrk": wrk_version[0] if wrk_version else "",
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds (default 5)"
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="length of each wrk run (default 5)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds < 1:
        parser.error("--rounds and --seconds must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        wrk = ensure_wrk()
    except LoadError as error:
        print(error, file=sys.stderr)
        return 2
    load_before = load_average()
    if load_before is not None and load_before > BUSY_LOAD:
        print(
            f"Warning: the load average is {load_before:.1f}; other processes use "
            "the CPUs, so the figures (the ceiling above all) will be low and noisy.",
            flush=True,
        )
    with tempfile.TemporaryDirectory(prefix="rsp-bench-") as tmp:
        try:
            measured = measure(args, wrk, Path(tmp))
        except (ServerError, LoadError) as error:
            print(f"Benchmark aborted: {error}", file=sys.stderr)
            return 2
    summary = summarise(measured)
    print_report(summary, measured["exit_codes"])
    RESULTS.parent.mkdir(exist_ok=True)
    document = {
        "environment": environment(load_before),
        "settings": {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "static_size_bytes": STATIC_SIZE,
        },
        **summary,
        "exit_codes": measured["exit_codes"],
        "raw": measured["raw"],
        "handshakes": measured["handshakes"],
        "ceiling_runs": measured["ceiling"],
    }
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nWrote {RESULTS.relative_to(BENCH_DIR.parent)}")
    failed = not all(item["passed"] for item in summary["targets"])
    # Django's own errors are reported, not held against this run.
    return 1 if failed or summary["errors"][OURS] else 0

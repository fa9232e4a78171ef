"""ASGI mode against Daphne's runserver and uvicorn --reload, interleaved in one run.

Usage, from the repository root with the development virtualenv (the
``benchmark`` and ``test`` extras installed)::

    .venv/bin/python benchmarks/asgi.py [--rounds 3] [--seconds 5]

Each server serves testproject's ASGI application (``TESTPROJECT_ASGI=1``:
Django for HTTP, Channels' router for WebSockets) from its own copy, with
its reloader on. See README.rst for what is measured and the targets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .asgi_probes import (
    first_event_ms,
    get,
    save_and_wait,
    summary,
    websocket_round_trips_ms,
)
from .load import LoadError, ensure_wrk, run_wrk
from .servers import (
    ServerError,
    copy_testproject,
    free_port,
    migrate,
    print_table,
    server_env,
    spawn_group,
    stop_group,
)

START_TIMEOUT = 60.0  # s, from spawn to a 200 for /hello/
STOP_TIMEOUT = 10.0  # s, from SIGTERM to exit, before SIGKILL
SSE_SAMPLES = 20
WS_MESSAGES = 1000
RESULTS = Path(__file__).resolve().parent / "results" / "asgi-latest.json"


class Server:
    """One reloading ASGI server on its own testproject copy, in its own session."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.project = copy_testproject(workdir / name)
        migrate(self.project)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        address = f"127.0.0.1:{self.port}"
        if self.name == "uvicorn":
            return [
                *(sys.executable, "-m", "uvicorn", "testproject.asgi:application"),
                *("--reload", "--port", str(self.port), "--no-access-log"),
            ]
        if self.name == "daphne":
            return [sys.executable, "manage.py", "runserver", address]
        return [sys.executable, "manage.py", "runserver", address, "--asgi"]

    def start(self) -> None:
        env = server_env(django_runserver=False)
        env["TESTPROJECT_ASGI"] = "1"
        if self.name == "daphne":
            env["TESTPROJECT_DAPHNE"] = "1"  # Daphne above runserver_plus
        self.port = free_port()
        log = open(self.project.parent / "server.log", "wb")  # noqa: SIM115
        with log:
            self.proc = spawn_group(
                self.command(),
                cwd=self.project,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if get(self.port, "/hello/", timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)  # the polling rate while the server starts
        raise ServerError(f"{self.name} did not start:\n{self.output()}")

    def output(self) -> str:
        return (self.project.parent / "server.log").read_text(errors="replace")[-4000:]

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        return stop_group(self.proc, STOP_TIMEOUT)


def measure(
    args: argparse.Namespace, wrk: str, servers: list[Server]
) -> dict[str, Any]:
    figures: dict[str, dict[str, list[Any]]] = {
        s.name: {
            "rps": [],
            "rps_async": [],
            "sse": [],
            "ws": [],
            "reload": [],
            "failed": [],
        }
        for s in servers
    }
    version = 0
    for round_number in range(1, args.rounds + 1):
        for server in servers:  # interleaved: drift hits every server alike
            mine = figures[server.name]
            url = f"http://127.0.0.1:{server.port}/hello/"
            load = run_wrk(wrk, url, threads=2, connections=8, seconds=args.seconds)
            mine["rps"].append(load.requests_per_second)
            # The same answer from an async view: no thread hop for the view,
            # so more of each request is the server's own work.
            url = f"http://127.0.0.1:{server.port}/async/hello/"
            load_async = run_wrk(
                wrk, url, threads=2, connections=8, seconds=args.seconds
            )
            mine["rps_async"].append(load_async.requests_per_second)
            mine["sse"] += first_event_ms(server.port, SSE_SAMPLES)
            mine["ws"] += websocket_round_trips_ms(server.port, WS_MESSAGES)
            version += 1
            views = server.project / "testapp" / "views.py"
            reload = save_and_wait(server.port, views, version)
            mine["reload"].append(reload["seconds"])
            mine["failed"].append(len(reload["failures"]))
            print(
                f"round {round_number} {server.name}: {load.requests_per_second:.0f} "
                f"req/s, reload {reload['seconds']:.2f} s, "
                f"{len(reload['failures'])} failed",
                flush=True,
            )
    return figures


def ceiling(project: Path, seconds: float) -> float:
    """Requests per second of the application called in-process (asgi_ceiling.py)."""
    script = Path(__file__).resolve().parent / "asgi_ceiling.py"
    result = subprocess.run(
        [sys.executable, str(script), str(project), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    return float(json.loads(result.stdout)["per_second"])


def report(
    figures: dict[str, dict[str, list[Any]]], ceilings: list[float]
) -> dict[str, Any]:
    table = {
        name: {
            "rps": statistics.median(f["rps"]),
            "rps_async": statistics.median(f["rps_async"]),
            "sse": summary(f["sse"]),
            "ws": summary(f["ws"]),
            "reload": statistics.median(f["reload"]),
            "failed": sum(f["failed"]),
        }
        for name, f in figures.items()
    }
    rows = [["server", "/hello/ req/s", "/async/hello/ req/s", "SSE 1st ms",
             "WS p50 ms", "WS p99 ms", "save->new s", "failed"]]  # fmt: skip
    for name, t in table.items():
        rows.append(
            [
                name,
                f"{t['rps']:.0f}",
                f"{t['rps_async']:.0f}",
                f"{t['sse']['median']:.1f}",
                f"{t['ws']['median']:.2f}",
                f"{t['ws']['p99']:.2f}",
                f"{t['reload']:.2f}",
                str(t["failed"]),
            ]
        )
    rows.append(["in-process app", f"{statistics.mean(ceilings):.0f}", *[""] * 6])
    print_table(rows)
    for name, t in table.items():
        print(
            f"{name}: /hello/ at {t['rps'] / statistics.mean(ceilings):.2f}x the "
            f"in-process ceiling; /async/hello/ {t['rps_async']:.0f} req/s, "
            f"{t['rps_async'] / table['daphne']['rps_async']:.2f}x Daphne's"
        )
    ours, daphne, uvicorn = table["runserver_plus"], table["daphne"], table["uvicorn"]
    targets = [
        ("/hello/ >= 3x Daphne", ours["rps"] / daphne["rps"], ">=", 3.0),
        ("/hello/ >= 0.8x uvicorn", ours["rps"] / uvicorn["rps"], ">=", 0.8),
        (
            "WS echo median <= 1.2x uvicorn",
            ours["ws"]["median"] / uvicorn["ws"]["median"],
            "<=",
            1.2,
        ),
        ("SSE first event < 20 ms", ours["sse"]["median"], "<", 20.0),
        ("failed requests during reloads = 0", ours["failed"], "<=", 0),
    ]
    results = []
    for title, value, op, bound in targets:
        ok = (
            value >= bound
            if op == ">="
            else value <= bound
            if op == "<="
            else value < bound
        )
        results.append({"target": title, "value": value, "pass": ok})
        print(f"{'PASS' if ok else 'FAIL'}  {title}: {value:.2f}")
    return {"table": table, "targets": results}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    try:
        wrk = ensure_wrk()
    except LoadError as error:
        print(error, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="rsp-asgi-bench-") as tmp:
        servers = [
            Server(n, Path(tmp)) for n in ("runserver_plus", "daphne", "uvicorn")
        ]
        try:
            for server in servers:
                server.start()
            ceilings = [ceiling(servers[0].project, args.seconds)]
            figures = measure(args, wrk, servers)
            ceilings.append(ceiling(servers[0].project, args.seconds))
        except (
            ServerError,
            RuntimeError,
            OSError,
            subprocess.SubprocessError,
        ) as error:
            print(f"benchmark failed: {error}", file=sys.stderr)
            for server in servers:
                print(f"--- {server.name} ---\n{server.output()}", file=sys.stderr)
            return 2
        finally:
            codes = {server.name: server.stop() for server in servers}
    summary_ = report(figures, ceilings)
    summary_["ceilings"] = ceilings
    summary_["exit_codes"] = codes
    summary_["raw"] = figures
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary_, indent=2))
    return 0 if all(t["pass"] for t in summary_["targets"]) else 1

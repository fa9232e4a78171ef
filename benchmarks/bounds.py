"""How near the in-process ceiling can any server get on this machine?

Usage: ``.venv/bin/python benchmarks/bounds.py [--rounds 5] [--seconds 3]``.

run.py's ceiling target asks ``/hello/`` over 8 keep-alive connections to
reach half of what Django's WSGIHandler does in a loop. What a server can
reach also depends on the machine: each request costs two system calls, a
loopback round trip and, with threads, hand-overs of the GIL. This script
puts runserver_plus beside two bare reference servers (bare_server.py) that
call the same handler with no HTTP parsing and no log, interleaved, and
reports each, and Django's own runserver, as a fraction of the ceiling
measured in the same rounds:

- ``bare, thread per connection``: the serving model runserver_plus had
  before its event loop, with nothing of runserver_plus's work;
- ``bare, one selector thread``: every connection served from one thread,
  runserver_plus's model now (a request that takes long gets a thread).

Prints a table of medians and exits 0; 2 when it could not run. Nothing is
judged: it tells what the target asks of a server on this machine.
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .load import LoadError, ensure_wrk, run_wrk
from .run import BENCH_DIR, median, run_ceiling
from .servers import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    ServerError,
    ServerProcess,
    copy_testproject,
    migrate,
    print_table,
    server_env,
    spawn_group,
    stop_group,
)

PATH = "/hello/"
WRK_THREADS = 2
CONNECTIONS = 8
OURS = "runserver_plus"
DJANGO = "django runserver"
BARE_THREADS = "bare, thread per connection"
BARE_LOOP = "bare, one selector thread"


class BareServer:
    """bare_server.py in its own session; its port comes on its first line."""

    def __init__(self, name: str, project: Path, mode: str) -> None:
        self.name = name
        self.port = 0
        self._project = project
        self._mode = mode
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # stderr to a file: a pipe nobody reads could fill and block it.
        errors = self._project.parent / f"bare-{self._mode}.stderr"
        with errors.open("wb") as stderr:
            self._proc = proc = spawn_group(
                [
                    sys.executable,
                    str(BENCH_DIR / "bare_server.py"),
                    str(self._project),
                    self._mode,
                ],
                cwd=self._project,
                env=server_env(django_runserver=True),
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        assert proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([proc.stdout], [], [], remaining)[0]:
                raise ServerError(f"{self.name} printed no port in time")
            byte = os.read(proc.stdout.fileno(), 1)
            if not byte:
                text = errors.read_text(errors="replace")
                raise ServerError(f"{self.name} exited:\n{text[-4000:]}")
            line += byte
        fields = line.split()
        if len(fields) != 2 or fields[0] != b"PORT" or not fields[1].isdigit():
            raise ServerError(f"{self.name} printed {line!r}, not its port")
        self.port = int(fields[1])

    def check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise ServerError(f"{self.name} exited with code {self._proc.returncode}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        stop_group(proc, STOP_TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()


def measure(rounds: int, seconds: float, wrk: str, workdir: Path) -> None:
    project = copy_testproject(workdir)
    print(f"Migrating the testproject copy in {project} ...", flush=True)
    migrate(project)
    servers: dict[str, ServerProcess | BareServer] = {
        OURS: ServerProcess(OURS, project, server_env(django_runserver=False)),
        DJANGO: ServerProcess("django", project, server_env(django_runserver=True)),
        BARE_THREADS: BareServer(BARE_THREADS, project, "threads"),
        BARE_LOOP: BareServer(BARE_LOOP, project, "loop"),
    }
    figures: dict[str, list[float]] = {name: [] for name in servers}
    ceilings: list[float] = []
    try:
        for name, server in servers.items():
            print(f"Starting {name} ...", flush=True)
            server.start()
            run_wrk(
                wrk,
                server.url + PATH,
                threads=WRK_THREADS,
                connections=CONNECTIONS,
                seconds=1,
            )
        for number in range(1, rounds + 1):
            print(f"Round {number}/{rounds}", flush=True)
            for name, server in servers.items():
                server.check_alive()
                result = run_wrk(
                    wrk,
                    server.url + PATH,
                    threads=WRK_THREADS,
                    connections=CONNECTIONS,
                    seconds=seconds,
                )
                if result.errors:
                    raise ServerError(f"{name}: {result.errors} errors under load")
                figures[name].append(result.requests_per_second)
                print(f"  {name:30} {result.requests_per_second:9,.0f} req/s")
            ceiling = run_ceiling(project, seconds)["requests_per_second"]
            ceilings.append(ceiling)
            print(f"  {'in-process ceiling':30} {ceiling:9,.0f} req/s", flush=True)
    finally:
        for server in servers.values():
            server.stop()

    ceiling = median(ceilings)
    model_bound = median(figures[BARE_LOOP])
    rows = [["/hello/, 8 keep-alive connections (medians)", "req/s", "/ ceiling"]]
    for name, values in figures.items():
        rows.append(
            [
                name,
                f"{median(values):,.0f}",
                f"{median(values) / ceiling:.2f}x",
            ]
        )
    rows.append(["in-process ceiling (WSGIHandler loop)", f"{ceiling:,.0f}", "1.00x"])
    print_table(rows)
    print(
        f"{OURS} reaches {median(figures[OURS]) / model_bound:.2f}x of the bare "
        "server with its own serving model (one selector thread)."
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds < 1:
        parser.error("--rounds and --seconds must be at least 1")
    try:
        wrk = ensure_wrk()
        with tempfile.TemporaryDirectory(prefix="runserver_plus-bounds-") as workdir:
            measure(args.rounds, args.seconds, wrk, Path(workdir))
    except (LoadError, ServerError) as error:
        print(f"bounds.py could not run: {error}", file=sys.stderr)
        return 2
    return 0

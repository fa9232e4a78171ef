"""Time the start-up phases of both servers' processes, from Python audit events.

Usage: ``.venv/bin/python benchmarks/reload_startup.py [--starts N]``.

Each start runs ``manage.py runserver 127.0.0.1:<port>`` (reloader on) with a
``sitecustomize`` on PYTHONPATH that installs an audit hook in every process
of the server: it appends "pid time event" lines for the first import of
each module, ``subprocess.Popen`` and ``socket.bind``. The median time of the
landmarks below, from the spawn, is printed per server and process (P0 the
parent/supervisor, P1 the child/worker), with the first 200 from /hello/.
Diagnostic only: no targets, nothing written to results/.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from .reload_procs import ReloadingServer
from .reload_project import clone, prepare_project
from .reload_trials import DJANGO, OURS
from .servers import ServerError, server_env

SITECUSTOMIZE = '''"""Audit hook of reload_startup.py: logs imports, spawns, binds."""
import os
import sys
import time

_LOG = os.environ.get("RELOAD_STARTUP_LOG")
if _LOG:
    _fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    _seen = set()

    def _write(label):
        os.write(_fd, f"{os.getpid()} {time.time():.6f} {label}\\n".encode())

    def _hook(event, args):
        if event == "import":
            if args[0] not in _seen:
                _seen.add(args[0])
                _write("import " + args[0])
        elif event == "subprocess.Popen":
            _write("spawn")
        elif event == "socket.bind":
            _write("bind")

    _write("python started")
    sys.addaudithook(_hook)
'''

#: (event in the log, what it marks), in the order they usually happen.
LANDMARKS = (
    ("python started", "interpreter up (site done)"),
    ("import django", "django imported"),
    ("import django.core.management.commands.runserver", "settings + apps ready"),
    ("import runserver_plus.runner", "runserver_plus command module loading"),
    ("import runserver_plus.reloader.supervisor", "supervisor imported"),
    ("import watchfiles", "watchfiles imported"),
    ("import runserver_plus.reloader.worker", "worker imported"),
    ("bind", "socket bound"),
    ("spawn", "child/worker spawned"),
    ("import testapp.views", "URLconf imported (system checks)"),
    ("import django.db.migrations.executor", "migration check"),
)


def one_start(server: ReloadingServer, log: Path) -> tuple[dict[str, float], float]:
    """Landmark times (s after the spawn) of one start, and its first 200."""
    log.unlink(missing_ok=True)
    server.env["RELOAD_STARTUP_LOG"] = str(log)
    spawned_wall = time.time()
    seconds = server.start()
    server.stop()
    pids: list[str] = []
    times: dict[str, float] = {}
    for line in log.read_text().splitlines():
        pid, stamp, event = line.split(" ", 2)
        if pid not in pids:
            pids.append(pid)
        key = f"P{pids.index(pid)} {event}"
        times.setdefault(key, float(stamp) - spawned_wall)
    return times, seconds


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=7, help="starts per server")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rsp-startup-") as tmp:
        workdir = Path(tmp)
        hook_dir = workdir / "hook"
        hook_dir.mkdir()
        (hook_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
        prepared = prepare_project(workdir)
        servers = {}
        for name, django in ((OURS, False), (DJANGO, True)):
            env = server_env(django_runserver=django)
            env["PYTHONPATH"] = str(hook_dir)
            servers[name] = ReloadingServer(name, clone(prepared, workdir / name), env)
        landmarks: dict[str, dict[str, list[float]]] = {
            name: defaultdict(list) for name in servers
        }
        ready: dict[str, list[float]] = {name: [] for name in servers}
        try:
            for number in range(args.starts + 1):  # the first start warms up
                for name, server in servers.items():
                    times, seconds = one_start(server, workdir / f"{name}.log")
                    if number:
                        for key, value in times.items():
                            landmarks[name][key].append(value)
                        ready[name].append(seconds)
        except ServerError as error:
            print(f"Aborted: {error}", file=sys.stderr)
            return 2
    for name in servers:
        print(f"\n{name}: median ms after the spawn ({args.starts} starts)")
        rows = []
        for process in ("P0", "P1"):
            for event, title in LANDMARKS:
                values = landmarks[name].get(f"{process} {event}")
                if values:
                    rows.append((statistics.median(values), f"{process} {title}"))
        rows.append((statistics.median(ready[name]), "first 200 from /hello/"))
        for value, title in sorted(rows):
            print(f"  {value * 1000:7.1f}  {title}")
    return 0

"""Fork from a preloaded parent, or a spare process told to go: which warm design?

Usage: ``.venv/bin/python benchmarks/warm_designs.py [--project DIR]
[--settings MODULE] [--trials N]``. Without ``--project``, a migrated copy of
testproject; ``reload.py``'s large project is the case that matters
(``reload.py --keep`` leaves it in place, see benchmarks/README.rst).

Both designs preload the same modules: those a worker of the project holds
once ``django.setup()``, the checks and the URLconf have run, less the
project's own (``runserver_plus.reloader.preload.preloadable``). Then, per
trial, interleaved:

- ``cold``: ``manage.py runserver --noreload`` spawned; from the spawn to
  the first 200 from ``/hello/`` (or ``--path``);
- ``spare``: a process that preloaded and waits; from its ``go`` to the
  first 200, the process itself running ``manage.py``;
- ``fork``: a preloaded parent that forks on ``go``; from the ``go`` to the
  first 200 from the child.

Memory (PSS from ``/proc/<pid>/smaps_rollup``, so shared pages count once)
of what each design keeps while a worker serves: the spare design, the
serving worker and the next spare (preloaded, waiting); the fork design,
the serving child and its preloaded parent. Linux only. All servers bind
127.0.0.1 on a free port and are stopped through their process group.
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

from .reload_procs import poll
from .servers import (
    copy_testproject,
    free_port,
    migrate,
    server_env,
    spawn_group,
    stop_group,
)

START_DEADLINE = 60.0  # s, for one start to answer
MAX_POLLS = 12000  # at one poll per 5 ms, more than the deadline

#: Lists what a worker of the project imported from outside it.
LIST_MODULES = """
import json, os, sys
sys.path.insert(0, os.getcwd())
import django
django.setup()
from django.core import checks
from django.urls import get_resolver
get_resolver().url_patterns
checks.run_checks()
from runserver_plus.reloader.preload import preloadable
print(json.dumps(preloadable(sys.modules, [os.getcwd()],
    settings_module=os.environ["DJANGO_SETTINGS_MODULE"])))
"""

#: Preloads the modules named in argv[1] (a JSON file), says "ready", and on
#: "go" on stdin runs ``manage.py runserver --noreload 127.0.0.1:<argv[3]>``:
#: in this process (argv[2] == "spare") or in a forked child ("fork").
PRELOADED = """
import importlib, json, os, runpy, sys
modules_file, mode, port = sys.argv[1:4]
sys.path[0] = os.getcwd()
settings = os.environ.pop("DJANGO_SETTINGS_MODULE")
for name in json.load(open(modules_file)):
    before = set(sys.modules)
    try:
        importlib.import_module(name)
    except (Exception, SystemExit):
        for added in set(sys.modules) - before:
            del sys.modules[added]
print("ready", flush=True)
sys.stdin.readline()
os.environ["DJANGO_SETTINGS_MODULE"] = settings
if mode == "fork" and os.fork():
    os.wait()
    sys.exit(0)
sys.argv = ["manage.py", "runserver", "--noreload", "127.0.0.1:" + port]
runpy.run_path("manage.py", run_name="__main__")
"""


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as stream:
            return [int(p) for p in stream.read().split()]
    except OSError:
        return []


def preloaded(project: Path, env: dict[str, str], modules: Path, mode: str):
    port = free_port()
    process = spawn_group(
        [sys.executable, "-c", PRELOADED, str(modules), mode, str(port)],
        cwd=project,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        stop_group(process)
        raise SystemExit(f"the {mode} process did not preload")
    return process, port


def first_200(port: int, path: str) -> float:
    result = poll(
        port,
        path,
        lambda r: r.ok,
        max_seconds=START_DEADLINE,
        max_polls=MAX_POLLS,
        interval=0.005,
    )
    if result.hit is None:
        raise SystemExit(f"no 200 from {path} within {START_DEADLINE} s")
    return result.hit.done


def trial(project: Path, env: dict[str, str], modules: Path, mode: str, path: str):
    if mode == "cold":
        port = free_port()
        started = time.perf_counter()
        process = spawn_group(
            [
                sys.executable,
                "manage.py",
                "runserver",
                "--noreload",
                f"127.0.0.1:{port}",
            ],
            cwd=project,
            env=env,
        )
        seconds = first_200(port, path) - started
        memory = pss_kib(process.pid)
    else:
        process, port = preloaded(project, env, modules, mode)
        waiting = pss_kib(process.pid)
        assert process.stdin is not None
        started = time.perf_counter()
        process.stdin.write("go\n")
        process.stdin.flush()
        seconds = first_200(port, path) - started
        if mode == "fork":
            child = children(process.pid)
            memory = pss_kib(process.pid) + sum(pss_kib(c) for c in child)
        else:
            # A spare serves; the next spare, preloaded, waits beside it.
            memory = pss_kib(process.pid) + waiting
    stop_group(process)
    return seconds, memory


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, help="a project with manage.py")
    parser.add_argument("--settings", default="", help="DJANGO_SETTINGS_MODULE")
    parser.add_argument("--path", default="/hello/", help="the URL polled")
    parser.add_argument("--trials", type=int, default=7)
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("warm_designs.py reads /proc: Linux only", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="rsp-warm-designs-") as tmp:
        project = args.project
        if project is None:
            project = copy_testproject(Path(tmp))
            migrate(project)
        env = server_env(django_runserver=False)
        if args.settings:
            env["DJANGO_SETTINGS_MODULE"] = args.settings
        listed = subprocess.run(
            [sys.executable, "-c", LIST_MODULES],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        modules = Path(tmp) / "modules.json"
        modules.write_text(listed.stdout)
        count = len(json.loads(listed.stdout))
        print(f"{project}: {count} modules to preload", flush=True)
        results: dict[str, list[tuple[float, int]]] = {
            "cold": [],
            "spare": [],
            "fork": [],
        }
        for number in range(args.trials):
            for mode, rows in results.items():
                rows.append(trial(project, env, modules, mode, args.path))
            print(f"  trial {number + 1}/{args.trials} done", flush=True)
    cold = statistics.median(s for s, _ in results["cold"])
    print(f"\n{'design':8} {'start (median)':>15} {'/ cold':>7} {'PSS MiB':>8}")
    for mode, rows in results.items():
        seconds = statistics.median(s for s, _ in rows)
        memory = statistics.median(m for _, m in rows) / 1024
        print(f"{mode:8} {seconds * 1000:12.0f} ms {seconds / cold:7.2f} {memory:8.1f}")
    print(
        "\nstart: from the spawn (cold) or the go (spare, fork) to the first 200;"
        "\nPSS: cold, the worker; spare, the worker and the next spare; fork, the"
        "\nchild serving and its preloaded parent."
    )
    return 0

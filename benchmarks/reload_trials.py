"""The reload benchmark's measurements: edits, breakages, starts, idle windows."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .reload_procs import Probe, ReloadingServer, command_line, poll, probe
from .reload_project import MARKER, VERSION_LINE, write_source

OURS = "runserver_plus"
DJANGO = "django"
WATCHFILES = "django-watchfiles"
#: runserver_plus with --no-preload: a reference row of the large project's
#: .py saves (no spaces: the name goes into BENCH_VERSION and a file name).
NO_PRELOAD = "runserver_plus-no-preload"

RELOAD_DEADLINE = 20.0  # s, for one edit (or fix) to be served
BROKEN_DEADLINE = 10.0  # s, for a syntax error to show
MAX_POLLS = 3000  # per edit, at one poll per 10 ms: the deadline comes first
SETTLE = (0.7, 1.2)  # s, pause after the new code is served: uniform in this range
#: s, pause after the breakage is visible, before the fix. Django's reloader
#: only sees a change to a file it has seen once: the file of a failed import
#: is first seen at the child's next 1 s tick (django-watchfiles: once it
#: watches it), later on a large project. A fix written before then is never
#: seen: on the large project, with 1 s, Django missed 3 fixes out of 3;
#: with 2 s none out of 4, and django-watchfiles none out of 4.
BROKEN_SETTLE = 2.5
IDLE_SETTLE = 5.0  # s, quiet time after start-up before the idle window
WATCH_STABLE_TIMEOUT = 60.0  # s, for the inotify watch counts to stop changing
WARM_READY_TIMEOUT = 30.0  # s, for runserver_plus's next warm process to be ready
FLOOR_TIMEOUT = 120.0  # s, for one run of reload_floor.py
FLOOR_SCRIPT = Path(__file__).resolve().parent / "reload_floor.py"

#: What runserver_plus's supervisor prints at -v 2 for each worker it starts
#: after the first, and at -v 3 when a warm process has preloaded.
STARTED_LINE = re.compile(
    r"Started the worker (?:warm: (\d+) modules were preloaded|cold: (.*))\.$",
    re.MULTILINE,
)
READY_LINE = re.compile(
    r"A warm process \(pid (\d+)\) is ready: (\d+) modules preloaded\.$",
    re.MULTILINE,
)


def worker_starts(text: str) -> list[str]:
    """How each worker named in ``text`` (the supervisor's output) started:
    "warm" with the modules preloaded, or "cold: <reason>"."""
    return [
        f"warm {match.group(1)}" if match.group(1) else f"cold: {match.group(2)}"
        for match in STARTED_LINE.finditer(text)
    ]


def after_reload(
    server: ReloadingServer, offset: int, served_at: float
) -> dict[str, Any]:
    """runserver_plus's side of a reload whose output began at ``offset``:
    how its workers started and, when preloading, the time from ``served_at``
    until the next warm process was ready. That wait happens before the
    settle pause, so no server's edit overlaps runserver_plus's preloading
    (at a low priority, it would take the CPU from nothing but the client).

    A developer saves seconds apart, and the warm process is ready by then.
    """
    if server.kind != OURS:
        return {}
    outcome: dict[str, Any] = {"starts": worker_starts(server.stderr_since(offset))}
    if server.preload and outcome["starts"]:
        ready = server.wait_for_stderr(READY_LINE, offset, WARM_READY_TIMEOUT)
        outcome["warm_ready_s"] = (
            time.perf_counter() - served_at if ready is not None else None
        )
    return outcome


def floor_seconds(server: ReloadingServer) -> float:
    """One run of reload_floor.py on ``server``'s project, with its settings:
    the work any warm restart has left after a save, timed alone. The list
    of modules to preload is made once per project, beside it."""
    listing = server.project.parent / "floor-modules.json"
    runs = ([] if listing.exists() else ["list"]) + ["measure"]
    for mode in runs:
        try:
            done = subprocess.run(
                [sys.executable, str(FLOOR_SCRIPT), mode, str(listing)],
                cwd=server.project,
                env=server.env,
                capture_output=True,
                text=True,
                timeout=FLOOR_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            server.fail(f"reload_floor.py {mode} took over {FLOOR_TIMEOUT:.0f} s")
        if done.returncode:
            server.fail(f"reload_floor.py {mode} failed:\n{done.stderr[-2000:]}")
    seconds: float = json.loads(done.stdout)["seconds"]
    return seconds


def settle(rng: random.Random) -> None:
    # A random pause, so edits do not fall at one phase of StatReloader's 1 s tick.
    time.sleep(rng.uniform(*SETTLE))


def version_of(result: Probe) -> tuple[str, int]:
    version, pid = result.body.decode().split()
    return version, int(pid)


def has_version(result: Probe) -> bool:
    """Whether a 200 from /bench-version/ has a whole body: Django's old child
    can exit with the body of a response unsent, and without a Content-Length
    the client then reads an empty body."""
    try:
        version_of(result)
    except ValueError:
        return False
    return True


def current_version(server: ReloadingServer) -> tuple[str, int]:
    result = probe(server.port, "/bench-version/")
    if not (result.ok and has_version(result)):
        server.check_alive()
        server.fail(
            f"/bench-version/ answered {result.failure or result.body!r} before an edit"
        )
    return version_of(result)


def py_edit_trial(server: ReloadingServer, project: Path, label: str) -> dict[str, Any]:
    """Change BENCH_VERSION in views.py; time until a response has the new value."""
    _old, old_pid = current_version(server)
    views = project / "testapp" / "views.py"
    text = VERSION_LINE.sub(f'BENCH_VERSION = "{label}"', views.read_text())
    stderr_offset = server.stderr_size()
    saved, bumped = write_source(views, text)

    def served(result: Probe) -> bool:
        return result.ok and version_of(result)[0] == label

    result = poll(
        server.port,
        "/bench-version/",
        served,
        max_seconds=RELOAD_DEADLINE,
        max_polls=MAX_POLLS,
        valid=has_version,
    )
    if result.hit is None:
        server.check_alive()
        server.fail(f".py edit {label} not served within {RELOAD_DEADLINE:.0f} s")
    assert result.hit is not None
    outcome = {
        "seconds": result.hit.done - saved,
        "polls": result.polls,
        "failed": result.failed,
        "failures": result.failures,
        "failure_times_ms": result.failure_times,
        "pid_before": old_pid,
        "pid_after": version_of(result.hit)[1],
        "mtime_bumped": bumped,
        **after_reload(server, stderr_offset, result.hit.done),
    }
    if server.preload:
        # Right after the save it bounds, in the same minute as the servers'.
        outcome["floor_s"] = floor_seconds(server)
    if result.failed and server.kind == OURS:
        # For the diagnosis: what the supervisor and workers said meanwhile.
        outcome["stderr"] = server.stderr_since(stderr_offset)[-4000:]
    return outcome


def serving_pid(server: ReloadingServer) -> int:
    result = probe(server.port, "/pid/")
    if not result.ok:
        server.check_alive()
        server.fail(f"/pid/ answered {result.failure}")
    pid: int = json.loads(result.body)["pid"]
    return pid


def template_trial(
    server: ReloadingServer, project: Path, label: str
) -> dict[str, Any]:
    """Change the marker text in page.html; time until /page/ shows it."""
    pid_before = serving_pid(server)
    page = project / "testapp" / "templates" / "testapp" / "page.html"
    # View the page first, as a developer would: the template is then in the
    # cached loader of this very process, so only a reset shows the edit.
    shown = probe(server.port, "/page/")
    current = MARKER.search(page.read_text())
    if not (shown.ok and current and current.group().encode() in shown.body):
        server.check_alive()
        server.fail(f"/page/ did not show the current marker before edit {label}")
    marker = f"bench-mark-{label}"
    stderr_offset = server.stderr_size()
    saved, bumped = write_source(page, MARKER.sub(marker, page.read_text()))
    result = poll(
        server.port,
        "/page/",
        lambda r: r.ok and marker.encode() in r.body,
        max_seconds=RELOAD_DEADLINE,
        max_polls=MAX_POLLS,
    )
    if result.hit is None:
        server.check_alive()
        server.fail(f"template edit {label} not served within {RELOAD_DEADLINE:.0f} s")
    assert result.hit is not None
    pid_after = serving_pid(server)
    return {
        "seconds": result.hit.done - saved,
        "polls": result.polls,
        "failed": result.failed,
        "failures": result.failures,
        "failure_times_ms": result.failure_times,
        "pid_before": pid_before,
        "pid_after": pid_after,
        "restarted": pid_after != pid_before,
        "mtime_bumped": bumped,
        **after_reload(server, stderr_offset, result.hit.done),
    }


def syntax_trial(server: ReloadingServer, project: Path, label: str) -> dict[str, Any]:
    """Break views.py with a SyntaxError, wait until that shows, fix it, and
    time from the fix to the first 200 from /hello/.

    A server that never shows the breakage, or never recovers, gives a trial
    with an "error" (the caller restarts it) rather than ending the run.
    """
    current_version(server)
    views = project / "testapp" / "views.py"
    good = VERSION_LINE.sub(f'BENCH_VERSION = "{label}"', views.read_text())
    stderr_offset = server.stderr_size()
    broken_at, _ = write_source(views, good + "\n\ndef broken(:\n    pass\n")

    def visibly_broken(result: Probe) -> bool:
        if "SyntaxError" not in server.stderr_since(stderr_offset):
            return False
        if server.kind == OURS:
            # The supervisor's error page, with the traceback.
            return result.status == 500 and b"SyntaxError" in result.body
        return result.status is None  # nothing listens

    broken = poll(
        server.port,
        "/hello/",
        visibly_broken,
        max_seconds=BROKEN_DEADLINE,
        max_polls=MAX_POLLS,
    )
    server.check_alive()
    errors = []
    if broken.hit is None:
        errors.append(
            f"the breakage did not show within {BROKEN_DEADLINE:.0f} s "
            f"(polls failed: {broken.failures})"
        )
    else:
        time.sleep(BROKEN_SETTLE)  # Django's reloader sees the broken file
    warm_wait = None
    if server.preload and broken.hit is not None:
        # The error page's supervisor prepares a warm process for the fix.
        waited_from = time.perf_counter()
        ready = server.wait_for_stderr(READY_LINE, stderr_offset, WARM_READY_TIMEOUT)
        warm_wait = time.perf_counter() - waited_from if ready else None
    fix_offset = server.stderr_size()
    fixed_at, bumped = write_source(views, good)
    result = poll(
        server.port,
        "/hello/",
        lambda r: r.ok,
        max_seconds=RELOAD_DEADLINE,
        max_polls=MAX_POLLS,
    )
    server.check_alive()
    if result.hit is None:
        errors.append(
            f"no 200 from /hello/ within {RELOAD_DEADLINE:.0f} s of the fix "
            f"(polls failed: {result.failures})"
        )
        return {
            "error": "; ".join(errors),
            "output_tail": server.output(3000),
            "polls": result.polls,
            "seconds": None,
        }
    confirmed = probe(server.port, "/bench-version/")
    outcome = {
        "seconds": result.hit.done - fixed_at,
        "broken_after_seconds": broken.hit.done - broken_at if broken.hit else None,
        "broken_response": broken.hit.failure if broken.hit else None,
        "polls": result.polls,
        "non_200_before_recovery": result.failed,
        "failures": result.failures,
        "fixed_code_served": confirmed.ok
        and has_version(confirmed)
        and version_of(confirmed)[0] == label,
        "mtime_bumped": bumped,
        "warm_wait_before_fix_s": warm_wait,
        **after_reload(server, fix_offset, result.hit.done),
    }
    if server.kind == OURS:
        # The broken worker's start and the fixed one's.
        outcome["starts"] = worker_starts(server.stderr_since(stderr_offset))
    if errors:
        outcome["error"] = "; ".join(errors)
    return outcome


def interleave(
    servers: dict[str, tuple[ReloadingServer, Path]],
    count: int,
    trial: Callable[[ReloadingServer, Path, str], dict[str, Any]],
    *,
    title: str,
    prefix: str,
    rng: random.Random,
) -> dict[str, list[dict[str, Any]]]:
    """``count`` trials per server, alternating servers, with a settle after each."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    for number in range(1, count + 1):
        for name, (server, project) in servers.items():
            server.check_alive()
            outcome = trial(
                server, project, f"{prefix}{number}-{name.replace('_', '-')}"
            )
            results[name].append(outcome)
            failed = outcome.get("failed", outcome.get("non_200_before_recovery", 0))
            seconds = outcome["seconds"]
            shown = f"{seconds * 1000:7.0f} ms" if seconds is not None else "   FAILED"
            starts = ", ".join(outcome.get("starts", []))
            floor = outcome.get("floor_s")
            print(
                f"  {title} {number:2}/{count} {name:25} {shown}"
                f"  polls {outcome['polls']:4}  failed {failed}"
                + (f"  started {starts}" if starts else "")
                + (f"  floor {floor * 1000:.0f} ms" if floor is not None else ""),
                flush=True,
            )
            if failed and server.kind == OURS and outcome.get("failure_times_ms"):
                print(
                    f"    failures (ms after the save): {outcome['failure_times_ms']}"
                )
            if "error" in outcome:
                print(f"    {name}: {outcome['error']}", flush=True)
                if seconds is None:
                    print(outcome["output_tail"], flush=True)
                    print(f"    restarting {name} ...", flush=True)
                    server.stop()
                    server.start()
            settle(rng)
    return results


def cold_starts(
    servers: dict[str, ReloadingServer], count: int
) -> dict[str, list[dict[str, Any]]]:
    """One discarded warm-up start each, then ``count`` interleaved starts each."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    for number in range(count + 1):
        for name, server in servers.items():
            seconds = server.start()
            log = server.log_text()
            code = server.stop()
            label = "warm-up" if number == 0 else f"{number:2}/{count}"
            print(
                f"  cold start {label:7} {name:25} {seconds * 1000:7.0f} ms", flush=True
            )
            if number:
                results[name].append(
                    {
                        "seconds": seconds,
                        "exit_code": code,
                        "reloader_line": reloader_line(log),
                    }
                )
    return results


def reloader_line(log: str) -> str:
    found = re.search(r"Watching for file changes with (\w+)", log)
    return found.group(1) if found else ""


def modules_served(server: ReloadingServer) -> int:
    """How many modules the serving process has imported (/bench-modules/)."""
    result = probe(server.port, "/bench-modules/")
    if not result.ok:
        server.check_alive()
        server.fail(f"/bench-modules/ answered {result.failure}")
    count: int = json.loads(result.body)["modules"]
    return count


def memory(server: ReloadingServer) -> dict[str, Any]:
    """The PSS of each process of the group, by role: the group leader is the
    supervisor (Django: the reloader's parent), the process that answers
    /bench-version/ the worker (Django: the child), any other one runserver_plus's
    warm process, which should be the one the supervisor last said was ready
    (a warm process found unsafe gives way to another)."""
    worker = current_version(server)[1]
    said = READY_LINE.findall(server.stderr_since(0)) if server.preload else []
    warm_pid = int(said[-1][0]) if said else None
    processes = []
    for pid, pss in server.pss().items():
        if pid == server.pgid:
            role = "supervisor" if server.kind == OURS else "parent"
        elif pid == worker:
            role = "worker" if server.kind == OURS else "child"
        else:
            role = "warm" if server.kind == OURS else "other"
        processes.append(
            {"pid": pid, "role": role, "pss_kib": pss, "command": command_line(pid)}
        )
    by_role: dict[str, int] = {}
    for process in processes:
        by_role[process["role"]] = by_role.get(process["role"], 0) + (
            process["pss_kib"] or 0
        )
    warm = [p["pid"] for p in processes if p["role"] == "warm"]
    return {
        "pss_kib": sum(p["pss_kib"] or 0 for p in processes),
        "pss_kib_by_role": by_role,
        "processes": processes,
        "worker_pid": worker,
        "warm_pids": warm,
        "warm_pid_said_ready": warm_pid,
        # Exactly one warm process, the one the supervisor said was ready.
        "warm_identified": server.preload
        and warm == ([warm_pid] if warm_pid else ["?"]),
    }


def idle_and_watches(
    servers: dict[str, ReloadingServer], seconds: float, what: str
) -> dict[str, dict[str, Any]]:
    """Start every server on one copy (``what`` it is, for the messages), let
    start-up settle, then measure each group's CPU time over ``seconds``, its
    inotify watches and its memory (PSS of each process)."""
    for name, server in servers.items():
        print(f"  starting {name} on {what} ...", flush=True)
        server.start()
        for path in ("/hello/", "/page/", "/bench-version/", "/pid/"):
            result = probe(server.port, path)
            if not result.ok:
                server.fail(f"{path} answered {result.failure}")
    for name, server in servers.items():
        if server.preload:
            # runserver_plus's warm process preloads after the first worker
            # serves: the idle window begins once it is ready.
            ready = server.wait_for_stderr(READY_LINE, 0, WARM_READY_TIMEOUT)
            if ready is None:
                print(
                    f"  ({name} said no warm process was ready within "
                    f"{WARM_READY_TIMEOUT:.0f} s)",
                    flush=True,
                )
    quiet_from = time.perf_counter()
    # Recursive watches over large trees take a while to set up: wait until no
    # group's count changed for a whole second, and for IDLE_SETTLE at least.
    previous = {name: s.inotify() for name, s in servers.items()}
    deadline = quiet_from + WATCH_STABLE_TIMEOUT
    while time.perf_counter() < deadline:
        time.sleep(1.0)  # sampling interval of the watch counts
        current = {name: s.inotify() for name, s in servers.items()}
        stable = current == previous
        previous = current
        if stable and time.perf_counter() - quiet_from >= IDLE_SETTLE:
            break
    else:
        print(
            "  (watch counts were still changing after "
            f"{WATCH_STABLE_TIMEOUT:.0f} s; measuring anyway)",
            flush=True,
        )
    for server in servers.values():
        server.check_alive()
    before = {name: s.cpu() for name, s in servers.items()}
    threads_before = {name: s.threads() for name, s in servers.items()}
    started = time.perf_counter()
    time.sleep(seconds)  # the measurement window: the servers are left alone
    elapsed = time.perf_counter() - started
    after = {name: s.cpu() for name, s in servers.items()}
    threads_after = {name: s.threads() for name, s in servers.items()}
    results: dict[str, dict[str, Any]] = {}
    for name, server in servers.items():
        server.check_alive()
        pids = sorted(set(before[name]) | set(after[name]))
        per_process = {
            pid: after[name].get(pid, 0.0) - before[name].get(pid, 0.0) for pid in pids
        }
        watches = server.inotify()
        mem = memory(server)
        roles = {process["pid"]: process["role"] for process in mem["processes"]}
        processes: list[dict[str, Any]] = []
        for pid in pids:
            threads: list[dict[str, Any]] = []
            for tid, (thread, on_cpu, switches) in sorted(
                threads_after[name].get(pid, {}).items()
            ):
                _, on_cpu_before, switches_before = (
                    threads_before[name].get(pid, {}).get(tid, (thread, 0, 0))
                )
                threads.append(
                    {
                        "tid": tid,
                        "name": thread,
                        "on_cpu_ms": (on_cpu - on_cpu_before) / 1e6,
                        "wakeups_per_s": (switches - switches_before) / elapsed,
                    }
                )
            processes.append(
                {
                    "pid": pid,
                    "role": roles.get(pid, "gone"),
                    "cpu_seconds": per_process[pid],
                    "on_cpu_seconds": sum(t["on_cpu_ms"] for t in threads) / 1000,
                    "inotify_instances": watches.get(pid, (0, 0))[0],
                    "inotify_watches": watches.get(pid, (0, 0))[1],
                    "command": command_line(pid),
                    "threads": threads,
                }
            )
        on_cpu = sum(p["on_cpu_seconds"] for p in processes)
        results[name] = {
            "cpu_seconds": sum(per_process.values()),
            "on_cpu_seconds": on_cpu,
            "window_seconds": elapsed,
            "on_cpu_percent_of_one_core": 100 * on_cpu / elapsed,
            "processes_changed": set(before[name]) != set(after[name]),
            "per_process": processes,
            "inotify_instances": sum(i for i, _ in watches.values()),
            "inotify_watches": sum(w for _, w in watches.values()),
            "reloader_line": reloader_line(server.log_text()),
            "memory": mem,
            "modules_in_worker": modules_served(server),
        }
        pss = results[name]["memory"]["pss_kib_by_role"]
        print(
            f"  idle {name:18} {on_cpu * 1000:6.1f} ms on CPU over {elapsed:.1f} s "
            f"(utime+stime {results[name]['cpu_seconds']:.2f} s); inotify watches "
            f"{results[name]['inotify_watches']}; PSS "
            + ", ".join(f"{role} {kib / 1024:.1f} MiB" for role, kib in pss.items()),
            flush=True,
        )
    return results

"""The reload benchmark's measurements: edits, breakages, starts, idle windows."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reload_procs import Probe, ReloadingServer, command_line, poll, probe
from reload_project import MARKER, VERSION_LINE, write_source

OURS = "runserver_plus"
DJANGO = "django"
WATCHFILES = "django-watchfiles"

RELOAD_DEADLINE = 20.0  # s, for one edit (or fix) to be served
BROKEN_DEADLINE = 10.0  # s, for a syntax error to show
MAX_POLLS = 3000  # per edit, at one poll per 10 ms: the deadline comes first
SETTLE = (0.7, 1.2)  # s, pause after the new code is served: uniform in this range
BROKEN_SETTLE = 1.0  # s, pause after the breakage is visible, before the fix
IDLE_SETTLE = 5.0  # s, quiet time after start-up before the idle window
WATCH_STABLE_TIMEOUT = 60.0  # s, for the inotify watch counts to stop changing


def settle(rng: random.Random) -> None:
    # A random pause, so edits do not fall at one phase of StatReloader's 1 s tick.
    time.sleep(rng.uniform(*SETTLE))


def version_of(result: Probe) -> tuple[str, int]:
    version, pid = result.body.decode().split()
    return version, int(pid)


def current_version(server: ReloadingServer) -> tuple[str, int]:
    result = probe(server.port, "/bench-version/")
    if not result.ok:
        server.check_alive()
        server.fail(f"/bench-version/ answered {result.failure} before an edit")
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
    }
    if result.failed and server.name == OURS:
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
        if server.name == OURS:
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
        time.sleep(BROKEN_SETTLE)  # the broken state settles (Django's first snapshot)
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
        "fixed_code_served": confirmed.ok and version_of(confirmed)[0] == label,
        "mtime_bumped": bumped,
    }
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
            print(
                f"  {title} {number:2}/{count} {name:15} {shown}"
                f"  polls {outcome['polls']:4}  failed {failed}",
                flush=True,
            )
            if failed and name == OURS and outcome.get("failure_times_ms"):
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
                f"  cold start {label:7} {name:15} {seconds * 1000:7.0f} ms", flush=True
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


def idle_and_watches(
    servers: dict[str, ReloadingServer], seconds: float
) -> dict[str, dict[str, Any]]:
    """Start every server on the large-tree copy, let start-up settle, then
    measure each group's CPU time over ``seconds`` and its inotify watches."""
    for name, server in servers.items():
        print(f"  starting {name} on the large tree ...", flush=True)
        server.start()
        for path in ("/hello/", "/page/", "/bench-version/", "/pid/"):
            result = probe(server.port, path)
            if not result.ok:
                server.fail(f"{path} answered {result.failure}")
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
                    "role": "parent" if pid == server.pgid else "child",
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
        }
        print(
            f"  idle {name:18} {on_cpu * 1000:6.1f} ms on CPU over {elapsed:.1f} s "
            f"(utime+stime {results[name]['cpu_seconds']:.2f} s); inotify watches "
            f"{results[name]['inotify_watches']}",
            flush=True,
        )
    return results

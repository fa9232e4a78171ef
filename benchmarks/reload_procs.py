"""A reloading `manage.py runserver` in a session of its own, seen through /proc."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .servers import ServerError, free_port, group_pids, spawn_runserver, stop_group

START_TIMEOUT = 60.0  # s, from spawn to the first 200 from the ready path
STOP_TIMEOUT = 10.0  # s, from SIGTERM to an empty process group, before SIGKILL
PROBE_TIMEOUT = 10.0  # s, per request of a probe (our server queues during restarts)
POLL_INTERVAL = 0.01  # s, between the starts of two probes
MAX_FAILURE_TIMES = 200  # failures whose time a poll keeps
LOG_POLL_INTERVAL = 0.02  # s, between two reads of a server's stderr file
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- one HTTP request on a fresh connection -----------------------------------


@dataclass(frozen=True)
class Probe:
    """One GET on a fresh connection: the status (None when it failed), the
    body, the failure's name, and the perf_counter() time it completed."""

    status: int | None
    body: bytes
    error: str
    done: float

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def failure(self) -> str:
        """'' for a 200, else what went wrong: an exception name or 'HTTP <status>'."""
        if self.status is None:
            return self.error
        return "" if self.status == 200 else f"HTTP {self.status}"


def probe(port: int, path: str, timeout: float = PROBE_TIMEOUT) -> Probe:
    """GET ``path`` from 127.0.0.1:``port`` on a new connection, closed afterwards."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
        return Probe(response.status, body, "", time.perf_counter())
    except (OSError, http.client.HTTPException) as error:
        return Probe(None, b"", type(error).__name__, time.perf_counter())
    finally:
        conn.close()


@dataclass
class PollResult:
    """Probes every POLL_INTERVAL until one satisfied the condition (``hit``)."""

    hit: Probe | None
    polls: int
    failures: dict[str, int]
    #: (ms after the poll began, failure) of the first MAX_FAILURE_TIMES failures.
    failure_times: list[tuple[float, str]]

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


def poll(
    port: int,
    path: str,
    done: Callable[[Probe], bool],
    *,
    max_seconds: float,
    max_polls: int,
    interval: float = POLL_INTERVAL,
    valid: Callable[[Probe], bool] | None = None,
) -> PollResult:
    """Probe ``path`` every ``interval`` (fresh connection each time) until
    ``done(probe)`` is true, at most ``max_polls`` times and ``max_seconds``.

    Failures (refused, reset, timeout, non-200, and a 200 whose body
    ``valid`` rejects: a response cut short by a process that exits) are
    counted by kind, the satisfying probe too if it is one (a 500 the caller
    waits for, say).
    """
    start = time.perf_counter()
    failures: dict[str, int] = {}
    times: list[tuple[float, str]] = []
    for count in range(1, max_polls + 1):
        sent = time.perf_counter()
        result = probe(port, path)
        if result.ok and valid is not None and not valid(result):
            result = Probe(None, result.body, "invalid 200 body", result.done)
        if result.failure:
            failures[result.failure] = failures.get(result.failure, 0) + 1
            if len(times) < MAX_FAILURE_TIMES:
                times.append((round((sent - start) * 1000, 1), result.failure))
        if done(result):
            return PollResult(result, count, failures, times)
        now = time.perf_counter()
        if now - start > max_seconds:
            return PollResult(None, count, failures, times)
        next_start = start + count * interval
        if next_start > now:
            time.sleep(next_start - now)  # pacing of the poll, not synchronisation
    return PollResult(None, max_polls, failures, times)


# --- the process group in /proc ------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: field 3 (state) is index 0."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds; 0 when gone."""
    fields = _stat_fields(pid)
    if not fields:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def thread_stats(pid: int) -> dict[int, tuple[str, int, int]]:
    """Per thread of ``pid``: (name, nanoseconds on a CPU, voluntary context
    switches), from /proc/<pid>/task/*/{comm,schedstat,status}.

    schedstat counts in nanoseconds; utime/stime in /proc/<pid>/stat count
    clock ticks (10 ms), too coarse for an idle server's 20 seconds.
    """
    stats = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    for tid in tids:
        task = f"/proc/{pid}/task/{tid}"
        try:
            name = Path(f"{task}/comm").read_text().strip()
            on_cpu = int(Path(f"{task}/schedstat").read_text().split()[0])
            status = Path(f"{task}/status").read_text()
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
        switches = 0
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                switches = int(line.split()[1])
        stats[int(tid)] = (name, on_cpu, switches)
    return stats


def inotify_watches(pid: int) -> tuple[int, int]:
    """(inotify instances, watches) held by ``pid``, from /proc/<pid>/fd{,info}."""
    instances = watches = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0, 0
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            lines = Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines()
        except OSError:
            continue  # closed meanwhile
        instances += 1
        watches += sum(1 for line in lines if line.startswith("inotify wd:"))
    return instances, watches


def pss_kib(pid: int) -> int | None:
    """The proportional set size of ``pid`` in KiB (``Pss:`` of
    /proc/<pid>/smaps_rollup): its private pages plus its share of the pages
    it shares with other processes; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return None


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


# --- a reloading server ----------------------------------------------------------


class ReloadingServer:
    """``python manage.py runserver 127.0.0.1:<port> [args]`` WITH its reloader,
    in a new session (so its process group holds exactly its processes).

    Output goes to files, one pair per start; :meth:`output` reads them back.
    """

    def __init__(
        self,
        name: str,
        project: Path,
        env: Mapping[str, str],
        extra_args: Sequence[str] = (),
        *,
        kind: str = "",
        preload: bool = False,
    ) -> None:
        self.name = name
        #: Which server this is (runserver_plus, django, django-watchfiles),
        #: whatever the name of this instance: the trials judge by it.
        self.kind = kind or name
        #: Whether a warm process is expected: runserver_plus with preloading
        #: and ``-v 3``, which says when one is ready.
        self.preload = preload
        self.project = project
        self.env = dict(env)
        self.extra_args = tuple(extra_args)
        self.port = 0
        self.starts = 0
        self.spawned_at = 0.0
        self.exit_code: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_dir = project.parent / f"log-{name}"

    # --- life cycle

    def spawn(self) -> float:
        """Start the server; returns the perf_counter() time just before the spawn."""
        self._log_dir.mkdir(exist_ok=True)
        self.starts += 1
        self.port = free_port()
        self.exit_code = None
        self.spawned_at = time.perf_counter()
        self._proc = spawn_runserver(
            self.project,
            self.env,
            self.port,
            self.extra_args,
            stdout_path=self._log(".stdout"),
            stderr_path=self._log(".stderr"),
        )
        return self.spawned_at

    def wait_ready(
        self, path: str = "/hello/", timeout: float = START_TIMEOUT
    ) -> Probe:
        """Probe ``path`` every POLL_INTERVAL until a 200; raise with the output
        if the server exits or the deadline passes."""
        deadline = time.perf_counter() + timeout
        count = 0
        while time.perf_counter() < deadline and count < timeout / POLL_INTERVAL:
            count += 1
            result = probe(self.port, path)
            if result.ok:
                return result
            self.check_alive()
            pause = self.spawned_at + count * POLL_INTERVAL - time.perf_counter()
            if pause > 0:
                time.sleep(pause)  # pacing of the poll
        self.fail(f"no 200 from {path} within {timeout:.0f} s of the start")
        raise AssertionError("unreachable")

    def start(self, path: str = "/hello/") -> float:
        """Spawn and wait for the first 200: the seconds from spawn to it."""
        spawned = self.spawn()
        ready = self.wait_ready(path)
        return ready.done - spawned

    def check_alive(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            self.exit_code = proc.returncode
            self._proc = None
            raise ServerError(
                f"{self.name} exited with code {self.exit_code}.\n{self.output()}"
            )

    def fail(self, message: str) -> None:
        """Raise ServerError with the message and the server's output."""
        raise ServerError(f"{self.name}: {message}\n{self.output()}")

    def stop(self) -> int | None:
        """Stop the server's process group (``stop_group``); the leader's
        exit code."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self.exit_code = stop_group(proc, STOP_TIMEOUT)
        return self.exit_code

    # --- inspection

    @property
    def pgid(self) -> int:
        assert self._proc is not None, f"{self.name} is not running"
        return self._proc.pid

    def pids(self) -> list[int]:
        return group_pids(self.pgid)

    def cpu(self) -> dict[int, float]:
        """CPU seconds so far of each process of the group."""
        return {pid: cpu_seconds(pid) for pid in self.pids()}

    def threads(self) -> dict[int, dict[int, tuple[str, int, int]]]:
        """:func:`thread_stats` of each process of the group."""
        return {pid: thread_stats(pid) for pid in self.pids()}

    def inotify(self) -> dict[int, tuple[int, int]]:
        """(instances, watches) of each process of the group."""
        return {pid: inotify_watches(pid) for pid in self.pids()}

    def pss(self) -> dict[int, int | None]:
        """:func:`pss_kib` of each process of the group."""
        return {pid: pss_kib(pid) for pid in self.pids()}

    def _log(self, suffix: str) -> Path:
        return self._log_dir / f"start{self.starts}{suffix}"

    def log_size(self) -> int:
        """Bytes written so far to this start's stdout and stderr together."""
        return sum(
            p.stat().st_size
            for p in (self._log(".stdout"), self._log(".stderr"))
            if p.exists()
        )

    def log_text(self) -> str:
        return "".join(
            p.read_text(errors="replace")
            for p in (self._log(".stdout"), self._log(".stderr"))
            if p.exists()
        )

    def stderr_size(self) -> int:
        path = self._log(".stderr")
        return path.stat().st_size if path.exists() else 0

    def stderr_since(self, offset: int) -> str:
        """What the server wrote to stderr after ``offset`` bytes."""
        path = self._log(".stderr")
        if not path.exists():
            return ""
        with open(path, "rb") as stream:
            stream.seek(offset)
            return stream.read().decode(errors="replace")

    def wait_for_stderr(
        self, pattern: re.Pattern[str], offset: int, timeout: float
    ) -> re.Match[str] | None:
        """The first match of ``pattern`` in what stderr got after ``offset``,
        reading the file every LOG_POLL_INTERVAL until it appears, the server
        exits or ``timeout`` passes (then None)."""
        deadline = time.perf_counter() + timeout
        for _ in range(int(timeout / LOG_POLL_INTERVAL) + 1):
            found = pattern.search(self.stderr_since(offset))
            if found or time.perf_counter() > deadline:
                return found
            self.check_alive()
            time.sleep(LOG_POLL_INTERVAL)  # pacing of the read, not synchronisation
        return None

    def output(self, limit: int = 6000) -> str:
        """The tail of this start's stdout and stderr, for error messages."""
        parts = []
        for stream in (".stdout", ".stderr"):
            path = self._log(stream)
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {self.name} {stream[1:]} ---\n{text[-limit:]}")
        return "\n".join(parts)

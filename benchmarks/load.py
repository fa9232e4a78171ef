"""Drive wrk against a URL and return its totals; install wrk when missing."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_report.lua"
WRK_REQUEST_TIMEOUT = 10  # s, wrk's per-request timeout
WRK_EXTRA_TIME = 30.0  # s, on top of the run's duration before wrk is killed
APT_TIMEOUT = 600.0  # s
JSON_MARKER = "WRK_JSON "


class LoadError(RuntimeError):
    """wrk is unavailable or produced no report."""


@dataclasses.dataclass(frozen=True)
class LoadResult:
    """wrk's totals for one run."""

    requests: int
    bytes: int
    duration_us: int
    connect_errors: int
    read_errors: int
    write_errors: int
    timeouts: int
    non_2xx_3xx: int
    latency_p50_us: int
    latency_p99_us: int

    @property
    def seconds(self) -> float:
        return self.duration_us / 1e6

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def mib_per_second(self) -> float:
        return self.bytes / self.seconds / 2**20 if self.seconds else 0.0

    @property
    def socket_errors(self) -> int:
        return (
            self.connect_errors + self.read_errors + self.write_errors + self.timeouts
        )

    @property
    def errors(self) -> int:
        """Socket errors plus responses outside 2xx/3xx."""
        return self.socket_errors + self.non_2xx_3xx


def ensure_wrk() -> str:
    """Return wrk's path, installing Debian's package when running as root."""
    path = shutil.which("wrk")
    if path:
        return path
    can_apt = hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")
    if not can_apt:
        raise LoadError(
            "wrk is not installed. Install it (Debian/Ubuntu: `apt-get install wrk`, "
            "macOS: `brew install wrk`) and run the benchmark again."
        )
    print("wrk is missing; installing it with apt-get ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, timeout=APT_TIMEOUT, check=False).returncode:
        # A fresh machine may have no package lists yet.
        subprocess.run(
            ["apt-get", "update", "-q"], env=env, timeout=APT_TIMEOUT, check=False
        )
        subprocess.run(install, env=env, timeout=APT_TIMEOUT, check=False)
    path = shutil.which("wrk")
    if not path:
        raise LoadError("`apt-get install -y wrk` did not provide a wrk command.")
    return path


def run_wrk(
    wrk: str, url: str, *, threads: int, connections: int, seconds: float
) -> LoadResult:
    """Load ``url`` over keep-alive connections for ``seconds``; wrk's totals."""
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={WRK_REQUEST_TIMEOUT}s",
        "-s",
        str(WRK_SCRIPT),
        url,
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + WRK_EXTRA_TIME,
        check=False,
    )
    for line in result.stdout.splitlines():
        if line.startswith(JSON_MARKER):
            return LoadResult(**json.loads(line[len(JSON_MARKER) :]))
    raise LoadError(
        f"wrk exited with code {result.returncode} without a report for {url}:\n"
        f"{result.stdout}{result.stderr}"
    )

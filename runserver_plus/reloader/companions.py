"""Companion commands (``--run``): started, prefixed and stopped with the supervisor.

Each command runs under a small guard process, this file run as a script:
the guard leads the command's own process group and holds, as its standard
input, the read end of a pipe whose only write end the supervisor keeps.
However the supervisor ends (a stop, a crash, ``SIGKILL``), the kernel
closes that end; the guard reads end of file and ends its whole group:
``SIGTERM``, then ``SIGKILL`` after ``STOP_TIMEOUT``. Unlike
``PR_SET_PDEATHSIG``, this reaches the command's own children too (``npx``
starts ``node``), does not fire when the thread that started the command
ends, needs no ``preexec_fn`` in a process with threads, and works beyond
Linux. The command shares the guard's standard input, which stays open
while the server runs: tools that stop when their input closes (Tailwind's
``--watch``) keep running.

This module imports nothing outside the standard library, so that it runs
as a script wherever the supervisor's interpreter runs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

#: How long companions get to end after ``SIGTERM`` before their groups are
#: killed, when the server stops and when a guard finds the supervisor gone.
STOP_TIMEOUT = 3.0  # s
#: How long the supervisor waits for a companion's output to end after it.
READER_JOIN_TIMEOUT = 1.0  # s
#: Programs that start the command worth naming: ``npx tailwindcss`` is
#: ``tailwindcss``.
LAUNCHERS = frozenset(
    {"npx", "npm", "pnpm", "yarn", "bun", "bunx", "deno", "node", "uv", "uvx",
     "poetry", "pipenv"}
)  # fmt: skip
#: Words after a launcher that are not the command either (``npm run build``).
LAUNCHER_WORDS = frozenset({"run", "exec", "x", "dlx"})
_PYTHON = re.compile(r"python3?(\.\d+)?")
#: One colour per command (ANSI foreground codes), none of them error red.
COLOURS = ("36", "35", "33", "34", "32", "96", "95", "93", "94", "92")


def short_name(argv: Sequence[str]) -> str:
    """A short name for a command's output prefix: the program, or what a
    launcher (``npx``, ``npm run``, ``python -m``) starts."""
    index = 0
    if _is_launcher(argv[0]):
        index = 1
        while index < len(argv) and (
            argv[index].startswith("-") or argv[index] in LAUNCHER_WORDS
        ):
            index += 1
        if index == len(argv):
            index = 0
    word = argv[index]
    if word.startswith("@") and "/" in word:  # an npm scope: @tailwindcss/cli
        return word[1:].split("/", 1)[0]
    return os.path.basename(word) or word


def _is_launcher(program: str) -> bool:
    name = os.path.basename(program)
    return name in LAUNCHERS or _PYTHON.fullmatch(name) is not None


def names_for(commands: Sequence[Sequence[str]]) -> list[str]:
    """Short names, unique: a repeated one gets ``-2``, ``-3``..."""
    names: list[str] = []
    for argv in commands:
        name = short_name(argv)
        candidate, number = name, 1
        while candidate in names:
            number += 1
            candidate = f"{name}-{number}"
        names.append(candidate)
    return names


def cannot_start(program: str, cwd: str) -> str | None:
    """Why ``program`` cannot be started from ``cwd``, or None when it can."""
    if os.sep in program or (os.altsep and os.altsep in program):
        path = os.path.join(cwd, program)
        if not os.path.exists(path):
            return f"{program} does not exist"
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            return f"{program} is not executable"
        return None
    if shutil.which(program) is None:
        return f"{program} was not found on PATH"
    return None


@dataclass
class _Companion:
    """One running command: its guard process and the threads that read it."""

    name: str
    command: str
    prefix: str
    process: subprocess.Popen[bytes]
    threads: list[threading.Thread] = field(default_factory=list)


class Companions:
    """The ``--run`` commands of one supervisor.

    ``start()`` starts each once (later calls do nothing); ``stop()`` ends
    every group, bounded, and may be called whether or not they started.
    """

    def __init__(
        self,
        commands: Sequence[Sequence[str]],
        cwd: str,
        write_err: Callable[[str], None],
        *,
        colour: bool,
    ) -> None:
        self.commands = [tuple(argv) for argv in commands]
        self.cwd = cwd or os.getcwd()
        self.write_err = write_err
        self.colour = colour
        self.running: list[_Companion] = []
        self._lock = threading.Lock()  # one line at a time on the console
        self._started = False
        self._stopping = False
        self._keepalive: int | None = None  # the write end of their stdin

    def start(self) -> None:
        if self._started or self._stopping or not self.commands:
            return
        self._started = True
        stdin, self._keepalive = os.pipe()
        try:
            names = names_for(self.commands)
            width = max(len(name) for name in names)
            for index, (argv, name) in enumerate(
                zip(self.commands, names, strict=True)
            ):
                prefix = f"{name:<{width}} | "
                if self.colour:
                    prefix = f"\x1b[{COLOURS[index % len(COLOURS)]}m{prefix}\x1b[0m"
                self._start_one(argv, name, prefix, stdin)
        finally:
            os.close(stdin)

    def _start_one(
        self, argv: tuple[str, ...], name: str, prefix: str, stdin: int
    ) -> None:
        command = shlex.join(argv)
        problem = cannot_start(argv[0], self.cwd)
        if problem is None:
            try:
                process = subprocess.Popen(
                    [sys.executable, os.path.abspath(__file__), *argv],
                    cwd=self.cwd,
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,  # its own session and process group
                )
            except OSError as error:
                problem = error.strerror or str(error)
        if problem is not None:
            self._say(f'--run "{command}" cannot start: {problem}. The server runs on.')
            return
        companion = _Companion(name, command, prefix, process)
        assert process.stdout is not None
        assert process.stderr is not None
        for pipe, stream in (
            (process.stdout, sys.stdout),
            (process.stderr, sys.stderr),
        ):
            companion.threads.append(self._thread(self._relay, companion, pipe, stream))
        self._thread(self._wait, companion)
        self.running.append(companion)

    @staticmethod
    def _thread(target: Callable[..., None], *args: object) -> threading.Thread:
        thread = threading.Thread(
            target=target, args=args, name="runserver_plus-companion", daemon=True
        )
        thread.start()
        return thread

    def _relay(self, companion: _Companion, pipe: IO[bytes], stream: IO[str]) -> None:
        """Copy one output of a command to ours, each line with its prefix."""
        out = getattr(stream, "buffer", None)
        prefix = companion.prefix.encode()
        for line in iter(pipe.readline, b""):
            with self._lock:
                if out is not None:
                    out.write(prefix + line + (b"" if line.endswith(b"\n") else b"\n"))
                    out.flush()
                else:  # pragma: no cover - a stream without bytes (tests' capture)
                    text = line.decode("utf-8", "replace").rstrip("\n")
                    stream.write(f"{companion.prefix}{text}\n")
                    stream.flush()
        pipe.close()

    def _wait(self, companion: _Companion) -> None:
        code = companion.process.wait()
        if self._stopping:
            return
        # Its last lines first, then the report: once, and no restart.
        for thread in companion.threads:
            thread.join(READER_JOIN_TIMEOUT)
        if code < 0:
            try:
                how = f"was ended by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was ended by signal {-code}"
        else:
            how = f"exited with status {code}"
        self._say(f"{companion.prefix}{how}; it is not restarted.")

    def _say(self, text: str) -> None:
        with self._lock:
            self.write_err(text)

    def stop(self) -> None:
        """``SIGTERM`` to every group, ``SIGKILL`` to what is left after
        ``STOP_TIMEOUT``; a second Ctrl-C skips the wait."""
        self._stopping = True
        try:
            for companion in self.running:
                _signal_group(companion.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            for companion in self.running:
                with contextlib.suppress(subprocess.TimeoutExpired):  # killed below
                    companion.process.wait(max(0.0, deadline - time.monotonic()))
        except KeyboardInterrupt:
            pass  # stop waiting: kill now
        finally:
            for companion in self.running:
                # Also what a command left behind in its group.
                _signal_group(companion.process.pid, signal.SIGKILL)
            if self._keepalive is not None:
                os.close(self._keepalive)
                self._keepalive = None
            for companion in self.running:
                for thread in companion.threads:
                    thread.join(READER_JOIN_TIMEOUT)
                companion.process.wait()


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # nobody left
        os.killpg(pgid, signum)


# --- the guard ------------------------------------------------------------------


def _guard(argv: list[str]) -> int:
    """Run ``argv`` in this process's group; end the group when standard input
    closes. Exits as the command did."""
    # The supervisor's SIGTERM to the group is for the command; the guard waits
    # for the command and exits as it did. A handler, not SIG_IGN: the command
    # starts with the default disposition, as exec resets handlers.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        command = subprocess.Popen(argv)
    except OSError as error:
        sys.stderr.write(f"cannot start: {error}\n")
        return 127
    threading.Thread(target=_end_group_at_eof, args=(command,), daemon=True).start()
    code = command.wait()
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def _end_group_at_eof(command: subprocess.Popen[bytes]) -> None:
    """Nothing is ever written to standard input: reading returns at end of
    file, when the supervisor has gone."""
    while os.read(0, 4096):
        pass
    os.killpg(0, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):  # killed below
        command.wait(STOP_TIMEOUT)
    os.killpg(0, signal.SIGKILL)  # the guard too: nobody waits for it now


if __name__ == "__main__":
    sys.exit(_guard(sys.argv[1:]))

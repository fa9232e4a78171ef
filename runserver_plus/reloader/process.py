"""A worker process, or a warm one waiting to become it, as the supervisor sees it."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

from django.utils import autoreload

from runserver_plus.reloader.control import (
    WORKER_ENV,
    Channel,
    Command,
    Received,
    worker_marker,
)

#: Time a stopped worker gets beyond the drain bound before it is killed.
KILL_GRACE = 1.0  # s
#: How long the exit of a worker may wait for its messages to be read.
READER_DRAIN = 1.0  # s
#: The tail of a worker's stderr kept for the error page.
STDERR_TAIL = 64 * 1024  # bytes
#: What Django's reloader thread prints when ``django.setup()`` failed and
#: Django's core runserver runs in the worker instead of ours.
_DJANGO_THREAD_FAILURE = b"Exception in thread django-main-thread"


@dataclasses.dataclass(frozen=True)
class WorkerMessage:
    """A message a worker sent on its control channel."""

    worker: WorkerProcess
    message: Received


@dataclasses.dataclass(frozen=True)
class WorkerExited:
    worker: WorkerProcess
    code: int


@dataclasses.dataclass(frozen=True)
class FallbackFailed:
    """Django's own runserver took over inside the worker after
    ``django.setup()`` failed; it printed the error and now waits."""

    worker: WorkerProcess


ProcessEvent = WorkerMessage | WorkerExited | FallbackFailed


def _started_unbuffered() -> bool:
    """Whether the interpreter got ``-u`` (alone or in a cluster like ``-uB``)."""
    for arg in getattr(sys, "orig_argv", ())[1:]:
        if not arg.startswith("-") or arg.startswith("--"):
            return False  # the script or module: interpreter options are over
        if arg[1:].isalpha() and "u" in arg[1:]:
            return True
    return False


class WorkerProcess:
    """One worker: the same command line again, on the inherited socket.

    Given ``command``, the process starts warm instead (see ``warm.py``): it
    preloads what it is sent and becomes the worker on ``go()``. Its state
    goes ``warm`` -> ``starting`` -> ``ready`` -> ``stopping``; a cold one
    begins at ``starting``.
    """

    def __init__(
        self,
        listen: socket.socket,
        post: Callable[[ProcessEvent], None],
        generation: int,
        command: Sequence[str] | None = None,
    ) -> None:
        self.generation = generation
        self.warm = command is not None
        self.state = "warm" if self.warm else "starting"
        self.went = False  # a warm process confirmed that it became the worker
        self.preloaded = 0  # modules a warm process said it had preloaded
        self._post = post
        ours, theirs = socket.socketpair()
        self.channel = Channel(ours)
        env = {
            **os.environ,
            autoreload.DJANGO_AUTORELOAD_ENV: "true",
            WORKER_ENV: worker_marker(listen.fileno(), theirs.fileno()),
        }
        if _started_unbuffered():
            env.setdefault("PYTHONUNBUFFERED", "1")  # -u is not in the child's args
        self._stderr_tail = bytearray()
        self._fallback_seen = False
        try:
            self.process = subprocess.Popen(
                list(command or autoreload.get_child_arguments()),
                env=env,
                pass_fds=(listen.fileno(), theirs.fileno()),
                stderr=subprocess.PIPE,
            )
        finally:
            theirs.close()
        self.started = time.monotonic()
        self._reader = threading.Thread(
            target=self._read_messages, name="runserver_plus-worker-messages"
        )
        for thread in (
            self._reader,
            threading.Thread(
                target=self._tee_stderr, name="runserver_plus-worker-stderr"
            ),
            threading.Thread(target=self._wait, name="runserver_plus-worker-wait"),
        ):
            thread.daemon = True
            thread.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stderr_tail(self) -> str:
        return self._stderr_tail.decode("utf-8", "replace")

    def _read_messages(self) -> None:
        for message in self.channel:
            self._post(WorkerMessage(self, message))

    def _tee_stderr(self) -> None:
        """Pass the worker's stderr through, keeping its tail for the error page."""
        stream = self.process.stderr
        assert stream is not None
        out = getattr(sys.stderr, "buffer", None)
        while chunk := os.read(stream.fileno(), 65536):
            if out is not None:
                out.write(chunk)
                out.flush()
            else:
                sys.stderr.write(chunk.decode("utf-8", "replace"))
            self._stderr_tail += chunk
            del self._stderr_tail[:-STDERR_TAIL]
            if (
                self.state == "starting"
                and not self._fallback_seen
                and _DJANGO_THREAD_FAILURE in self._stderr_tail
            ):
                self._fallback_seen = True
                self._post(FallbackFailed(self))
        stream.close()

    def _wait(self) -> None:
        code = self.process.wait()
        # Its last messages (a warm process's "went", say) come before its exit.
        self._reader.join(READER_DRAIN)
        self._post(WorkerExited(self, code))

    def send(self, message: Command) -> None:
        self.channel.send(message)

    def go(self, generation: int) -> bool:
        """Make a warm process the worker ``generation``; False when it is gone."""
        assert self.state == "warm"
        self.generation = generation
        self.state = "starting"
        # The error page shows what the worker printed, not the preloading.
        self._stderr_tail.clear()
        self.started = time.monotonic()
        return self.process.poll() is None and self.channel.send({"command": "go"})

    def stop(self, drain_timeout: float) -> None:
        """Ask for a drained stop; kill if it takes longer than the bound."""
        if self.state == "stopping":
            return
        self.state = "stopping"
        if not self.channel.send({"command": "stop"}):
            self.process.terminate()
        timer = threading.Timer(drain_timeout + KILL_GRACE, self.kill)
        timer.daemon = True
        timer.start()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()

    def close(self) -> None:
        self.channel.close()

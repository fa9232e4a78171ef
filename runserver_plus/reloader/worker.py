"""The worker side of the reloader: serve the inherited socket, obey the supervisor."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.utils import autoreload

from runserver_plus import runner
from runserver_plus.reloader.control import Channel
from runserver_plus.server import adopt_socket

if TYPE_CHECKING:
    from runserver_plus.config import ServerConfig
    from runserver_plus.runner import Host

#: How long a worker whose supervisor vanished may drain before it exits.
ORPHAN_DRAIN = 1.0  # s
#: How often the worker reports modules imported since the last report.
MODULE_REPORT_INTERVAL = 2.0  # s


class WorkerReloader(autoreload.BaseReloader):
    """The ``sender`` of Django's ``autoreload_started`` and ``file_changed``.

    Receivers call ``watch_dir()`` on it (templates, translations, third-party
    apps); the supervisor, which does the watching, is told about each call.
    """

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self.channel = channel

    def watch_dir(self, path: str | os.PathLike[str], glob: str) -> None:
        super().watch_dir(path, glob)
        self.channel.send(
            {"event": "watch_dir", "path": str(Path(path).absolute()), "glob": glob}
        )

    def watched_module_files(self) -> set[str]:
        return {str(p) for p in autoreload.iter_all_python_module_files()}


class _ModuleReporter:
    """Tells the supervisor about module files imported after start-up (views
    imported on the first request, say), so their directories are watched."""

    def __init__(self, reloader: WorkerReloader, stop: threading.Event) -> None:
        self.reloader = reloader
        self.stop = stop
        self.reported: set[str] = set()

    def report(self) -> None:
        files = self.reloader.watched_module_files()
        new = files - self.reported
        if new:
            self.reported |= new
            self.reloader.channel.send({"event": "modules", "files": sorted(new)})

    def run(self) -> None:
        while not self.stop.wait(MODULE_REPORT_INTERVAL):
            self.report()


def run_worker(
    config: ServerConfig, host: Host, listen_fd: int, control_fd: int
) -> None:
    """Start the project, report ready, serve until the supervisor says stop."""
    channel = Channel(adopt_socket(control_fd))
    listen = adopt_socket(listen_fd)
    reloader = WorkerReloader(channel)
    stop = threading.Event()
    orphaned = threading.Event()
    # The channel is obeyed from the start: a stop (or the supervisor's
    # death) while the project loads must not be missed.
    threading.Thread(
        target=_obey,
        args=(channel, reloader, stop, orphaned),
        name="runserver_plus-control",
        daemon=True,
    ).start()
    try:
        with runner.stop_signals(stop):
            # An exception django.setup() swallowed for runserver is raised
            # here, as Django's inner_run does; the supervisor shows it.
            autoreload.raise_last_exception()
            app = host.load_application()
            if stop.is_set():
                return
            autoreload.autoreload_started.send(sender=reloader)
            host.announce(listen.getsockname()[1])
            reporter = _ModuleReporter(reloader, stop)
            reporter.report()
            channel.send({"event": "ready"})
            threading.Thread(
                target=reporter.run, name="runserver_plus-modules", daemon=True
            ).start()
            runner.serve(
                listen,
                app,
                config,
                host,
                stop=stop,
                drain_timeout=lambda: (
                    ORPHAN_DRAIN if orphaned.is_set() else config.drain_timeout
                ),
            )
    except KeyboardInterrupt:
        pass  # a second Ctrl-C: the supervisor is stopping too
    finally:
        stop.set()
        listen.close()
        channel.close()


def _obey(
    channel: Channel,
    reloader: WorkerReloader,
    stop: threading.Event,
    orphaned: threading.Event,
) -> None:
    """Handle the supervisor's messages; its disappearance stops the worker."""
    for message in channel:
        command = message.get("command")
        if command == "stop":
            break
        if command == "offer":
            claimed = _offer(reloader, message)
            channel.send(
                {"event": "offer_result", "id": message.get("id"), "claimed": claimed}
            )
    else:
        orphaned.set()  # the channel closed: the supervisor is gone
    stop.set()


def _offer(reloader: WorkerReloader, message: dict[str, Any]) -> bool:
    """Send Django's ``file_changed`` for each path; True if every one was claimed
    (template and translation reloaders claim theirs, so nothing restarts)."""
    claimed_all = True
    for path in message.get("paths", []):
        results = autoreload.file_changed.send(sender=reloader, file_path=Path(path))
        if not any(result for _, result in results):
            claimed_all = False
    return claimed_all

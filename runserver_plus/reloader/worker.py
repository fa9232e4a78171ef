"""The worker side of the reloader: serve the inherited socket, obey the supervisor."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from django.core.signals import request_finished
from django.utils import autoreload

from runserver_plus import shutdown
from runserver_plus.livereload.middleware import Hub, LiveReloadApp
from runserver_plus.reloader import procstate
from runserver_plus.reloader.control import Channel, channel_for
from runserver_plus.reloader.preload import preloadable
from runserver_plus.server import lifecycle
from runserver_plus.server.sockets import adopt_socket

if TYPE_CHECKING:
    from runserver_plus.config import Host, ServerConfig
    from runserver_plus.server.asgi_scope import ASGIApp
    from runserver_plus.server.wsgi import WSGIApp

#: How long a worker whose supervisor vanished may drain before it exits.
ORPHAN_DRAIN = 1.0  # s
#: How long a ready worker waits for the supervisor to confirm its watches.
WATCHING_TIMEOUT = 5.0  # s
#: How long after serving begins the worker first reports its modules.
FIRST_REPORT_DELAY = 0.5  # s
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
    """Tells the supervisor which module files are imported, so that their
    directories (local packages outside the project) are watched too.

    Once when serving begins (not before: the scan takes tens of ms), then
    after requests, which is when views and their imports load, at most once
    per ``MODULE_REPORT_INTERVAL``. An idle worker does not wake up for it.
    """

    def __init__(
        self, reloader: WorkerReloader, stop: threading.Event, config: ServerConfig
    ) -> None:
        self.reloader = reloader
        self.stop = stop
        self.requested = threading.Event()
        self.reported: set[str] = set()
        self.preload_seen: set[str] = set()
        self.roots = (config.project_dir, *config.extra_watch_dirs)
        self.preload = config.preload

    def request_seen(self, **kwargs: Any) -> None:
        """A ``request_finished`` receiver."""
        self.requested.set()

    def report(self) -> None:
        files = self.reloader.watched_module_files()
        new = files - self.reported
        if new:
            self.reported |= new
            self.reloader.channel.send({"event": "modules", "files": sorted(new)})
        if self.preload:
            self._report_preloadable()

    def _report_preloadable(self) -> None:
        """Tell the supervisor, in import order, the modules a warm process
        may import for the next worker (see ``warm.py``)."""
        # Only the modules imported since the last report are looked at:
        # judging one resolves its path.
        unseen = {
            name: module
            for name, module in list(sys.modules.items())
            if name not in self.preload_seen
        }
        self.preload_seen.update(unseen)
        new = preloadable(
            unseen,
            self.roots,
            settings_module=os.environ.get("DJANGO_SETTINGS_MODULE", ""),
        )
        if new:
            self.reloader.channel.send({"event": "preloadable", "modules": new})

    def run(self) -> None:
        request_finished.connect(self.request_seen, weak=False)
        try:
            # Not at once: the first requests after a restart (a browser
            # reloading) would share the CPU with the scan, and with the next
            # warm process, which the supervisor starts on this report.
            if self.stop.wait(FIRST_REPORT_DELAY):
                return
            self.report()
            while not self.stop.is_set():
                self.requested.wait()
                if self.stop.wait(MODULE_REPORT_INTERVAL):
                    return
                self.requested.clear()
                self.report()
        finally:
            request_finished.disconnect(self.request_seen)


def _with_livereload(
    app: WSGIApp | ASGIApp, hub: Hub, *, asgi: bool
) -> WSGIApp | ASGIApp:
    """The application behind live reload's layer, for its interface."""
    if asgi:
        from runserver_plus.livereload.asgi import AsgiLiveReload  # noqa: PLC0415

        return AsgiLiveReload(cast("ASGIApp", app), hub)
    return LiveReloadApp(cast("WSGIApp", app), hub)


def run_worker(
    config: ServerConfig, host: Host, listen_fd: int, control_fd: int
) -> None:
    """Start the project, report ready, serve until the supervisor says stop."""
    Worker(config, host, listen_fd, control_fd).run()


class Worker:
    """One worker process's life: load, report ready, serve, obey the channel."""

    def __init__(
        self, config: ServerConfig, host: Host, listen_fd: int, control_fd: int
    ) -> None:
        self.config = config
        self.host = host
        self.channel = channel_for(control_fd)
        self.listen = adopt_socket(listen_fd)
        self.reloader = WorkerReloader(self.channel)
        self.stop = threading.Event()
        self.orphaned = threading.Event()
        self.watching = threading.Event()  # the supervisor acknowledged "ready"
        self.hub = Hub() if config.livereload else None
        self.static_dirs = tuple(Path(d) for d in config.static_dirs)

    def run(self) -> None:
        # The channel is obeyed from the start: a stop (or the supervisor's
        # death) while the project loads must not be missed.
        threading.Thread(
            target=self._obey, name="runserver_plus-control", daemon=True
        ).start()
        try:
            with shutdown.stop_signals():
                self._start_and_serve()
        except shutdown.StopRequested:
            pass  # stopped while loading: nothing to drain
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: the supervisor is stopping too
        finally:
            self.stop.set()
            self.listen.close()
            self.channel.close()

    def _start_and_serve(self) -> None:
        # An exception django.setup() swallowed for runserver is raised here,
        # as Django's inner_run does; the supervisor shows it.
        autoreload.raise_last_exception()
        app: WSGIApp | ASGIApp = self.host.load_application()
        if self.stop.is_set():
            return
        if self.hub is not None:
            app = _with_livereload(app, self.hub, asgi=self.config.asgi)
            for directory in self.static_dirs:
                self.reloader.watch_dir(directory, "**/*")
        autoreload.autoreload_started.send(sender=self.reloader)
        # Serve only once the supervisor watches what the receivers asked
        # for: a file saved after the first answer is then never missed.
        self.channel.send({"event": "ready"})
        self.watching.wait(WATCHING_TIMEOUT)
        if self.stop.is_set():
            return
        self.host.announce(self.listen.getsockname()[1])
        self.channel.send({"event": "serving"})
        procstate.thaw()
        reporter = _ModuleReporter(self.reloader, self.stop, self.config)
        threading.Thread(
            target=reporter.run, name="runserver_plus-modules", daemon=True
        ).start()
        server = lifecycle.make_server(
            self.listen,
            app,
            self.config,
            on_thread_exit=self.host.close_thread_resources,
        )
        try:
            lifecycle.run(server, self.stop, self._drain_timeout)
        finally:
            if self.config.shutdown_message:
                self.host.write_out(self.config.shutdown_message)

    def _drain_timeout(self) -> float:
        """Called when the stop comes: end event streams first, so they never
        hold up the drain; an orphan drains briefly."""
        if self.hub is not None:
            self.hub.close()
        return ORPHAN_DRAIN if self.orphaned.is_set() else self.config.drain_timeout

    def _obey(self) -> None:
        """Handle the supervisor's messages; its disappearance stops the worker."""
        for message in self.channel:
            match message:
                case {"command": "stop"}:
                    break
                case {"command": "watching"}:
                    self.watching.set()
                case {"command": "offer", "id": int(offer_id), "paths": [*paths]}:
                    unclaimed = self._offer([str(p) for p in paths])
                    self.channel.send(
                        {
                            "event": "offer_result",
                            "id": offer_id,
                            "claimed": not unclaimed,
                            "unclaimed": unclaimed,
                        }
                    )
        else:
            self.orphaned.set()  # the channel closed: the supervisor is gone
        self.stop.set()
        self.watching.set()  # nothing more to wait for

    def _offer(self, paths: list[str]) -> list[str]:
        """Send Django's ``file_changed`` for each path; return those nobody
        claimed (template and translation reloaders claim theirs, so nothing
        restarts). With live reload, static files are ours to claim."""
        unclaimed: list[str] = []
        static: list[str] = []
        reload_pages = False
        for path in paths:
            if self.hub is not None and self._is_static(path):
                static.append(path)
                continue
            results = autoreload.file_changed.send(
                sender=self.reloader, file_path=Path(path)
            )
            if any(result for _, result in results):
                reload_pages = True
            else:
                unclaimed.append(path)
        if self.hub is not None and not unclaimed and (static or reload_pages):
            # One message per batch: a stylesheet swap only when nothing but
            # stylesheets (and their source maps) changed.
            css_only = not reload_pages and all(
                p.endswith((".css", ".css.map")) for p in static
            )
            self.hub.broadcast({"type": "css" if css_only else "reload"})
        return unclaimed

    def _is_static(self, path: str) -> bool:
        file = Path(path)
        return any(d == file or d in file.parents for d in self.static_dirs)

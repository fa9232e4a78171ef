"""The runserver command: Django's own, handing the serving to runserver_plus."""

from __future__ import annotations

import os
import shlex
import sys
from typing import TYPE_CHECKING, Any, TextIO, cast
from urllib.parse import urlparse

from django.conf import settings
from django.contrib.staticfiles.management.commands import runserver as staticfiles
from django.core.management.base import CommandError, CommandParser, OutputWrapper
from django.core.management.commands import runserver as core
from django.db import connections

from runserver_plus import _compat, asgi_mode, banner, runner
from runserver_plus.config import DEFAULT_SQL_REPEAT_THRESHOLD, MAX_PORT, ServerConfig

if TYPE_CHECKING:
    from runserver_plus.server.asgi_scope import ASGIApp
    from runserver_plus.server.wsgi import WSGIApp


class _FlushingOutput(OutputWrapper):
    """Django's output wrapper, flushed on every write so the banner shows at
    once in CI logs and ``docker logs`` (Django's is block-buffered there)."""

    def write(  # type: ignore[override]  # OutputWrapper's own signature
        self, msg: str = "", style_func: Any = None, ending: str | None = None
    ) -> None:
        super().write(msg, style_func, ending)
        self.flush()


class _AsgiBannerOutput(_FlushingOutput):
    """Django's banner, naming the ASGI server in Django's words."""

    def write(  # type: ignore[override]  # OutputWrapper's own signature
        self, msg: str = "", style_func: Any = None, ending: str | None = None
    ) -> None:
        super().write(asgi_mode.asgi_banner(msg), style_func, ending)


def _flushing(wrapper: OutputWrapper) -> OutputWrapper:
    flushing = _FlushingOutput(cast(TextIO, wrapper._out), wrapper.ending)
    flushing.style_func = wrapper.style_func
    return flushing


class RunserverPlusMixin:
    """Overrides the hooks of Django's runserver command; parsing, messages,
    checks and the banner stay Django's own."""

    options: dict[str, Any]

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)  # type: ignore[misc]
        group = parser.add_argument_group("runserver_plus reloader")
        group.add_argument(
            "--watch-dir",
            action="append",
            default=[],
            dest="watch_dirs",
            metavar="DIR",
            help="Also watch DIR (repeatable); a .py change there restarts.",
        )
        group.add_argument(
            "--watch-include",
            action="append",
            default=[],
            metavar="GLOB",
            help="Also restart when a file matching GLOB changes, e.g. '*.env' "
            "or 'config/**/*.toml' (repeatable).",
        )
        group.add_argument(
            "--watch-exclude",
            action="append",
            default=[],
            metavar="GLOB",
            help="Never react to files matching GLOB (repeatable).",
        )
        group.add_argument(
            "--livereload",
            action="store_true",
            help="Reload browser tabs when code or templates change and swap "
            "stylesheets in place when CSS changes (needs DEBUG and the reloader).",
        )
        group.add_argument(
            "--no-preload",
            action="store_false",
            dest="preload",
            help="Start every worker cold, instead of from a warm process that "
            "has imported the installed packages ahead of the change.",
        )
        group.add_argument(
            "--watch-poll",
            action="store_true",
            help="Poll for changes instead of OS events (network, container mounts).",
        )
        group.add_argument(
            "--run",
            action="append",
            default=[],
            dest="run_commands",
            metavar="CMD",
            help="Start CMD (split as a shell would, run without one) once the "
            "server serves, keep it across reloads and stop it with the server; "
            "its output is prefixed (repeatable).",
        )
        interface = parser.add_argument_group("runserver_plus ASGI")
        choice = interface.add_mutually_exclusive_group()
        choice.add_argument(
            "--asgi",
            action="store_true",
            help="Serve the ASGI application (ASGI_APPLICATION, or Django's "
            "ASGI handler); the default when ASGI_APPLICATION is set.",
        )
        choice.add_argument(
            "--wsgi",
            action="store_true",
            help="Serve the WSGI application even when ASGI_APPLICATION is set.",
        )
        sql = parser.add_argument_group("runserver_plus SQL")
        sql.add_argument(
            "--print-sql",
            action="store_true",
            help="Add each request's SQL query count and time to its log line; "
            "with -v 2, print each query after it.",
        )

    def run(self, **options: Any) -> None:
        command: Any = self
        command.stdout = _flushing(command.stdout)
        command.stderr = _flushing(command.stderr)
        self.options = options
        self.hand_off(self.build_config(options))

    def hand_off(self, config: ServerConfig) -> None:
        """Serve with ``config``: the one seam between the command and the rest."""
        runner.run(config, self)

    def build_config(self, options: dict[str, Any]) -> ServerConfig:
        """Turn Django's parsed ``addrport`` and the options into our config."""
        command: Any = self
        port = int(command.port)
        if port > MAX_PORT:
            raise CommandError(
                f'"{options["addrport"]}" is not a valid port number or '
                f"address:port pair: the port must be between 0 and {MAX_PORT}."
            )
        addr = command.addr
        if command._raw_ipv6:
            display = f"[{addr}]"
        elif addr == "0":
            display = "0.0.0.0"
        else:
            display = addr
        print_sql = bool(
            options.get("print_sql")
            or getattr(settings, "RUNSERVER_PLUS_PRINT_SQL", False)
        )
        return ServerConfig(
            addr=addr,
            port=port,
            use_ipv6=command.use_ipv6,
            display_addr=display,
            use_threading=options["use_threading"],
            asgi=asgi_mode.wants_asgi(options),
            websocket_max_message=asgi_mode.websocket_max_message(),
            use_reloader=options["use_reloader"],
            debug=settings.DEBUG,
            shutdown_message=options.get("shutdown_message", ""),
            project_dir=_project_dir(),
            ignored_paths=_ignored_paths(),
            extra_watch_dirs=tuple(
                os.path.abspath(d)
                for d in (*_setting("WATCH_DIRS"), *options.get("watch_dirs", ()))
            ),
            watch_include=(
                *_setting("WATCH_INCLUDE"),
                *options.get("watch_include", ()),
            ),
            watch_exclude=(
                *_setting("WATCH_EXCLUDE"),
                *options.get("watch_exclude", ()),
            ),
            force_polling=bool(
                options.get("watch_poll")
                or getattr(settings, "RUNSERVER_PLUS_WATCH_POLL", False)
            ),
            preload=bool(
                options.get("preload", True)
                and getattr(settings, "RUNSERVER_PLUS_PRELOAD", True)
            ),
            verbosity=int(options.get("verbosity", 1)),
            livereload=self._livereload(options),
            static_dirs=_static_dirs(),
            print_sql=print_sql,
            print_sql_queries=print_sql and int(options.get("verbosity", 1)) >= 2,
            sql_repeat_threshold=_sql_repeat_threshold(),
            run_commands=_run_commands(options),
            colour=command.style.ERROR("x") != "x",
        )

    def _livereload(self, options: dict[str, Any]) -> bool:
        """On with ``--livereload`` or the setting, only with DEBUG and the reloader."""
        asked = bool(options.get("livereload"))
        if asked and not options["use_reloader"]:
            raise CommandError(
                "--livereload needs the reloader; it cannot be used with --noreload."
            )
        wanted = asked or bool(getattr(settings, "RUNSERVER_PLUS_LIVERELOAD", False))
        return wanted and bool(settings.DEBUG) and options["use_reloader"]

    # --- the runner's Host interface -------------------------------------

    def load_application(self) -> WSGIApp | ASGIApp:
        """What Django's ``inner_run`` does before it binds: the system checks,
        the migration check, then the handler."""
        command: Any = self
        options = self.options
        if not options["skip_checks"]:
            command.stdout.write("Performing system checks...\n\n")
            command.check(**_compat.system_check_kwargs(command, options))
        command.check_migrations()
        for connection in connections.all(initialized_only=True):
            connection.close()
        if self.build_config(options).asgi:
            return self.get_asgi_handler(**options)
        handler: WSGIApp = command.get_handler(**options)
        return handler

    def get_asgi_handler(self, **options: Any) -> ASGIApp:
        """The ASGI application, with static files in front as ``get_handler``
        puts them in front of the WSGI one."""
        handler = asgi_mode.load_asgi_application()
        static_path = _static_path(options)
        if static_path is None:
            return handler
        from runserver_plus.static_asgi import AsgiStaticFiles  # noqa: PLC0415

        return AsgiStaticFiles(handler, static_path)

    def get_handler(self, *args: Any, **options: Any) -> WSGIApp:
        handler: WSGIApp = core.Command.get_handler(self, *args, **options)  # type: ignore[arg-type]
        handler = self._with_query_log(handler, options)
        static_path = _static_path(options)
        if static_path is None:
            return handler
        from runserver_plus.static import StaticFilesApp  # noqa: PLC0415 - worker only

        return StaticFilesApp(handler, static_path)

    def _with_query_log(self, handler: WSGIApp, options: dict[str, Any]) -> WSGIApp:
        """Django's handler behind ``--print-sql``'s layer, when asked for:
        without it, no execute wrapper is ever installed."""
        config = self.build_config(options)
        if not config.print_sql:
            return handler
        from runserver_plus.queries import QueryLogApp  # noqa: PLC0415 - worker only

        return QueryLogApp(handler, config)

    def announce(self, port: int) -> None:
        command: Any = self
        config: ServerConfig = self.build_config(self.options)
        if config.asgi:
            stdout = command.stdout
            command.stdout = _AsgiBannerOutput(stdout._out, stdout.ending)
            command.stdout.style_func = stdout.style_func
            try:
                command.on_bind(port)
            finally:
                command.stdout = stdout
        else:
            command.on_bind(port)
        if config.is_wildcard:
            command.stdout.write(banner.wildcard_banner(config.use_ipv6, port))
            command.stdout.write(command.style.WARNING(banner.WILDCARD_WARNING))

    def write_out(self, text: str) -> None:
        command: Any = self
        command.stdout.write(text)

    def write_err(self, text: str) -> None:
        command: Any = self
        command.stderr.write(text)

    def close_thread_resources(self) -> None:
        connections.close_all()


def _static_path(options: dict[str, Any]) -> str | None:
    """The path static files are served under, or None when Django's rule
    says not to serve them (``--nostatic``, no DEBUG without ``--insecure``,
    staticfiles not installed, a STATIC_URL on another host)."""
    if not options.get("use_static_handler", False):
        return None
    if not (settings.DEBUG or options["insecure_serving"]):
        return None
    from django.contrib.staticfiles.utils import check_settings  # noqa: PLC0415

    check_settings()
    static_url = urlparse(settings.STATIC_URL)
    if static_url.netloc:
        return None  # a CDN URL: nothing local to serve, as Django
    return static_url.path


def _setting(name: str) -> tuple[str, ...]:
    """A list setting ``RUNSERVER_PLUS_<name>`` (empty when unset)."""
    return tuple(str(v) for v in getattr(settings, f"RUNSERVER_PLUS_{name}", ()))


def _run_commands(options: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
    """``--run`` and ``RUNSERVER_PLUS_RUN``, each split as a shell would.

    The supervisor runs them, so ``--run`` with ``--noreload`` is an error;
    the setting is left out there, as ``testserver`` and CI runs want.
    """
    asked = tuple(options.get("run_commands", ()))
    if asked and not options["use_reloader"]:
        raise CommandError(
            "--run needs the reloader: its commands are started and stopped by "
            "the supervisor process, which --noreload leaves out."
        )
    if not options["use_reloader"]:
        return ()
    commands = []
    for text in (*_setting("RUN"), *asked):
        try:
            argv = tuple(shlex.split(text))
        except ValueError as error:
            raise CommandError(f'--run "{text}": {error}.') from None
        if not argv:
            raise CommandError("--run needs a command; it got an empty one.")
        commands.append(argv)
    return tuple(commands)


def _sql_repeat_threshold() -> int:
    """``RUNSERVER_PLUS_SQL_REPEAT_THRESHOLD``, checked: a bad value is a
    one-line error, not a traceback in every request."""
    threshold = getattr(
        settings, "RUNSERVER_PLUS_SQL_REPEAT_THRESHOLD", DEFAULT_SQL_REPEAT_THRESHOLD
    )
    valid = isinstance(threshold, int) and not isinstance(threshold, bool)
    if not valid or threshold < 0 or threshold == 1:
        raise CommandError(
            "RUNSERVER_PLUS_SQL_REPEAT_THRESHOLD must be a whole number of 2 or "
            f"more, or 0 for no warning; it is {threshold!r}."
        )
    return threshold


def _project_dir() -> str:
    """The directory of ``manage.py`` (or the working directory for ``-m django``)."""
    script = sys.argv[0] if sys.argv else ""
    if script.endswith(".py") and os.path.isfile(script):
        return os.path.dirname(os.path.abspath(script))
    return os.getcwd()


def _ignored_paths() -> tuple[str, ...]:
    return ignored_paths(
        getattr(settings, "MEDIA_ROOT", ""),
        getattr(settings, "STATIC_ROOT", ""),
        getattr(settings, "DATABASES", {}),
    )


def ignored_paths(
    media_root: object, static_root: object, databases: dict[str, dict[str, Any]]
) -> tuple[str, ...]:
    """Paths that change while the server runs without being source code."""
    paths = [media_root, static_root]
    for database in databases.values():
        if "sqlite" in str(database.get("ENGINE", "")):
            paths.append(database.get("NAME"))
    return tuple(os.path.abspath(str(p)) for p in paths if p and str(p) != ":memory:")


# get_handler() may return our static wrapper, not only Django's WSGIHandler.
def _static_dirs() -> tuple[str, ...]:
    """The local directories the staticfiles finders serve from."""
    from django.apps import apps  # noqa: PLC0415

    if not apps.is_installed("django.contrib.staticfiles"):
        return ()
    from django.contrib.staticfiles import finders  # noqa: PLC0415

    found: list[str] = []
    for finder in finders.get_finders():
        storages = getattr(finder, "storages", {})
        for storage in storages.values():
            location = getattr(storage, "location", None)
            if location and os.path.isdir(location):
                found.append(os.path.abspath(location))
    return tuple(dict.fromkeys(found))


class CoreCommand(RunserverPlusMixin, core.Command):  # type: ignore[misc]
    """runserver_plus when ``django.contrib.staticfiles`` is not installed."""


class StaticfilesCommand(RunserverPlusMixin, staticfiles.Command):  # type: ignore[misc]
    """runserver_plus with staticfiles' ``--nostatic`` and ``--insecure``."""


def __getattr__(name: str) -> type:
    # Django loads ``Command`` after the app registry is ready; choosing the
    # base then (not at import) keeps the import free of settings access.
    if name == "Command":
        from django.apps import apps  # noqa: PLC0415

        if apps.is_installed("django.contrib.staticfiles"):
            return StaticfilesCommand
        return CoreCommand
    raise AttributeError(name)

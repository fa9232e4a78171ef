"""The runserver command: Django's own, handing the serving to runserver_plus."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.staticfiles.management.commands import runserver as staticfiles
from django.core.management.base import CommandError, CommandParser
from django.core.management.commands import runserver as core
from django.db import connections

from runserver_plus import _compat, asgi_mode, banner, https, project, runner
from runserver_plus.config import MAX_PORT, ServerConfig

if TYPE_CHECKING:
    from runserver_plus.server.asgi_scope import ASGIApp
    from runserver_plus.server.wsgi import WSGIApp
    from runserver_plus.tls.files import TLSFiles


class RunserverPlusMixin:
    """Overrides the hooks of Django's runserver command; parsing, messages,
    checks and the banner stay Django's own."""

    options: dict[str, Any]
    #: What build_config() chose to serve over TLS, for announce().
    _tls_files: TLSFiles | None = None
    #: Prints the banner's trust line, after the rest of the banner.
    trust_reported: threading.Thread | None = None

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
        tls = parser.add_argument_group("runserver_plus HTTPS")
        tls.add_argument(
            "--https",
            action="store_true",
            help="Serve HTTPS on the port (plain HTTP there is redirected), with a "
            "certificate from a local certificate authority unless --cert-file.",
        )
        tls.add_argument(
            "--cert-file",
            metavar="FILE",
            help="Serve HTTPS with this PEM certificate (chain) instead.",
        )
        tls.add_argument(
            "--key-file",
            metavar="FILE",
            help="The PEM key of --cert-file, when it is not in that file.",
        )
        tls.add_argument(
            "--trust",
            action="store_true",
            help="Print where the local certificate authority is and how to trust "
            "it on this platform, then exit.",
        )
        tls.add_argument(
            "--install",
            action="store_true",
            help="With --trust, on Linux: perform those steps (system store, "
            "Chromium's and Firefox's NSS databases) with the tools present.",
        )

    def run(self, **options: Any) -> None:
        command: Any = self
        command.stdout = banner.flushing(command.stdout)
        command.stderr = banner.flushing(command.stderr)
        self.options = options
        if options.get("trust") or options.get("install"):
            https.trust(options, self.write_out)
            return
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
        tls = self._tls_files = https.tls_files(options, addr, ipv6=command.use_ipv6)
        asgi = asgi_mode.wants_asgi(options)
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
            asgi=asgi,
            websocket_max_message=asgi_mode.websocket_max_message(),
            use_reloader=options["use_reloader"],
            debug=settings.DEBUG,
            shutdown_message=options.get("shutdown_message", ""),
            project_dir=project.project_dir(),
            ignored_paths=project.settings_ignored_paths(),
            extra_watch_dirs=tuple(
                os.path.abspath(d)
                for d in (
                    *project.list_setting("WATCH_DIRS"),
                    *options.get("watch_dirs", ()),
                )
            ),
            watch_include=(
                *project.list_setting("WATCH_INCLUDE"),
                *options.get("watch_include", ()),
            ),
            watch_exclude=(
                *project.list_setting("WATCH_EXCLUDE"),
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
            drain_timeout=project.drain_timeout(),
            static_dirs=project.static_dirs(),
            https=tls is not None,
            tls_cert=tls.cert_file if tls else "",
            tls_key=tls.key_file if tls else "",
            tls_ca=tls.ca_file if tls else "",
            print_sql=print_sql,
            print_sql_queries=print_sql and int(options.get("verbosity", 1)) >= 2,
            sql_repeat_threshold=project.sql_repeat_threshold(),
            run_commands=project.run_commands(options),
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
        handler = asgi_mode.with_query_log(handler, self.build_config(options))
        static_path = project.static_path(options)
        if static_path is None:
            return handler
        from runserver_plus.static_asgi import AsgiStaticFiles  # noqa: PLC0415

        return AsgiStaticFiles(handler, static_path)

    def get_handler(self, *args: Any, **options: Any) -> WSGIApp:
        handler: WSGIApp = core.Command.get_handler(self, *args, **options)  # type: ignore[arg-type]
        handler = self._with_query_log(handler, options)
        static_path = project.static_path(options)
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
        command.protocol = config.scheme  # Django's on_bind() prints it
        if config.asgi:
            asgi_mode.on_bind(command, port)  # the banner names the ASGI server
        else:
            command.on_bind(port)
        if config.is_wildcard:
            command.stdout.write(
                banner.wildcard_banner(config.use_ipv6, port, config.scheme)
            )
            command.stdout.write(command.style.WARNING(banner.WILDCARD_WARNING))
        if self._tls_files is not None:
            for warning in self._tls_files.warnings:
                command.stderr.write(command.style.WARNING(f"WARNING: {warning}"))
            # Loading the system's trust store takes tens of milliseconds: a
            # restart does not wait for it to serve.
            self.trust_reported = threading.Thread(
                target=self._report_trust,
                args=(config,),
                name="runserver_plus-trust",
                daemon=True,
            )
            self.trust_reported.start()

    def _report_trust(self, config: ServerConfig) -> None:
        from runserver_plus.tls.trust import looks_trusted  # noqa: PLC0415

        trusted = looks_trusted(config.tls_cert, config.tls_key)
        self.write_out(banner.trust_line(trusted=trusted, local_ca=config.tls_ca))

    def write_out(self, text: str) -> None:
        command: Any = self
        command.stdout.write(text)

    def write_err(self, text: str) -> None:
        command: Any = self
        command.stderr.write(text)

    def close_thread_resources(self) -> None:
        connections.close_all()


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
